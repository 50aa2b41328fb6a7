"""The HTML pages of the reports: one self-contained file each (every image embedded as a data
URI, so the page can be mailed or attached on its own).

A run's page reads top down as a practitioner checks a run: the headline (accuracy on what,
with how many labelled and unlabelled images, how long, when, which version), the classes
(precision, recall, F1), the most confident mistakes, what the augmented views look like, the
curves, the baselines and trust checks, and last the settings as they ran.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.headline{font-size:1.25em;margin:.3em 0}.facts{color:#555;margin:.2em 0 1.2em}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}"""

CAPTIONS = {
    "accuracy": "Test accuracy of the raw and the EMA model against the training step.",
    "losses": "The three losses: L_x (labelled cross-entropy), L_u (pseudo-label loss), L_c (graph contrastive).",
    "pseudo_labels": "Left: share of unlabelled samples whose pseudo-label passes tau (mask rate) and how often "
                     "pseudo-labels are right. Right: pseudo-label graph neighbours per sample.",
    "confusion": "Confusion matrix of the test set (rows: true class, columns: predicted).",
    "embedding": "Projection embeddings z of the test set in two dimensions, coloured by true class.",
}
CURVES = ("accuracy", "losses", "pseudo_labels", "confusion", "embedding")
"""The figures shown under "Curves and maps", in this order (others have their own sections)."""


@dataclass
class RunPage:
    """What the page of one run shows.

    Attributes:
        title: the page title.
        headline: the result in one line (plain text).
        facts: short facts under the headline (data sizes, time, date, version).
        sections: ``(title, HTML)`` parts in page order, before the curves.
        figures: figure name -> PNG (embedded).
        after: HTML after the curves (baselines, trust sections).
        settings: label -> value of the settings as they ran.
        config_text: ``config.yaml``.
    """

    title: str
    headline: str
    facts: list[str] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    figures: Mapping[str, Path] = field(default_factory=dict)
    after: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)
    config_text: str = ""


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def image(path: Path, alt: str) -> str:
    """An ``<img>`` holding the PNG ``path`` itself."""
    return f'<img src="{data_uri(path)}" alt="{html.escape(alt)}">'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str], corner: str = "") -> str:
    """An HTML table: one row per key of ``rows`` (its first cell), one column per ``columns``."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [corner, *columns])
    body = "".join(
        f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>"
        for name, row in rows.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _figures(figures: Mapping[str, Path], names: Sequence[str] | None = None) -> str:
    parts = []
    for name in names if names is not None else list(figures):
        if name in figures:
            caption = html.escape(CAPTIONS.get(name, ""))
            parts.append(f'<h3>{html.escape(name.replace("_", " "))}</h3><p>{caption}</p>{image(figures[name], name)}')
    return "\n".join(parts)


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def per_class_table(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """Precision, recall, F1 and test images of every class, by class name."""
    def number(value: Any) -> str:
        return "<td class='n'>&ndash;</td>" if value is None else f"<td class='n'>{value:.3f}</td>"

    rows = "".join(f"<tr><th>{html.escape(name)}</th>{number(s['precision'])}{number(s['recall'])}"
                   f"{number(s['f1'])}<td class='n'>{s['images']}</td></tr>" for name, s in scores.items())
    return ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>test images</th></tr>"
            f"{rows}</table>")


def run_page(page: RunPage) -> str:
    """The report page of one run (self-contained HTML)."""
    body = [f"<p class='headline'><b>{html.escape(page.headline)}</b></p>",
            f"<p class='facts'>{' &middot; '.join(html.escape(f) for f in page.facts)}</p>"]
    body += [f"<h2>{html.escape(title)}</h2>\n{part}" for title, part in page.sections]
    curves = _figures(page.figures, CURVES)
    if curves:
        body += ["<h2>Curves and maps</h2>", curves]
    body.append(page.after)
    body += ["<h2>Settings as they ran</h2>", table({k: {"value": v} for k, v in page.settings.items()}, ["value"]),
             f"<details><summary>config.yaml</summary><pre>{html.escape(page.config_text)}</pre></details>"]
    return _page(page.title, "\n".join(body))


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
    return "<h2>Against baselines without CoMatch training</h2>" + table(rows, ["test accuracy"]) + note


def comparison_page(summaries: Mapping[str, Mapping[str, Any]], figures: Mapping[str, Path]) -> str:
    """The page comparing runs: one summary row per run, then the overlaid curves."""
    columns = ["method", "preset", "seed", "iterations", "num_labelled", "test_accuracy", "test_accuracy_ema",
               "best_test_accuracy", "wall_seconds"]
    body = ["<h2>Runs</h2>", table(summaries, columns, "run"), "<h2>Curves</h2>", _figures(figures)]
    return _page(f"comatch: {len(summaries)} runs compared", "\n".join(body))
