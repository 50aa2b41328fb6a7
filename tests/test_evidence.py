"""The committed evidence still reproduces: one cell of the digits grid, rerun with the grid's own
code path (benchmarks/accuracy.py, the documented command's settings), must give the committed
final EMA test accuracy bit for bit.

A change to the numerics fails here until the evidence is regenerated with the command in
docs/results/digits.md (and docs/results/digits/provenance.json).
"""

import argparse
import csv
import importlib.util
import json
import shlex
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "docs" / "results" / "digits"
CELL = ("comatch", 1, 0)  # method, labels per class, seed: a CoMatch cell with every part on


def load_accuracy_benchmark():
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", ROOT / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documented_arguments(bench) -> argparse.Namespace:
    """The grid's arguments, parsed from the command recorded with it."""
    recorded = json.loads((GRID / "provenance.json").read_text())
    argv = shlex.split(recorded["command"])[2:]  # drop "python benchmarks/accuracy.py"
    parser = argparse.ArgumentParser()
    for flag, kind in (("--preset", str), ("--iterations", int), ("--eval-every", int), ("--threads", int),
                       ("--jobs", int), ("--out", Path)):
        parser.add_argument(flag, type=kind)
    for flag in ("--methods", "--labels", "--seeds"):
        parser.add_argument(flag, nargs="+")
    args, rest = parser.parse_known_args(argv)
    args.override = rest
    return args, recorded


def test_a_committed_digits_cell_reproduces_bitwise(tmp_path):
    bench = load_accuracy_benchmark()
    args, recorded = documented_arguments(bench)
    assert recorded["torch"].split("+")[0] == torch.__version__.split("+")[0], (
        f"the evidence was made with torch {recorded['torch']}; this is {torch.__version__}")
    args.out = tmp_path
    method, labels, seed = CELL
    run = bench.run_cell(args, method, labels, seed, recorded["threads_per_run"])
    got = json.loads((run / "summary.json").read_text())["test_accuracy_ema"]
    with (GRID / "results.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle)
                if (r["method"], int(r["labels_per_class"]), int(r["seed"])) == CELL]
    assert len(rows) == 1
    assert got == float(rows[0]["test_acc_ema"]), (
        f"{method}, {labels} label(s)/class, seed {seed}: committed {rows[0]['test_acc_ema']}, now {got!r}; "
        f"the numerics changed: regenerate the evidence ({recorded['command']})")
