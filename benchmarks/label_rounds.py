"""Rounds of labelling through ``comatch label``'s decisions file: suggested against random picks.

Digit folders from the ``digits`` generator of ``benchmarks/kinds.py`` (distorted 28x28
renderings of scikit-learn's digits): ``labeled/`` with ``--per-class`` images per class,
``unlabeled/`` with ``--pool`` images whose classes only this harness knows, ``test/``. For each
seed:

1. round 0: ``comatch train --labeled --unlabeled --test`` (``--steps`` steps);
2. each next round, per arm, ``--k`` more images are picked: **suggested** (``comatch
   suggest``'s ranking of the previous round's run) or **random** (uniform over the images not
   yet decided); the harness gives each its true class through
   :meth:`comatch.tools.trust.label.LabelSession.decide`, the call behind the page's keys, which
   appends to the arm's ``labels.csv``;
3. the round's run trains from scratch (same steps, same seed) with ``--extra-labels
   labels.csv``.

With ``--warm-steps W``, a third arm, **warm**, measures what a warm start saves: each round
trains on the suggested arm's decisions of that round, from the previous warm round's
weights (``model.init=PREVIOUS/checkpoints/last.pt``; round 0's for round 1) for only ``W``
steps.

Test accuracy (EMA) and training seconds after each round, per arm and seed, go to ``OUT/results.json`` and a
Markdown table; "labels saved" is how many fewer labels the suggested arm needed to reach the
random arm's final accuracy (linear interpolation between rounds).

    PYTHONPATH=src python benchmarks/label_rounds.py --seeds 0 1 2 --rounds 2 --k 20 --steps 200 \\
        --out runs/label-rounds -- optim.batch_size=8 optim.mu=3
    PYTHONPATH=src python benchmarks/label_rounds.py --seeds 0 1 2 --rounds 2 --k 20 --steps 200 \
        --warm-steps 100 --out runs/label-rounds -- optim.batch_size=8 optim.mu=3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from kinds import DIGIT_CLASSES as CLASSES, distort, save_image, source_digits  # noqa: E402
from provenance import provenance  # noqa: E402


def build(root: Path, per_class: int, pool: int, test: int, seed: int) -> dict[str, str]:
    """Write the folders; returns ``{unlabelled file: true class}``."""
    rng = np.random.default_rng(seed)
    train_src, test_src, train_y, test_y = source_digits(seed)
    truth = {}
    for c in range(10):
        for k, i in enumerate(rng.choice(np.flatnonzero(train_y == c), per_class, replace=False)):
            save_image(distort(train_src[i], rng), root / "labeled" / CLASSES[c] / f"{c}_{k}.png")
    for k, i in enumerate(rng.integers(0, len(train_src), pool)):
        path = root / "unlabeled" / f"u{k:05d}.png"
        save_image(distort(train_src[i], rng), path)
        truth[str(path.absolute())] = CLASSES[train_y[i]]
    for k, i in enumerate(rng.integers(0, len(test_src), test)):
        save_image(distort(test_src[i], rng), root / "test" / CLASSES[test_y[i]] / f"t{k:05d}.png")
    return truth


EXTRA: list[str] = []
"""``comatch train`` arguments given after ``--`` (every run gets them)."""


def train(root: Path, out: Path, seed: int, steps: int, labels: Path | None, log: Path,
          init: Path | None = None) -> tuple[float, float]:
    """One ``comatch train`` run (from ``init``'s weights if given); its EMA test accuracy and
    training seconds."""
    command = [sys.executable, "-m", "comatch", "train", "--labeled", str(root / "labeled"), "--unlabeled",
               str(root / "unlabeled"), "--test", str(root / "test"), "--out", str(out), "--seed", str(seed),
               "--iterations", str(steps), "--device", "cpu", "run.report=false", "run.tensorboard=false", *EXTRA]
    if labels is not None:
        command += ["--extra-labels", str(labels)]
    if init is not None:
        command += [f"model.init={init}"]
    with log.open("a") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, env=os.environ.copy())
    summary = json.loads((out / "summary.json").read_text())
    return float(summary["test_accuracy_ema"]), float(summary["wall_seconds"])


def pick(arm: str, run_dir: Path, truth: dict[str, str], decided: set[str], k: int, seed: int, round_: int) -> list[str]:
    """The next ``k`` files of an arm."""
    if arm == "suggested":
        from comatch.tools.trust.suggest import suggest

        ranked, _ = suggest(run_dir, k, device="cpu")
        return [s.path for s in ranked if s.path not in decided][:k]
    rest = sorted(set(truth) - decided)
    rng = np.random.default_rng(1000 * seed + round_)
    return [rest[i] for i in rng.choice(len(rest), k, replace=False)]


def decide(arm_dir: Path, files: list[str], truth: dict[str, str]) -> None:
    """Give ``files`` their true classes through the page's decision call."""
    from comatch.tools.trust.label import Item, LabelSession

    items = [Item(i, f, Path(f).name, "suggested", i + 1, "", 0.0, 0.0) for i, f in enumerate(files)]
    session = LabelSession(arm_dir, CLASSES, items)
    for item in items:
        session.decide(item.index, truth[item.path])


def one_seed(args: argparse.Namespace, seed: int) -> dict:
    """Round 0 and ``args.rounds`` rounds of each arm."""
    base = args.out / f"seed{seed}"
    root, log = base / "data", base / "log.txt"
    base.mkdir(parents=True, exist_ok=True)
    truth = build(root, args.per_class, args.pool, args.test, seed)
    first, first_seconds = train(root, base / "round0", seed, args.steps, None, log)
    result = {"labels": [10 * args.per_class + r * args.k for r in range(args.rounds + 1)], "seconds": {}}
    for arm in ("suggested", "random"):
        arm_dir, previous, decided, accuracy, seconds = base / arm, base / "round0", set(), [first], [first_seconds]
        arm_dir.mkdir(exist_ok=True)
        for r in range(1, args.rounds + 1):
            files = pick(arm, previous, truth, decided, args.k, seed, r)
            decide(arm_dir, files, truth)
            shutil.copy(arm_dir / "labels.csv", arm_dir / f"labels-round{r}.csv")  # the decisions up to round r
            decided |= set(files)
            previous = arm_dir / f"round{r}"
            acc, secs = train(root, previous, seed, args.steps, arm_dir / "labels.csv", log)
            accuracy.append(acc)
            seconds.append(secs)
            print(f"seed {seed} {arm} round {r}: {len(decided)} decided, accuracy {acc:.4f} ({secs:.0f} s)", flush=True)
        result[arm], result["seconds"][arm] = accuracy, seconds
    if args.warm_steps:
        previous, accuracy, seconds = base / "round0", [first], [first_seconds]
        for r in range(1, args.rounds + 1):
            out = base / "warm" / f"round{r}"
            out.parent.mkdir(exist_ok=True)
            acc, secs = train(root, out, seed, args.warm_steps, base / "suggested" / f"labels-round{r}.csv", log,
                              init=previous / "checkpoints" / "last.pt")
            accuracy.append(acc)
            seconds.append(secs)
            previous = out
            print(f"seed {seed} warm round {r}: {args.warm_steps} steps from the previous round's weights, "
                  f"accuracy {acc:.4f} ({secs:.0f} s)", flush=True)
        result["warm"], result["seconds"]["warm"] = accuracy, seconds
    return result


def labels_to_reach(labels: list[int], accuracy: list[float], target: float) -> float | None:
    """Labels at which a curve first reaches ``target`` (linear between rounds), or None."""
    for i in range(len(labels)):
        if accuracy[i] >= target:
            if i == 0:
                return float(labels[0])
            a0, a1 = accuracy[i - 1], accuracy[i]
            return labels[i - 1] + (labels[i] - labels[i - 1]) * (target - a0) / (a1 - a0)
    return None


def table(results: dict, warm_steps: int | None = None, steps: int | None = None) -> str:
    """Markdown: accuracy per round (mean ± std over seeds) and the labels saved per seed; with
    the warm arm, its accuracy and the training seconds of the rounds after round 0."""
    seeds = sorted(results)
    labels = results[seeds[0]]["labels"]
    warm = all("warm" in results[s] for s in seeds)
    arms = ["suggested", "random"] + (["warm"] if warm else [])
    names = {"suggested": f"suggested ({steps} steps, from scratch)" if steps else "suggested",
             "random": "random", "warm": f"suggested, warm start ({warm_steps} steps)"}
    cell = lambda arm, r: f"{100 * np.mean([results[s][arm][r] for s in seeds]):.1f} ± {100 * np.std([results[s][arm][r] for s in seeds], ddof=1 if len(seeds) > 1 else 0):.1f}"  # noqa: E501,E731
    lines = ["| labels | " + " | ".join(names[a] for a in arms) + " |", "| --- |" + " --- |" * len(arms)]
    for r, n in enumerate(labels):
        lines.append(f"| {n} | " + " | ".join(cell(arm, r) for arm in arms) + " |")
    saved = []
    for s in seeds:
        need = labels_to_reach(labels, results[s]["suggested"], results[s]["random"][-1])
        saved.append("n/a" if need is None else f"{labels[-1] - need:.0f}")
    lines.append("")
    lines.append(f"Labels saved to reach the random arm's final accuracy, per seed {seeds}: {', '.join(saved)}")
    if warm:
        later = lambda arm: np.median([t for s in seeds for t in results[s]["seconds"][arm][1:]])  # noqa: E731
        lines.append(f"Training seconds of a later round (median): from scratch {later('suggested'):.0f} s, "
                     f"warm start {later('warm'):.0f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--k", type=int, default=20, help="labels per round")
    parser.add_argument("--per-class", type=int, default=2, help="labelled images per class in round 0")
    parser.add_argument("--pool", type=int, default=1000, help="unlabelled images")
    parser.add_argument("--test", type=int, default=500, help="test images")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warm-steps", type=int, help="add the warm-start arm, with this many steps per later round")
    parser.add_argument("--out", type=Path, default=Path("runs/label-rounds"))
    parser.add_argument("extra", nargs="*", help="after --: comatch train arguments for every run")
    args = parser.parse_args()
    EXTRA.extend(args.extra)
    results = {}
    for seed in args.seeds:
        results[seed] = one_seed(args, seed)
        record = {"seeds": {str(k): v for k, v in results.items()}, "provenance": provenance(steps=args.steps,
                  warm_steps=args.warm_steps, rounds=args.rounds, k=args.k, train_arguments=args.extra,
                  numerics="fast (the CPU's own kernels)")}
        (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
        print(table(results, args.warm_steps, args.steps), flush=True)


if __name__ == "__main__":
    main()
