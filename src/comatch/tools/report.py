"""The report of a run (plots and one HTML page) and the comparison of several runs.

A run's report is written to ``RUN_DIR/plots/*.png`` and ``RUN_DIR/report.html``:

* ``accuracy.png``: test accuracy of the raw and the EMA model against the step;
* ``losses.png``: ``L_x``, ``L_u`` and ``L_c`` against the step;
* ``pseudo_labels.png``: mask rate and pseudo-label accuracy, and pseudo-label graph edges;
* ``confusion.png``: the confusion matrix of the test set (EMA model);
* ``embedding.png``: a 2-D map (PCA or t-SNE) of the test set's projection embeddings.

``plots/series.json`` holds the curves exactly as plotted. A comparison overlays the curves of
several runs (``--out``, default ``FIRST_RUN/compare``).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from comatch import distributed
from comatch.data.loaders import eval_loader
from comatch.errors import UserError
from comatch.tools.evaluation import predict
from comatch.tools.inference import classification_metrics, load_model, run_test_set
from comatch.tools.quiet import quiet_libraries
from comatch.tools.plots import Panel, Series, draw_confusion, draw_embedding, draw_panels, embedding_2d
from comatch.tools.report_html import baseline_section, comparison_page, run_page
from comatch.training.monitor import parse_records
from comatch.tools.report_trust import trust_sections

MAP_NAMES = {"pca": "PCA", "tsne": "t-SNE"}
Line = tuple[str, str, str]  # (record kind, metrics.jsonl field, curve label)
Figures = dict[str, list[Panel]]

RUN_FIGURES: dict[str, list[tuple[str, str, tuple[float, float] | None, list[Line]]]] = {
    "accuracy": [("Test accuracy", "accuracy", (0.0, 1.0), [
        ("eval", "test_acc", "raw model"), ("eval", "test_acc_ema", "EMA model"),
        ("eval", "val_acc_ema", "EMA model, validation")])],
    "losses": [("Losses", "loss", None, [
        ("train", "loss_x", "L_x (labelled)"), ("train", "loss_u", "L_u (pseudo-label)"),
        ("train", "loss_c", "L_c (graph contrastive)")])],
    "pseudo_labels": [
        ("Pseudo-labels", "share of unlabelled samples", (0.0, 1.0), [
            ("train", "mask_rate", "mask rate (max q >= tau)"), ("train", "pseudo_label_acc", "pseudo-label accuracy"),
            ("train", "pseudo_label_acc_confident", "accuracy of the confident ones")]),
        ("Pseudo-label graph", "edges per sample", None, [("train", "graph_edges", "graph edges (W^q > 0)")])],
}

COMPARED: dict[str, list[tuple[str, str, tuple[float, float] | None, str, str]]] = {
    "accuracy": [("Test accuracy, EMA", "accuracy", (0.0, 1.0), "eval", "test_acc_ema"),
                 ("Test accuracy, raw", "accuracy", (0.0, 1.0), "eval", "test_acc")],
    "losses": [("L_x", "loss", None, "train", "loss_x"), ("L_u", "loss", None, "train", "loss_u"),
               ("L_c", "loss", None, "train", "loss_c")],
    "pseudo_labels": [("Mask rate", "share", (0.0, 1.0), "train", "mask_rate"),
                      ("Pseudo-label accuracy", "accuracy", (0.0, 1.0), "train", "pseudo_label_acc"),
                      ("Graph edges per sample", "edges", None, "train", "graph_edges")],
}


@dataclass
class Report:
    """What a report wrote. ``figures``: name -> PNG; ``panels``: name -> the plotted data."""

    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    panels: Figures = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None


def read_records(run_dir: Path, say: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/metrics.jsonl``; damaged lines are dropped with a warning.

    A run killed mid-write leaves a truncated last line, a power cut NUL bytes: the complete
    records are still plotted.

    Args:
        run_dir: the run directory.
        say: where the warning goes (default stderr).

    Raises:
        UserError: it is not a run directory.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no metrics.jsonl); give the --out of a `comatch train`")
    say = say or (lambda text: print(text, file=sys.stderr))
    records, dropped = parse_records(path.read_bytes())
    if dropped:
        say(f"comatch: warning: {path}: {dropped} damaged or incomplete line(s) left out (a run stopped mid-write)")
    if not records:
        say(f"comatch: warning: {path} holds no records yet; the report has no curves")
    return records


def series(records: Sequence[dict[str, Any]], kind: str, key: str) -> Series:
    """Steps and values of ``key`` in the records of ``kind`` (missing or null values: NaN)."""
    rows = [r for r in records if r.get("kind") == kind and key in r]
    return [int(r["step"]) for r in rows], [math.nan if r[key] is None else float(r[key]) for r in rows]


def _figures(specs: dict[str, list], curves_of: Callable[[tuple], dict[str, Series]]) -> Figures:
    """Panels by figure name from panel specs ``(title, ylabel, ylim, ...)``; ``curves_of(spec)``
    gives a panel's curves. Curves, panels and figures without data are left out."""
    figures: Figures = {}
    for name, panel_specs in specs.items():
        panels = []
        for spec in panel_specs:
            curves = {label: s for label, s in curves_of(spec).items() if s[0]}
            if curves:
                panels.append(Panel(spec[0], spec[1], curves, spec[2]))
        if panels:
            figures[name] = panels
    return figures


def run_panels(records: Sequence[dict[str, Any]]) -> Figures:
    """The curve panels of one run, by figure name."""
    return _figures(RUN_FIGURES, lambda spec: {label: series(records, kind, key) for kind, key, label in spec[3]})


def compare_panels(runs: dict[str, Sequence[dict[str, Any]]]) -> Figures:
    """One panel per compared field, one curve per run (by run label)."""
    return _figures(COMPARED, lambda spec: {label: series(records, spec[3], spec[4]) for label, records in runs.items()})


def _write_curves(figures: Figures, plots: Path, title: str) -> dict[str, Path]:
    plots.mkdir(parents=True, exist_ok=True)
    written = {name: draw_panels(panels, plots / f"{name}.png", title) for name, panels in figures.items()}
    data = {name: {p.title: {label: {"step": s, "value": v} for label, (s, v) in p.lines.items()} for p in panels}
            for name, panels in figures.items()}
    (plots / "series.json").write_text(json.dumps(data, indent=1) + "\n")
    return written


def _model_figures(
    run_dir: Path, plots: Path, device: str, embedding: str, say: Callable[[str], None], data: Any = None,
) -> tuple[dict[str, Path], dict[str, Any] | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """Confusion matrix and embedding map of the EMA model on the test set.

    Args:
        data: the run's :class:`~comatch.data.RunData` when the caller has it (the end of a
            run), so that the folders are not scanned again.

    Returns:
        ``(figure name -> PNG, test metrics, (test logits, labels))``; nothing (after a
        warning) when the checkpoint or the test data cannot be loaded.
    """
    try:
        loaded = load_model(run_dir, "ema", device)
        dataset = data.test if data is not None else run_test_set(loaded.config)
    except UserError as err:
        say(f"comatch: warning: no confusion matrix or embedding map: {err}")
        return {}, None, None
    logits, z, labels = predict(loaded.model, eval_loader(dataset, loaded.eval_view()), loaded.preprocess())
    metrics = classification_metrics(logits, labels, loaded.class_names)
    names = loaded.class_names
    figures = {"confusion": draw_confusion(metrics["confusion_matrix"], names, plots / "confusion.png",
                                           f"Test set, EMA model, step {loaded.step}: top-1 {metrics['top1']:.2%}")}
    points, rows = embedding_2d(z.numpy(), embedding)
    figures["embedding"] = draw_embedding(points, labels.numpy()[rows], names, plots / "embedding.png",
                                          f"Test embeddings z ({MAP_NAMES[embedding]}, {len(rows)} images)")
    return figures, metrics, (logits, labels)


@quiet_libraries()
def write_report(run_dir: str | Path, out: str | Path | None = None, device: str = "cpu",
                 embedding: str = "pca", say: Callable[[str], None] | None = None, data: Any = None) -> Report:
    """Write the plots and ``report.html`` of one run.

    Args:
        run_dir: the run directory.
        out: where to write (default ``run_dir``): ``out/plots/*.png`` and ``out/report.html``.
        device: where to run the model for the confusion matrix and the embedding map.
        embedding: ``"pca"`` or ``"tsne"``.
        say: where warnings go (default stderr).
        data: the run's :class:`~comatch.data.RunData` when the caller has it (the end of a
            run); else the folders are scanned again.

    Returns:
        The files written and the plotted data.

    Raises:
        UserError: ``run_dir`` is not a run directory.
    """
    from comatch.tools.calibration import read_calibration

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir
    say = say or (lambda text: print(text, file=sys.stderr))
    read_calibration(run_dir, say)  # a damaged calibration.json stops the report with one line
    figures = run_panels(read_records(run_dir, say))
    written = _write_curves(figures, out / "plots", run_dir.name)
    model_written, evaluation, test_logits = _model_figures(run_dir, out / "plots", device, embedding, say, data)
    written.update(model_written)
    summary = _read_json(run_dir / "summary.json")
    config_text = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    html = out / "report.html"
    page = run_page(run_dir.name, summary, evaluation, written, config_text, html.parent)
    page = page.replace("<h2>Plots</h2>", baseline_section(_read_json(run_dir / "baseline.json")) + "<h2>Plots</h2>", 1)
    trust_figures, trust_html = trust_sections(run_dir, out, device, evaluation, say, data, test_logits)  # docs/trust.md
    written.update(trust_figures)
    html.write_text(page.replace("<h2>Configuration</h2>", trust_html + "\n<h2>Configuration</h2>", 1))
    return Report(html, written, figures, evaluation)


@quiet_libraries()
def write_comparison(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> Report:
    """Overlay the curves of several runs in ``out`` (default ``FIRST_RUN/compare``).

    Raises:
        UserError: one of ``run_dirs`` is not a run directory.
    """
    dirs = [Path(d) for d in run_dirs]
    out = Path(out) if out is not None else dirs[0] / "compare"
    names = [d.name for d in dirs]
    labels = names if len(set(names)) == len(names) else [str(d) for d in dirs]
    runs = {label: read_records(d) for label, d in zip(labels, dirs)}
    figures = compare_panels(runs)
    written = _write_curves(figures, out / "plots", f"{len(dirs)} runs")
    summaries = {label: _read_json(d / "summary.json") for label, d in zip(labels, dirs)}
    html = out / "report.html"
    html.write_text(comparison_page(summaries, written, html.parent))
    return Report(html, written, figures)


def end_of_run_report(run_dir: Path, device: Any, embedding: str, say: Callable[[str], None], data: Any = None) -> None:
    """The report at the end of a run (``data``: the run's, already loaded): main process
    only; a failure only warns.

    The run's results are already saved when this runs, so a plotting problem must not turn
    a finished run into a failed one.
    """
    if not distributed.is_main_process():
        return
    try:
        report = write_report(run_dir, device=str(device), embedding=embedding, say=say, data=data)
    except Exception as err:  # noqa: BLE001 - reported, then the finished run exits normally
        say(f"comatch: warning: the run finished but its report failed ({type(err).__name__}: {err}); "
            f"retry with `comatch report {run_dir}`")
        return
    say(f"report: {report.html}")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}
