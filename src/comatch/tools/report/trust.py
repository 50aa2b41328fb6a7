"""The report's trust sections: guardrail warnings, class-balanced metrics, the reliability
diagram before and after temperature scaling, the per-class pseudo-label shares over time and
the most suspicious unlabelled images (out-of-distribution score) as thumbnails.

Written by :func:`trust_sections`; :mod:`comatch.tools.report.build` puts the HTML before the
configuration.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from comatch.errors import UserError
from comatch.tools.report.plots import Panel, _save, draw_panels
from comatch.tools.report.html import image, table
from comatch.training.monitor import parse_records

SUSPICIOUS = 16  # thumbnails of the highest OOD scores


def draw_reliability(before: dict[str, list[float]], after: dict[str, list[float]], path: Path, title: str) -> Path:
    """Accuracy against confidence per bin, before and after temperature scaling."""
    fig = Figure(figsize=(9.5, 4.2), layout="constrained")
    for ax, (name, table) in zip(fig.subplots(1, 2), (("before (T = 1)", before), ("after", after))):
        bins = len(table["accuracy"])
        centres = (np.arange(bins) + 0.5) / bins
        acc = np.nan_to_num(np.asarray(table["accuracy"], dtype=float))
        ax.bar(centres, acc, width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (max probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(name)
        ax.legend(fontsize="small", loc="upper left")
    fig.suptitle(title)
    return _save(fig, path)


def draw_thumbnails(images: np.ndarray, captions: Sequence[str], path: Path, title: str) -> Path:
    """A grid of uint8 images ``[n, C, H, W]`` with a caption under each."""
    n = len(images)
    cols = min(8, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(1.6 * cols, 1.9 * rows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, caption in zip(axes, images, captions):
        pixels = np.transpose(image, (1, 2, 0))
        ax.imshow(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, cmap="gray" if pixels.shape[2] == 1 else None)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def share_panels(records: Sequence[dict[str, Any]], class_names: Sequence[str]) -> list[Panel]:
    """The per-class pseudo-label shares against the step (the 10 largest classes at the end
    for more than 10 classes)."""
    from comatch.training.guardrails import class_shares

    rows = [r for r in records if r.get("kind") == "train" and class_shares(r)]
    if not rows:
        return []
    last = class_shares(rows[-1])
    shown = sorted(range(len(last)), key=lambda c: -last[c])[:10] if len(last) > 10 else range(len(last))
    lines = {}
    for c in shown:
        name = class_names[c] if c < len(class_names) else str(c)
        lines[f"class {name}"] = ([int(r["step"]) for r in rows], [class_shares(r)[c] for r in rows])
    return [Panel("Pseudo-labels per class", "share of the unlabelled batch", lines, (0.0, 1.0))]


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}"


def _img(path: Path, base: Path, alt: str) -> str:
    del base  # embedded: the page stands on its own
    return image(path, alt)


def trust_sections(run_dir: Path, out: Path, device: str, evaluation: dict[str, Any] | None,
                   say: Callable[[str], None], data: Any = None,
                   test_logits: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[dict[str, Path], str]:
    """Write the trust figures into ``out/plots`` and return them with the HTML sections.

    ``data`` (the run's, when the caller has it) and ``test_logits`` (the EMA model's test
    logits and labels, when already computed) are reused instead of computed again. Every
    part that cannot be made (no checkpoint, no data) is left out with a warning.
    """
    from comatch.training import guardrails

    plots, base = out / "plots", out
    figures: dict[str, Path] = {}
    parts: list[str] = []
    warnings = guardrails.read_warnings(run_dir)  # what the run printed
    if warnings is None:  # a run from before guardrails.json: check its history now
        warnings = guardrails.run_warnings(run_dir, _records(run_dir), prior=guardrails.labelled_counts(run_dir),
                                           write=False)
    items = "".join(f"<li><b>{html.escape(w.kind)}</b> (step {w.step}): {html.escape(w.message)}</li>" for w in warnings)
    parts.append(_section("Guardrails", f"<ul>{items}</ul>" if warnings else "<p>No guardrail fired.</p>"))
    del evaluation  # the class-balanced metrics are in the report's "Classes" section
    records = _records(run_dir)
    data_json = _json(run_dir / "data.json")
    panels = share_panels(records, data_json.get("classes", []))
    if panels:
        figures["pseudo_label_classes"] = draw_panels(panels, plots / "pseudo_label_classes.png", run_dir.name)
        parts.append(_section("Pseudo-labels per class", "<p>Share of each class among the pseudo-labels "
                              "(argmax) of the unlabelled batches, averaged over each logging period.</p>"
                              + _img(figures["pseudo_label_classes"], base, "pseudo-label classes")))
    try:
        model_parts = _model_sections(run_dir, plots, base, device, figures, data, test_logits)
    except UserError as err:
        say(f"comatch: warning: no reliability diagram or outlier thumbnails: {err}")
        model_parts = []
    return figures, "\n".join(parts + model_parts)


def _model_sections(run_dir: Path, plots: Path, base: Path, device: str, figures: dict[str, Path], data: Any = None,
                    test_logits: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[str]:
    """Reliability diagram (test set) and the most suspicious unlabelled images (of a seeded
    sample of at most :data:`MAX_SCORED`)."""
    from comatch.data.datasets import gather
    from comatch.data.loaders import eval_loader
    from comatch.data.preprocessing import run_data
    from comatch.tools.inference.calibration import expected_calibration_error, read_calibration, reliability_bins
    from comatch.training.evaluation import predict
    from comatch.tools.inference.checkpoint import load_model
    from comatch.tools.trust.ood import MAX_SCORED, score_pool

    loaded = load_model(run_dir, "ema", device)
    data = data if data is not None else run_data(loaded.config)
    parts = []
    t = loaded.temperature
    if test_logits is None:
        logits, _, labels = predict(loaded.model, eval_loader(data.test, loaded.eval_view()), loaded.preprocess())
    else:
        logits, labels = test_logits
    before = torch.softmax(logits.double(), 1)
    after = torch.softmax(logits.double() / t, 1)
    calibration = read_calibration(run_dir, say=lambda _: None) or {}  # load_model warned already
    figures["reliability"] = draw_reliability(
        reliability_bins(before, labels), reliability_bins(after, labels), plots / "reliability.png",
        f"Test set, EMA model: ECE {expected_calibration_error(before, labels):.3f} -> "
        f"{expected_calibration_error(after, labels):.3f} (T = {t:.3f})")
    if calibration.get("fitted_on"):
        fitted = f"fitted on the {calibration['fitted_on']}"
    else:  # calibrate() says why it fitted none; without calibration.json it never ran
        fitted = f"not fitted ({calibration.get('not_fitted', 'no calibration.json: run `comatch calibrate`')})"
    parts.append(_section("Calibration", f"<p>Temperature T = {t:.4g}, {html.escape(fitted)}; "
                          "expected calibration error over 15 confidence bins on the test set, before and after "
                          "dividing the logits by T.</p>" + _img(figures["reliability"], base, "reliability")))
    scored = score_pool(loaded.model, data, loaded.eval_view(), loaded.preprocess(), t, max_images=MAX_SCORED)
    if len(scored.rows):
        from comatch.tools.trust.label import write_suspicious

        top = scored.scores.argsort(descending=True)[:SUSPICIOUS]
        rows = torch.as_tensor(scored.rows[top.numpy()])
        images, _ = gather(data.unlabelled, rows)
        files = [image_name(data.unlabelled, int(r)) for r in rows]
        captions = [f"{_short(name)}\ns={float(scored.scores[i]):.2f} {data.class_names[int(scored.predicted[i])]} "
                    f"p={float(scored.confidence[i]):.2f}" for name, i in zip(files, top)]
        figures["outliers"] = draw_thumbnails(images.numpy(), captions, plots / "outliers.png",
                                              f"Most suspicious unlabelled images (of {len(scored.rows)} scored)")
        listing = {name: {"score": float(scored.scores[i]), "predicted": data.class_names[int(scored.predicted[i])],
                          "probability": float(scored.confidence[i])} for name, i in zip(files, top)}
        write_suspicious([(name, v["score"], v["predicted"], v["probability"]) for name, v in listing.items()],
                         plots / "outliers.csv")
        parts.append(_section("Suspicious unlabelled images", (
            "<p>The unlabelled images with the highest out-of-distribution score (far from every labelled "
            "image in embedding space, and predicted with low confidence; see docs/trust.md): file, score s, "
            "predicted class and its probability; listed in plots/outliers.csv. <code>comatch label RUN_DIR</code> "
            "shows the images its unknown-class screen flags, where one key excludes them (tab Most suspicious).</p>"
            + _img(figures["outliers"], base, "outliers")
            + ("" if all(name.endswith("(bundled data: no file)") for name in files) else
               table(listing, ["score", "predicted", "probability"], "file")))))
    return parts


def image_name(dataset: Any, row: int, part: str = "unlabelled") -> str:
    """An image of ``dataset`` by its file path, or by its row where it has no file (bundled data)."""
    from comatch.tools.trust.pool import path_of

    path = path_of(dataset, row)
    return str(path) if path is not None else f"{part} image {row} (bundled data: no file)"


def _short(name: str, width: int = 22) -> str:
    """The end of a file name that fits under a thumbnail."""
    base = Path(name).name if "/" in name or "\\" in name else name
    return base if len(base) <= width else "..." + base[-(width - 3):]


def _records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return parse_records(path.read_bytes())[0] if path.is_file() else []  # damaged lines dropped


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}
