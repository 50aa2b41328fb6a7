"""The tables of docs/results/digits.md, computed from the grid's results.csv (so the page's
figures come from the committed runs, not from hand copying).

    python benchmarks/digits_claims.py docs/results/digits/results.csv

Prints the method x labels-per-class table of final EMA test accuracy (mean ± sd over seeds), the
differences behind each of the paper's claims (in points, and in units of the larger of the two
seed standard deviations), the steps to 90%, the kNN accuracy of the projection embeddings and the
mid-run mask rates the notes quote.
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

LABELS = (1, 2, 4)
NAMES = {"supervised": "supervised", "mixmatch": "mixmatch", "fixmatch": "fixmatch", "comatch": "**comatch**",
         "comatch-no-smoothing": "comatch, no smoothing", "comatch-no-graph-loss": "comatch, no graph loss",
         "comatch-self-loop-graph": "comatch, self-loop graph", "comatch-no-alignment": "comatch, no alignment",
         "comatch-hard-labels": "comatch, hard labels"}
# claim: (better arm, other arm)
CLAIMS = {"CoMatch beats FixMatch": ("comatch", "fixmatch"),
          "the graph contrastive loss helps": ("comatch", "comatch-no-graph-loss"),
          "a pseudo-label graph beats instance contrast": ("comatch", "comatch-self-loop-graph"),
          "distribution alignment helps": ("comatch", "comatch-no-alignment"),
          "soft pseudo-labels beat hard ones": ("comatch", "comatch-hard-labels"),
          "memory smoothing helps": ("comatch", "comatch-no-smoothing")}


def values(rows: list[dict], method: str, labels: int, key: str) -> list[float]:
    return [float(r[key]) for r in rows if r["method"] == method and int(r["labels_per_class"]) == labels
            and r[key] not in ("", None)]


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def main() -> None:
    rows = list(csv.DictReader(Path(sys.argv[1]).open()))
    print("| method | 1 label/class | 2 labels/class | 4 labels/class |\n| --- | --- | --- | --- |")
    for method, name in NAMES.items():
        cells = []
        for n in LABELS:
            m, s = mean_sd(values(rows, method, n, "test_acc_ema"))
            cell = f"{100 * m:.1f} ± {100 * s:.1f}"
            cells.append(f"**{cell}**" if method == "comatch" else cell)
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    for claim, (a, b) in CLAIMS.items():
        parts = []
        for n in LABELS:
            (ma, sa), (mb, sb) = mean_sd(values(rows, a, n, "test_acc_ema")), mean_sd(values(rows, b, n, "test_acc_ema"))
            diff, spread = 100 * (ma - mb), 100 * max(sa, sb)
            ratio = abs(diff) / spread if spread else float("inf")
            parts.append(f"{diff:+.1f} ({'within the spread' if ratio < 1 else f'{ratio:.1f} sd'})")
        print(f"{claim}: " + " / ".join(parts))
    for method in ("comatch", "fixmatch"):
        steps = [values(rows, method, n, "steps_to_90") for n in LABELS]
        print(f"steps to 90% {method}: " + " / ".join(
            f"{statistics.mean(s):.0f} ({len(s)} of 3)" if s else "never" for s in steps))
    for method in ("comatch", "fixmatch", "supervised", *[m for m in NAMES if m.startswith("comatch-")]):
        knn = [100 * mean_sd(values(rows, method, n, "knn_embeddings"))[0] for n in LABELS]
        print(f"kNN embeddings {method}: " + " / ".join(f"{k:.1f}" for k in knn))
    for method in ("comatch", "comatch-no-smoothing", "comatch-no-graph-loss"):
        masks = [mean_sd(values(rows, method, n, "mask@50%"))[0] for n in LABELS]
        print(f"mask at mid-run {method}: " + " / ".join(f"{m:.2f}" for m in masks))


if __name__ == "__main__":
    main()
