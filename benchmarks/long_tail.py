"""Long-tailed digits: distribution alignment towards a uniform vs the labelled-frequency prior.

Class ``c`` keeps ``round(n_max * r^(-c/9))`` images with imbalance ratio ``r`` (``--ratio``,
10: class 0 has ten times the images of class 9), in the labelled part (``n_max`` =
``--head-labels``) and in the unlabelled pool (``n_max`` = every training image of class
0). Validation and test parts stay balanced, so test accuracy is also the balanced accuracy.
Both arms see the same data per seed; only ``comatch.da_prior`` differs.

    PYTHONPATH=src python benchmarks/long_tail.py --seeds 0 1 2 --steps 400 --jobs 2 --out runs/long-tail
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from trust_runs import per_seed, digits_pool, mean_std, parallel, run_data, save, train

CLASSES = 10


def counts(n_max: int, ratio: float) -> list[int]:
    """Images per class: ``round(n_max * ratio^(-c / (C - 1)))``, at least 1."""
    return [max(1, round(n_max * ratio ** (-c / (CLASSES - 1)))) for c in range(CLASSES)]


def long_tail_data(seed: int, ratio: float, head_labels: int):
    """The long-tailed RunData of a seed (the pool subset is fixed; the labelled draw is the seed's)."""
    split = digits_pool()
    labels = split.train_labels.numpy()
    n_max = int(np.bincount(labels).min())
    fixed = np.random.default_rng(20211013)
    keep = np.sort(np.concatenate([fixed.choice(np.flatnonzero(labels == c), n, replace=False)
                                   for c, n in enumerate(counts(n_max, ratio))]))
    images, kept_labels = split.train_images[keep], split.train_labels[keep]
    rng = np.random.default_rng(seed)
    labelled = np.sort(np.concatenate([rng.choice(np.flatnonzero(kept_labels.numpy() == c), n, replace=False)
                                       for c, n in enumerate(counts(head_labels, ratio))]))
    return run_data(images, kept_labels, labelled, CLASSES, (split.val_images, split.val_labels),
                    (split.test_images, split.test_labels))


def one_run(out: Path, seed: int, steps: int, ratio: float, head_labels: int, prior: str) -> dict:
    """Train one arm; test accuracy, macro-F1, accuracy on the five tail classes."""
    from comatch.tools.inference.calibration import macro_f1
    from comatch.tools.inference.checkpoint import evaluate, load_model

    data = long_tail_data(seed, ratio, head_labels)
    train(out, seed, steps, [f"comatch.da_prior={prior}"], data)
    result = evaluate(load_model(out, "ema", "cpu"), data.test)
    per_class = [result["per_class_accuracy"][str(c)] for c in range(CLASSES)]
    return {"accuracy": result["top1"], "macro_f1": macro_f1(result["confusion_matrix"]),
            "tail_accuracy": float(np.mean(per_class[5:])), "head_accuracy": float(np.mean(per_class[:5])),
            "labelled": len(data.labelled), "unlabelled": len(data.unlabelled)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ratio", type=float, default=10.0)
    parser.add_argument("--head-labels", type=int, default=10)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/long-tail"))
    args = parser.parse_args()
    priors = ("uniform", "labelled")
    jobs = [(one_run, (args.out / f"s{s}-{p}", s, args.steps, args.ratio, args.head_labels, p))
            for s in args.seeds for p in priors]
    done = parallel(jobs, args.jobs)
    results = {job[1][0].name: r for job, r in zip(jobs, done)}
    save(results, args.out / "results.json")
    first = results[f"s{args.seeds[0]}-uniform"]
    print(f"labelled {first['labelled']} ({counts(args.head_labels, args.ratio)}), unlabelled {first['unlabelled']}")
    print("| comatch.da_prior | test accuracy = balanced (%) | macro-F1 (%) | tail classes 5-9 (%) | head classes 0-4 (%) | accuracy per seed (%) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p in priors:
        rows = [results[f"s{s}-{p}"] for s in args.seeds]
        print(f"| {p} | {mean_std([r['accuracy'] for r in rows])} | {mean_std([r['macro_f1'] for r in rows])} | "
              f"{mean_std([r['tail_accuracy'] for r in rows])} | {mean_std([r['head_accuracy'] for r in rows])} | "
              f"{per_seed(rows)} |")


if __name__ == "__main__":
    main()
