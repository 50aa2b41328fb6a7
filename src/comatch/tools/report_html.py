"""The HTML pages of the reports: a summary table, the figures, and the configuration."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}"""

CAPTIONS = {
    "accuracy": "Test accuracy of the raw and the EMA model against the training step.",
    "losses": "The three losses: L_x (labelled cross-entropy), L_u (pseudo-label loss), L_c (graph contrastive).",
    "pseudo_labels": "Left: share of unlabelled samples whose pseudo-label passes tau (mask rate) and how often "
                     "pseudo-labels are right. Right: pseudo-label graph neighbours per sample.",
    "confusion": "Confusion matrix of the test set (rows: true class, columns: predicted).",
    "embedding": "Projection embeddings z of the test set in two dimensions, coloured by true class.",
}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def _table(rows: Mapping[str, Mapping[str, Any]], columns: list[str], corner: str = "") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [corner, *columns])
    body = "".join(
        f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>"
        for name, row in rows.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _figures(figures: Mapping[str, Path], base: Path) -> str:
    parts = []
    for name, path in figures.items():
        src = html.escape(Path(os.path.relpath(path, base)).as_posix())
        caption = html.escape(CAPTIONS.get(name, ""))
        parts.append(f'<h3>{html.escape(name.replace("_", " "))}</h3><p>{caption}</p><img src="{src}" alt="{name}">')
    return "\n".join(parts)


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def run_page(name: str, summary: Mapping[str, Any], evaluation: Mapping[str, Any] | None,
             figures: Mapping[str, Path], config_text: str, base: Path) -> str:
    """The report page of one run.

    Args:
        name: the run's name.
        summary: ``summary.json`` (may be empty).
        evaluation: test metrics of the EMA model (``top1``, ``top5``, ...), or None.
        figures: figure name -> PNG path.
        config_text: ``config.yaml``.
        base: the folder of the page (image links are relative to it).

    Returns:
        The HTML text.
    """
    body = ["<h2>Summary</h2>", _table({k: {"value": v} for k, v in summary.items()}, ["value"])]
    if evaluation is not None:
        rows = {"EMA model": {"top-1": evaluation["top1"], "top-5": evaluation["top5"],
                              "images": evaluation["num_images"]}}
        body += ["<h2>Test set</h2>", _table(rows, ["top-1", "top-5", "images"])]
    body += ["<h2>Plots</h2>", _figures(figures, base)]
    body += ["<h2>Configuration</h2>", f"<pre>{html.escape(config_text)}</pre>"]
    return _page(f"comatch run {name}", "\n".join(body))


def baseline_section(found: Mapping[str, Any] | None) -> str:
    """What the run reaches against what no unlabelled training reaches (``baseline.json``), or ''."""
    if not found:
        return ""
    rows: dict[str, dict[str, Any]] = {"this run (EMA model)": {"test accuracy": found.get("run", {}).get("test_accuracy_ema")}}
    for part in ("features", "pixels"):
        for name, value in (found.get(part) or {}).items():
            if isinstance(value, float) and name not in ("seconds",):
                rows[f"{part}: {name}"] = {"test accuracy": value}
    gain = found.get("gain_over_best")
    note = "" if gain is None else (f"<p>The run is {gain * 100:+.1f} points from the best baseline "
                                    f"({html.escape(str(found['best_baseline']['name']))}).</p>")
    return "<h2>Against baselines without CoMatch training</h2>" + _table(rows, ["test accuracy"]) + note


def comparison_page(summaries: Mapping[str, Mapping[str, Any]], figures: Mapping[str, Path], base: Path) -> str:
    """The page comparing runs: one summary row per run, then the overlaid curves."""
    columns = ["method", "preset", "seed", "iterations", "num_labelled", "test_accuracy", "test_accuracy_ema",
               "best_test_accuracy", "wall_seconds"]
    body = ["<h2>Runs</h2>", _table(summaries, columns, "run"), "<h2>Curves</h2>", _figures(figures, base)]
    return _page(f"comatch: {len(summaries)} runs compared", "\n".join(body))
