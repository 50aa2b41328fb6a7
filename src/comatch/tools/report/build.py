"""The report of a run (plots and one HTML page) and the comparison of several runs.

A run's report is written to ``RUN_DIR/plots/*.png`` and ``RUN_DIR/report.html`` (which
embeds every plot, so it can be sent on its own). The page opens with the headline (EMA test
accuracy on what, labelled and unlabelled images, wall time, date, version), then the classes
(precision, recall, F1 by class name), and closes with the settings as they ran. The plots:

* ``accuracy.png``: test accuracy of the raw and the EMA model against the step;
* ``losses.png``: ``L_x``, ``L_u`` and ``L_c`` against the step;
* ``pseudo_labels.png``: mask rate and pseudo-label accuracy, and pseudo-label graph edges;
* ``confusion.png``: the confusion matrix of the test set (EMA model);
* ``embedding.png``: a 2-D map (PCA or t-SNE) of the test set's projection embeddings;
* ``mistakes.png``: the most confident wrong test predictions;
* ``views.png``: a few test images beside samples of each view kind the method trains on;
* the trust figures of :mod:`comatch.tools.report.trust`.

``plots/series.json`` holds the curves exactly as plotted. A comparison overlays the curves of
several runs (``--out``, default ``FIRST_RUN/compare``).
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timezone
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from comatch import distributed
from comatch.data.loaders import eval_loader
from comatch.errors import UserError
from comatch.training.evaluation import predict
from comatch.tools.inference.checkpoint import classification_metrics, load_model, run_test_set
from comatch.tools.quiet import quiet_libraries
from comatch.tools.report.plots import Panel, Series, draw_confusion, draw_embedding, draw_image_rows, draw_panels, embedding_2d
from comatch.tools.report.html import RunPage, baseline_section, comparison_page, image, per_class_table, run_page, table
from comatch.training.monitor import parse_records
from comatch.tools.report.trust import trust_sections

MAP_NAMES = {"pca": "PCA", "tsne": "t-SNE"}
MISTAKES = 16  # thumbnails of the most confident wrong test predictions
VIEW_IMAGES = 4  # test images shown with samples of each training view
VIEW_SAMPLES = 2  # samples per view kind
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


@dataclass
class TestOutputs:
    """The EMA model's outputs on the run's test set, computed once for every part of the report."""

    loaded: Any
    dataset: Any
    logits: torch.Tensor
    embeddings: torch.Tensor
    labels: torch.Tensor
    metrics: dict[str, Any]


def _test_outputs(run_dir: Path, device: str, say: Callable[[str], None], data: Any = None) -> TestOutputs | None:
    """The EMA model's logits on the test set; None (after a warning) when the checkpoint or the
    test data cannot be loaded. ``data``: the run's RunData when the caller has it (the end of a
    run), so that the folders are not scanned again."""
    try:
        loaded = load_model(run_dir, "ema", device)
        dataset = data.test if data is not None else run_test_set(loaded.config)
    except UserError as err:
        say(f"comatch: warning: no test-set sections (classes, mistakes, confusion matrix, embedding map): {err}")
        return None
    logits, z, labels = predict(loaded.model, eval_loader(dataset, loaded.eval_view()), loaded.preprocess())
    return TestOutputs(loaded, dataset, logits, z, labels, classification_metrics(logits, labels, loaded.class_names))


def _model_figures(test: TestOutputs, plots: Path, embedding: str) -> dict[str, Path]:
    """Confusion matrix and embedding map of the EMA model on the test set."""
    names, metrics = test.loaded.class_names, test.metrics
    figures = {"confusion": draw_confusion(metrics["confusion_matrix"], names, plots / "confusion.png",
                                           f"Test set, EMA model, step {test.loaded.step}: top-1 {metrics['top1']:.2%}")}
    points, rows = embedding_2d(test.embeddings.numpy(), embedding)
    figures["embedding"] = draw_embedding(points, test.labels.numpy()[rows], names, plots / "embedding.png",
                                          f"Test embeddings z ({MAP_NAMES[embedding]}, {len(rows)} images)")
    return figures


def confident_mistakes(probs: torch.Tensor, labels: torch.Tensor, count: int) -> list[int]:
    """Rows of the ``count`` wrong predictions with the highest probability, most confident first.

    Args:
        probs: class probabilities ``[N, C]``.
        labels: true classes ``[N]``.
        count: how many to return at most.
    """
    confidence, predicted = probs.max(dim=1)
    wrong = (predicted != labels).nonzero().flatten()
    order = confidence[wrong].argsort(descending=True, stable=True)
    return wrong[order[:count]].tolist()


def _class_section(test: TestOutputs) -> str:
    """The per-class table and the class-balanced summary numbers."""
    from comatch.tools.inference.metrics import balanced_accuracy, macro_f1, per_class_scores

    cm = test.metrics["confusion_matrix"]
    return (f"<p>Top-1 {test.metrics['top1']:.2%}, balanced accuracy (mean per-class recall) "
            f"{balanced_accuracy(cm):.2%}, macro-F1 {macro_f1(cm):.2%} on {test.metrics['num_images']:,} test "
            "images (EMA model).</p>" + per_class_table(per_class_scores(cm, test.loaded.class_names)))


def _mistakes_section(test: TestOutputs, plots: Path) -> tuple[dict[str, Path], str]:
    """The most confident wrong test predictions as thumbnails, and their files."""
    from comatch.data.datasets import gather
    from comatch.tools.trust.pool import path_of
    from comatch.tools.report.trust import draw_thumbnails, image_name

    probs = torch.softmax(test.logits.double() / test.loaded.temperature, dim=1)
    rows = confident_mistakes(probs, test.labels, MISTAKES)
    if not rows:
        return {}, "<p>The EMA model gets every test image right.</p>"
    names = test.loaded.class_names
    images, _ = gather(test.dataset, torch.as_tensor(rows))
    predicted = probs[rows].argmax(1).tolist()
    captions = [f"true {names[int(test.labels[r])]}\npredicted {names[p]} {float(probs[r, p]):.2f}"
                for r, p in zip(rows, predicted)]
    path = draw_thumbnails(images.numpy(), captions, plots / "mistakes.png",
                           f"The {len(rows)} most confident mistakes on the test set")
    listing = {image_name(test.dataset, r, "test"): {"true": names[int(test.labels[r])], "predicted": names[p],
                                                 "probability": float(probs[r, p])} for r, p in zip(rows, predicted)}
    _write_mistakes_csv(listing, plots / "mistakes.csv")
    files = ("" if path_of(test.dataset, rows[0]) is None else  # bundled data has no files to name
             "<details><summary>their files</summary>" + table(listing, ["true", "predicted", "probability"], "image")
             + "</details>")
    return {"mistakes": path}, (
        "<p>Wrong test predictions with the highest (calibrated) probability: often a label error, an "
        "ambiguous image, or two classes the model confuses.</p>" + image(path, "mistakes") + files)


def _write_mistakes_csv(listing: dict[str, dict[str, Any]], path: Path) -> None:
    """``path,label,predicted,probability`` of the most confident mistakes, to check each label."""
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "predicted", "probability"])
        writer.writerows([[name, v["true"], v["predicted"], f"{v['probability']:.6f}"] for name, v in listing.items()])


def _views_section(test: TestOutputs, plots: Path) -> tuple[dict[str, Path], str]:
    """A few test images as the network sees them, and samples of each augmented view the method trains on."""
    from comatch.data.batch_views import BatchViews
    from comatch.data.datasets import gather
    from comatch.data.preprocessing import view_settings

    config, names = test.loaded.config, test.loaded.class_names
    kinds = _view_kinds(config, len(names))
    views = BatchViews(view_settings(config, test.loaded.image_size))
    shown = _one_per_class(test.labels, VIEW_IMAGES)
    images, _ = gather(test.dataset, torch.as_tensor(shown))
    images = views.resize(images)  # [n, C, S, S]: as evaluated
    columns = ["as evaluated"] + [f"{kind} {i + 1}" for kind in kinds for i in range(VIEW_SAMPLES)]
    draws = torch.Generator().manual_seed(0)  # the report's own draws: the process's random state is left alone
    samples = {kind: [views(kind, images, draws) for _ in range(VIEW_SAMPLES)] for kind in kinds}
    rows = [[images[i].numpy()] + [samples[kind][j][i].numpy() for kind in kinds for j in range(VIEW_SAMPLES)]
            for i in range(len(shown))]
    path = draw_image_rows(rows, columns, [names[int(test.labels[r])] for r in shown], plots / "views.png",
                           f"Views the {config.method} training draws ({', '.join(kinds)})")
    return {"views": path}, (
        "<p>Random samples of each view kind the method trains on, beside the image as evaluated. Check that "
        "every view still shows its class (horizontal flips, for one, turn some digits and letters into others: "
        "views.flip).</p>" + image(path, "views"))


def _view_kinds(config: Any, num_classes: int) -> list[str]:
    """The view kinds (weak, strong, contrastive) the run's method trains on."""
    from comatch.methods import METHODS, MethodContext

    try:
        method = METHODS[config.method].from_config(config, MethodContext(num_classes, config.model.proj_dim,
                                                                          torch.nn.Module()))
        kinds = [*method.labelled_views.values(), *method.unlabelled_views.values()]
    except Exception:  # noqa: BLE001 - a method that cannot say: the two views of every method here
        kinds = ["weak", "strong"]
    return list(dict.fromkeys(kinds))


def _one_per_class(labels: torch.Tensor, count: int) -> list[int]:
    """Rows of the first image of up to ``count`` different classes."""
    rows: dict[int, int] = {}
    for row, label in enumerate(labels.tolist()):
        rows.setdefault(int(label), row)
        if len(rows) == count:
            break
    return list(rows.values())


def _headline(config: Any, summary: dict[str, Any], data: dict[str, Any], test: TestOutputs | None,
              summary_file: Path) -> tuple[str, list[str]]:
    """The result in one line, and the facts under it."""
    from comatch.version import package_version

    d = config.data
    if d.dataset == "folder":
        on = f"the test folder {d.test}" if d.test else f"a held-out {d.holdout_fraction:.0%} of each labelled class"
    else:
        on = f"the {d.dataset} test split"
    accuracy = test.metrics["top1"] if test is not None else summary.get("test_accuracy_ema")
    count = test.metrics["num_images"] if test is not None else data.get("test")
    shown = "not measured yet" if accuracy is None else f"{accuracy:.2%}"
    headline = f"EMA test accuracy {shown} on {on}" + (f" ({count:,} images)" if count else "")
    facts = []
    if data:
        facts.append(f"{data.get('labelled') or 0:,} labelled / {data.get('unlabelled') or 0:,} unlabelled images, "
                     f"{len(data.get('classes', []))} classes")
    facts.append(f"{config.method}, {config.model.arch} at {data.get('image_size') or d.image_size} px, "
                 f"{summary.get('iterations', config.optim.iterations):,} steps, seed {config.seed}")
    if summary.get("wall_seconds") is not None:
        facts.append(f"wall time {summary['wall_seconds'] / 60:.1f} min")
    if summary.get("stopped"):
        facts.append(f"stopped early, at step {summary.get('iterations')}")
    if summary_file.is_file():
        finished = datetime.fromtimestamp(summary_file.stat().st_mtime, timezone.utc)
        facts.append(f"finished {finished:%Y-%m-%d %H:%M} UTC")
    else:
        facts.append("not finished")
    facts.append(f"comatch {package_version()}")
    return headline, facts


def settings_as_run(config: Any, summary: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The settings a reader checks first, as the run resolved them (config.yaml and data.json)."""
    d, o, m, r = config.data, config.optim, config.model, config.run
    found: dict[str, Any] = {"method": config.method, "preset": f"{config.preset}: {config.description}"}
    if d.dataset == "folder":
        found.update({"labelled folder": d.labeled, "unlabelled folder": d.unlabeled, "test folder": d.test})
    else:
        found["dataset"] = f"{d.dataset} (from {d.root})" if d.dataset != "digits" else "digits (bundled)"
    found.update({
        "classes": ", ".join(data.get("classes", [])) or None,
        "network": m.arch + (f", initialised from {m.init}" if m.init else ""),
        "image size": f"{data.get('image_size') or d.image_size} px, {data.get('channels') or d.channels} channel(s)",
        "batch": f"{o.batch_size} labelled + {o.batch_size * o.mu} unlabelled images per step",
        "steps": f"{summary.get('iterations', o.iterations):,} of {o.iterations:,}",
        "learning rate": f"{o.lr:g}, {o.schedule} schedule, weight decay {o.weight_decay:g}",
        "EMA decay": o.ema_decay,
        "device": r.device,
        "seed": config.seed,
    })
    section = getattr(config, config.method, None)
    if section is not None and hasattr(section, "threshold"):
        start = getattr(section, "threshold_start", None)
        found["confidence threshold (tau)"] = section.threshold if start is None else (
            f"{start:g} at the first step, {section.threshold:g} from {section.threshold_ramp:.0%} of the run on (linear)")
    if summary.get("skipped_steps") or summary.get("skipped_images"):
        found["skipped"] = f"{summary.get('skipped_steps', 0)} step(s), {summary.get('skipped_images', 0)} image(s)"
    return {k: v for k, v in found.items() if v is not None}


@quiet_libraries()
def write_report(run_dir: str | Path, out: str | Path | None = None, device: str = "cpu",
                 embedding: str = "pca", say: Callable[[str], None] | None = None, data: Any = None) -> Report:
    """Write the plots and ``report.html`` of one run.

    Args:
        run_dir: the run directory.
        out: where to write (default ``run_dir``): ``out/plots/*.png`` and ``out/report.html``
            (which embeds the plots: it can be sent on its own).
        device: where to run the model for the test-set sections.
        embedding: ``"pca"`` or ``"tsne"``.
        say: where warnings go (default stderr).
        data: the run's :class:`~comatch.data.RunData` when the caller has it (the end of a
            run); else the folders are scanned again.

    Returns:
        The files written and the plotted data.

    Raises:
        UserError: ``run_dir`` is not a run directory.
    """
    from comatch.tools.baseline import read_run_config
    from comatch.tools.inference.calibration import read_calibration

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir
    say = say or (lambda text: print(text, file=sys.stderr))
    read_calibration(run_dir, say)  # a damaged calibration.json stops the report with one line
    figures = run_panels(read_records(run_dir, say))
    written = _write_curves(figures, out / "plots", run_dir.name)
    config = read_run_config(run_dir)
    summary, described = _read_json(run_dir / "summary.json"), _read_json(run_dir / "data.json")
    test = _test_outputs(run_dir, device, say, data)
    sections: list[tuple[str, str]] = []
    if test is not None:
        written.update(_model_figures(test, out / "plots", embedding))
        sections.append(("Classes", _class_section(test)))
        for title, make in (("Most confident mistakes", _mistakes_section), ("Views", _views_section)):
            made, part = make(test, out / "plots")
            written.update(made)
            sections.append((title, part))
    trust_figures, trust_html = trust_sections(run_dir, out, device, test.metrics if test else None, say, data,
                                               (test.logits, test.labels) if test else None)  # docs/trust.md
    written.update(trust_figures)
    headline, facts = _headline(config, summary, described, test, run_dir / "summary.json")
    page = RunPage(title=f"{config.method} on {config.preset}, seed {config.seed}: {run_dir.name}", headline=headline,
                   facts=facts, sections=sections, figures=written,
                   after=baseline_section(_read_json(run_dir / "baseline.json")) + trust_html,
                   settings=settings_as_run(config, summary, described),
                   config_text=(run_dir / "config.yaml").read_text())
    html = out / "report.html"
    html.write_text(run_page(page))
    return Report(html, written, figures, test.metrics if test else None)


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
    html.write_text(comparison_page(summaries, written))
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
