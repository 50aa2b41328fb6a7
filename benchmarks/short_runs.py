"""What a short CPU run should do differently from the released 1M-step recipe, measured.

Each variant changes one setting of the own-folder defaults; every variant trains on the same
folders with the same seeds, at equal wall time: the default's steps for the time (``--steps``,
what a ``--budget`` run of the default reached on the same machine), times the variant's speed
against the default (``VARIANTS``: 1 unless its step costs more or less). The steps are fixed,
so the accuracies do not depend on what else runs on the machine; ``--parallel P`` trains P
runs at once with ``2 // P`` threads each (the step times that set the speed ratios were
measured with 2 threads on an idle machine: ``step_time.py``, see ``VARIANTS``).

    python benchmarks/short_runs.py --out short --kinds digits objects --seeds 0 1 2 \\
        --variants default threshold-0.8 mu-3 half-cosine bn-0.005 threshold-ramp propagated-10 compile \\
        --steps digits=1050 objects=1000

The folders are those ``own_folder.py`` builds (``--data KIND-SEED=DIR`` reuses one; otherwise
they are built under ``OUT/data``). Finished runs are kept and not run again. The result
(``OUT/short_runs.json``, or ``--json NAME``) has each run's EMA test accuracy, and per kind and variant the mean
and the paired difference from the default (seed by seed) with its spread.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from comatch.tools.baseline import spread_labels

from kinds import KINDS, build_dataset
from provenance import provenance

VARIANTS: dict[str, tuple[list[str], float]] = {
    "default": ([], 1.0),
    # the learning rate decays to 0 by the last step (the released cosine stops at 0.2 of it)
    "half-cosine": (["optim.schedule=half_cosine"], 1.0),
    # pseudo-labels from a confidence of 0.8 on (the released 0.95 admits few early in a short run)
    "threshold-0.8": (["comatch.threshold=0.8"], 1.0),
    # the threshold from 0.8 at the first step to the released 0.95 at the last (linear)
    "threshold-ramp": (["comatch.threshold_start=0.8"], 1.0),
    # 48 unlabelled images a step instead of 112: 2.1x the steps in the same time (folder-digits,
    # bf16, 2 threads: 63 against 133 ms a step, step_time.py, 2 rounds interleaved)
    "mu-3": (["optim.mu=3"], 2.1),
    # torch.compile: 120 against 142 ms a step in bf16 (cpu_speedups.py, docs/results/perf) after
    # about 17 s of compilation, which the 1,050 steps' 149 s pay once: 1.05x the steps
    "compile": (["run.compile=true"], 1.05),
    # the evaluation EMA over about the last third of a 1,000-step run instead of the last tenth
    "ema-0.997": (["optim.ema_decay=0.997"], 1.0),
    # BatchNorm statistics over about the last fifth of a 1,000-step run instead of the last twentieth
    "bn-0.005": (["model.bn_momentum=0.005"], 1.0),
    # the paper's network for 32 px images instead of WRN-10-1: 1,487 against 165 ms a step at 28 px
    # (step_time.py --setting folder-digits run.amp=bf16, 16 steps)
    "wrn28-2": (["model.arch=wrn28_2"], 0.111),
    # a warm start from label propagation: the unlabelled images scikit-learn's LabelSpreading
    # (the `comatch baseline` graph on pixels) is surest of, 10 per class, join the labelled set
    # (--extra-labels); the propagation takes seconds, left out of the wall time
    "propagated-10": ([], 1.0),
    # the strong view's turns kept whatever the labelled images say (the folder default decides
    # views.rotate from them: off for the arrows kind); the step costs the same
    "rotate-on": (["views.rotate=true"], 1.0),
    # the strong view without turns, on data whose class they keep: what a wrong verdict costs
    "rotate-off": (["views.rotate=false"], 1.0),
    # colour changes kept whatever the labelled images say (the folder default decides
    # views.colour from them: off for the coded kind), and left out on data whose class they keep
    "colour-on": (["views.colour=true"], 1.0),
    "colour-off": (["views.colour=false"], 1.0),
    # horizontal flips kept or left out whatever the labelled images say (the folder default
    # decides views.flip from them); the step costs the same
    "flip-on": (["views.flip=true"], 1.0),
    "flip-off": (["views.flip=false"], 1.0),
}
PROPAGATED = {"propagated-10": 10}
"""Variants that add label propagation's surest unlabelled images to the labelled set: picks per class."""


def folders(out: Path, kind: str, seed: int, given: dict[str, Path]) -> Path:
    """The kind's folders for ``seed`` (``labeled/``, ``unlabeled/``, ``test/``)."""
    data = given.get(f"{kind}-{seed}") or out / "data" / f"{kind}-{seed}"
    if not (data / "manifest.json").is_file():
        build_dataset(data, None, KINDS[kind].test, 10, seed, kind)
    return data


def _pixels(files: list[Path]) -> np.ndarray:
    """Images as rows of pixels in [0, 1] ``[N, H*W*C]``, as the files store them."""
    return np.stack([np.asarray(Image.open(f), dtype=np.float32).ravel() / 255 for f in files])


def propagated_labels(data: Path, per_class: int, out: Path, seed: int, pool: int = 10_000) -> Path:
    """``out``: a labels.csv (``comatch train --extra-labels``) naming, per class, the
    ``per_class`` unlabelled images that LabelSpreading on pixels (7-NN graph of the labelled
    images and ``pool`` unlabelled ones drawn with ``seed``, as ``comatch baseline``) gives that
    class with the highest probability. Written once; the seconds it took go to ``out.json``."""
    if out.is_file():
        return out
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    classes = sorted(d.name for d in (data / "labeled").iterdir() if d.is_dir())
    labelled = [(f, c) for c, name in enumerate(classes) for f in sorted((data / "labeled" / name).glob("*.png"))]
    unlabelled = sorted((data / "unlabeled").rglob("*.png"))
    chosen = sorted(np.random.default_rng(seed).choice(len(unlabelled), min(pool, len(unlabelled)), replace=False))
    unlabelled = [unlabelled[i] for i in chosen]
    spread = spread_labels(_pixels([f for f, _ in labelled]), np.array([c for _, c in labelled]), _pixels(unlabelled))
    probs = np.nan_to_num(spread.label_distributions_[len(labelled):])  # [U, C]
    picks = []
    for c, name in enumerate(classes):
        mine = np.flatnonzero(probs.argmax(1) == c)
        picks += [(unlabelled[i], name) for i in mine[np.argsort(-probs[mine, c], kind="stable")][:per_class]]
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "time"])
        writer.writerows((str(f.resolve()), name, "") for f, name in picks)
    out.with_suffix(".json").write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1),
                                                    "picked": len(picks), "pool": len(unlabelled)}) + "\n")
    return out


def train(data: Path, run: Path, seed: int, steps: int, overrides: list[str], threads: int) -> dict:
    """One ``comatch train`` run of the folders; its summary."""
    if not (run / "summary.json").is_file():
        shutil.rmtree(run, ignore_errors=True)
        run.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "comatch", "train", "--labeled", str(data / "labeled"),
                   "--unlabeled", str(data / "unlabeled"), "--test", str(data / "test"), "--out", str(run),
                   "--seed", str(seed), "--iterations", str(steps), f"run.threads={threads}",
                   "run.tensorboard=false", *overrides]
        with open(run.parent / f"{run.name}.log", "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return json.loads((run / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=["digits", "objects"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", nargs="+", required=True, metavar="KIND=N",
                        help="the default's steps in the wall time, per kind")
    parser.add_argument("--data", nargs="*", default=[], metavar="KIND-SEED=DIR", help="folders built already")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (threads each: 2 // P, at least 1)")
    parser.add_argument("--json", default="short_runs.json", help="the result's file name in OUT")
    args = parser.parse_args()
    steps = {k: int(n) for k, n in (item.split("=") for item in args.steps)}
    given = {k: Path(d) for k, d in (item.split("=", 1) for item in args.data)}
    threads = max(1, 2 // args.parallel)
    jobs = []
    for seed in args.seeds:
        for kind in args.kinds:
            data = folders(args.out, kind, seed, given)
            for variant in args.variants:
                overrides, speed = VARIANTS[variant]
                if variant in PROPAGATED:
                    labels = propagated_labels(data, PROPAGATED[variant],
                                               args.out / "runs" / f"{kind}-{variant}-s{seed}-labels.csv", seed)
                    overrides = [*overrides, "--extra-labels", str(labels)]
                jobs.append((kind, variant, seed, data, round(steps[kind] * speed), overrides))

    def run(job: tuple) -> tuple:
        kind, variant, seed, data, n, overrides = job
        summary = train(data, args.out / "runs" / f"{kind}-{variant}-s{seed}", seed, n, overrides, threads)
        print(f"{kind:8s} {variant:14s} seed {seed}: {n} steps, EMA test accuracy "
              f"{summary['test_accuracy_ema']:.4f}", flush=True)
        return kind, variant, seed, n, summary

    with ThreadPoolExecutor(args.parallel) as pool:
        done = list(pool.map(run, jobs))
    runs = [{"kind": k, "variant": v, "seed": s, "steps": n, "test_accuracy_ema": summ["test_accuracy_ema"],
             "test_accuracy": summ.get("test_accuracy"), "wall_seconds": summ.get("wall_seconds")}
            for k, v, s, n, summ in done]
    table: dict = {}
    for kind in args.kinds:
        base = {r["seed"]: r["test_accuracy_ema"] for r in runs if r["kind"] == kind and r["variant"] == "default"}
        for variant in args.variants:
            accs = {r["seed"]: r["test_accuracy_ema"] for r in runs if r["kind"] == kind and r["variant"] == variant}
            diffs = [accs[s] - base[s] for s in accs if s in base]
            table.setdefault(kind, {})[variant] = {
                "mean": statistics.fmean(accs.values()),
                "sd": statistics.stdev(accs.values()) if len(accs) > 1 else None,
                "minus_default": statistics.fmean(diffs) if diffs else None,
                "minus_default_per_seed": diffs,
            }
            row = table[kind][variant]
            print(f"{kind:8s} {variant:14s} {row['mean']:.4f}" + (f" ± {row['sd']:.4f}" if row["sd"] is not None else "")
                  + (f", {row['minus_default'] * 100:+.2f} points against the default ("
                     + ", ".join(f"{d * 100:+.2f}" for d in diffs) + ")" if variant != "default" and diffs else ""))
    result = {"steps": steps, "parallel": args.parallel, "threads": threads, "variants": {v: VARIANTS[v] for v in args.variants},
              "runs": runs, "table": table, "provenance": provenance(threads=threads)}
    (args.out / args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
