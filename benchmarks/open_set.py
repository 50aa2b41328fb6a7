"""Open-set digits: unlabelled images of classes that have no labels.

The labelled classes are 0-5 (``--labels-per-class`` each, the seed's draw); the unlabelled
pool holds every training image of classes 0-5 and of 6-9 (about 40 % of the pool, with
their truth hidden), the validation and test parts only classes 0-5. For each seed:

* **without exclusion**: the digits preset on this data; afterwards the OOD score of
  :mod:`comatch.tools.trust.ood` is computed with the trained EMA model, and its AUROC for
  separating the 6-9 images from the 0-5 images is measured;
* **with exclusion**: the same with ``data.exclude_outliers=FRACTION``, scored with the
  initial network's features before training (its AUROC, and the share of 6-9 images among
  the images left out, are measured too).

    PYTHONPATH=src python benchmarks/open_set.py --seeds 0 1 2 --steps 400 --fraction 0.3 \\
        --jobs 2 --out runs/open-set
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trust_runs import per_seed, digits_pool, mean_std, parallel, run_data, save, train  # first: pins the numerics

import torch  # noqa: E402

KNOWN = 6  # classes 0-5 have labels


def open_set_data(seed: int, per_class: int):
    """The open-set RunData and which pool rows are unknown-class images."""
    from comatch.data.sampling import select_labelled

    split = digits_pool()
    labels = split.train_labels
    unknown = labels >= KNOWN
    hidden = torch.where(unknown, torch.full_like(labels, -1), labels)
    labelled = select_labelled(hidden.numpy(), per_class, seed, [str(c) for c in range(KNOWN)])
    keep = lambda x, y: (x[y < KNOWN], y[y < KNOWN])  # noqa: E731
    data = run_data(split.train_images, hidden, labelled, KNOWN, keep(split.val_images, split.val_labels),
                    keep(split.test_images, split.test_labels))
    return data, unknown


def one_run(out: Path, seed: int, steps: int, per_class: int, fraction: float) -> dict:
    """Train one arm; AUROC of the trained model's score and of the initial network's."""
    from comatch.tools.inference.checkpoint import load_model
    from comatch.tools.trust.ood import score_pool
    from comatch.tools.trust.scores import auroc

    data, unknown = open_set_data(seed, per_class)
    overrides = [f"data.exclude_outliers={fraction}"] if fraction else []
    summary = train(out, seed, steps, overrides, data)
    result = {"accuracy": summary["test_accuracy_ema"], "fraction": fraction}
    data, unknown = open_set_data(seed, per_class)  # the full pool again
    loaded = load_model(out, "ema", "cpu")
    scored = score_pool(loaded.model, data, loaded.eval_view(), loaded.preprocess(), loaded.temperature)
    result["auroc_trained"] = auroc(scored.scores, unknown[torch.as_tensor(scored.rows)])
    if fraction:
        dropped = json.loads((out / "outliers.json").read_text())["rows"]
        result["dropped"] = len(dropped)
        result["dropped_unknown_share"] = float(unknown[dropped].float().mean())
        result["unknown_share_of_pool"] = float(unknown[torch.as_tensor(scored.rows)].float().mean())
        result["auroc_initial"] = initial_auroc(seed, per_class, data, unknown)
    return result


def initial_auroc(seed: int, per_class: int, data, unknown: torch.Tensor) -> float:
    """AUROC of the score the exclusion uses: the initial network's centred encoder features."""
    from comatch import config as cfg
    from comatch.data.preprocessing import Normalizer, eval_view
    from comatch.models import build_model
    from comatch.tools.trust.ood import score_pool
    from comatch.tools.trust.scores import auroc
    from comatch.training.runtime import seed_everything

    config = cfg.build_config(preset="digits", seed=seed)
    seed_everything(seed)
    model = build_model(config.model.arch, KNOWN, in_channels=1, proj_dim=config.model.proj_dim)
    view = eval_view(config, 8)
    scored = score_pool(model, data, view, Normalizer(data.mean, data.std, 1, torch.device("cpu")), use_features=True)
    return auroc(scored.scores, unknown[torch.as_tensor(scored.rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels-per-class", type=int, default=4)
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/open-set"))
    args = parser.parse_args()
    jobs = [(one_run, (args.out / f"s{s}-{'excl' if f else 'all'}", s, args.steps, args.labels_per_class, f))
            for s in args.seeds for f in (0.0, args.fraction)]
    done = parallel(jobs, args.jobs)
    results = {f"{job[1][0].name}": r for job, r in zip(jobs, done)}
    save(results, args.out / "results.json")
    base = [results[f"s{s}-all"] for s in args.seeds]
    excl = [results[f"s{s}-excl"] for s in args.seeds]
    print("| | without exclusion | with exclusion |")
    print("| --- | --- | --- |")
    print(f"| test accuracy, classes 0-5 (%) | {mean_std([r['accuracy'] for r in base])} | {mean_std([r['accuracy'] for r in excl])} |")
    print(f"| per seed (%) | {per_seed(base)} | {per_seed(excl)} |")
    print(f"| AUROC of the score, trained EMA model | {mean_std([r['auroc_trained'] for r in base])} | {mean_std([r['auroc_trained'] for r in excl])} |")
    print(f"| AUROC of the score, initial network (what exclusion uses) | | {mean_std([r['auroc_initial'] for r in excl])} |")
    print(f"| share of 6-9 among the images left out (%) | | {mean_std([r['dropped_unknown_share'] for r in excl])} "
          f"(pool: {100 * excl[0]['unknown_share_of_pool']:.1f}) |")


if __name__ == "__main__":
    main()
