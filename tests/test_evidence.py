"""The committed evidence still reproduces, on any x86-64 machine: one cell of the digits grid,
rerun with the grid's own code path (benchmarks/accuracy.py, the command recorded beside the grid,
``run.numerics=portable``), must give the committed final EMA test accuracy bit for bit.

A change to the numerics fails here until the evidence is regenerated with the command in
docs/results/digits.md (and docs/results/digits/provenance.json).
"""

import csv
import importlib.util
import json
import shlex
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "docs" / "results" / "digits"
CELL = ("comatch", 1, 0)  # method, labels per class, seed: a CoMatch cell with every part on


def load_benchmark(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmark imports provenance.py beside it
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_grid_was_made_in_portable_numerics_and_says_on_what():
    recorded = json.loads((GRID / "provenance.json").read_text())
    assert recorded["numerics"] == "portable"
    assert recorded["cpu_model"] and recorded["threads_per_run"] == 1
    with (GRID / "results.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 81


def test_a_committed_digits_cell_reproduces_bitwise(tmp_path):
    bench = load_benchmark("accuracy")
    recorded = json.loads((GRID / "provenance.json").read_text())
    argv = shlex.split(recorded["command"])[2:]  # drop "python benchmarks/accuracy.py"
    args = bench.build_parser().parse_args(argv)
    assert args.numerics == "portable"
    assert recorded["torch"].split("+")[0] == torch.__version__.split("+")[0], (
        f"the evidence was made with torch {recorded['torch']}; this is {torch.__version__}")
    args.out = tmp_path
    method, labels, seed = CELL
    run = bench.run_cell(args, method, labels, seed, recorded["threads_per_run"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["numerics"] == "portable" and summary["cpu_capability"] == "DEFAULT"
    with (GRID / "results.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle)
                if (r["method"], int(r["labels_per_class"]), int(r["seed"])) == CELL]
    assert len(rows) == 1
    got = summary["test_accuracy_ema"]
    assert got == float(rows[0]["test_acc_ema"]), (
        f"{method}, {labels} label(s)/class, seed {seed}: committed {rows[0]['test_acc_ema']}, now {got!r} "
        f"(made on {recorded['cpu_model']}, rerun on {summary['cpu_model']}); the numerics changed: "
        f"regenerate the evidence ({recorded['command']})")


def test_the_documented_single_cell_command_is_the_grids_own(tmp_path, monkeypatch):
    """docs/results/digits.md's `comatch train` line for one cell runs exactly what the grid ran for
    that cell (the same flags and overrides), so that it reproduces its row of results.csv."""
    page = (ROOT / "docs" / "results" / "digits.md").read_text()
    block = next(b for b in page.split("```bash")[1:] if "comatch train --preset digits" in b).split("```")[0]
    documented = shlex.split(block.replace("\\\n", " "))[1:]  # drop "comatch"
    assert "run.numerics=portable" in documented
    option = lambda flag: documented[documented.index(flag) + 1]  # noqa: E731
    seed, method = int(option("--seed")), option("--method")
    labels = int(next(t for t in documented if t.startswith("data.labels_per_class=")).partition("=")[2])
    switches = [t for t in documented if t.startswith("comatch.")]
    bench = load_benchmark("accuracy")
    name = next(k for k, v in bench.METHODS.items() if v == ["--method", method, *switches])
    recorded = json.loads((GRID / "provenance.json").read_text())
    args = bench.build_parser().parse_args(shlex.split(recorded["command"])[2:])
    args.out = tmp_path
    ran = []
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **kw: ran.append(cmd[3:]))  # drop python -m comatch
    bench.run_cell(args, name, labels, seed, recorded["threads_per_run"])
    grid = ran[0]
    grid[grid.index("--out") + 1] = documented[documented.index("--out") + 1]
    assert sorted(grid) == sorted(documented)
