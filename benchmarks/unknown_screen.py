"""Screening unlabelled images of classes that have no labels: which score, how well.

Two kinds of data, classes 0-5 labelled and the unlabelled pool holding all ten classes
(6-9: the "unknown" images, truth hidden from training):

* ``digits``: scikit-learn's 8x8 digits in memory (``benchmarks/open_set.py``'s split,
  ``--per-class`` labels per known class);
* ``folders``: generated 28x28 digit folders (``benchmarks/kinds.py``'s digits),
  ``labeled/`` with classes 0-5 only, ``unlabeled/`` with all ten, a ``comatch train`` run.

After training, each candidate score is computed on the pool with the EMA model, and its AUROC
for telling unknown-class images from known ones:

* ``confidence``: 1 - the top calibrated probability (what ``predict --unknown-threshold`` uses);
* ``energy``: ``-T logsumexp(logits / T)``;
* ``ood``: the report's score (:func:`comatch.tools.trust.scores.ood_scores`);
* ``prototype``: :mod:`comatch.tools.trust.screen`'s score, 1 - cosine similarity of the
  embedding to the nearest class prototype (labelled and confidently pseudo-labelled images).

and, for the screen, the share of unknown and known images flagged at its operating point (the
threshold that passes 95 % of its reference images).

    PYTHONPATH=src python benchmarks/unknown_screen.py --kinds digits folders --seeds 0 1 2 --steps 300 \
        --out runs/unknown-screen -- optim.batch_size=8 optim.mu=3

The digits runs train in this process in portable numerics (``trust_runs``: the same bits on
any x86-64 CPU); the folder runs are ``comatch train`` commands in the default fast numerics,
so their bits follow the CPU and their spread over seeds is what carries to another machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import trust_runs  # noqa: E402,F401 - first: pins portable numerics before torch loads (the digits runs)
from provenance import provenance  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

KNOWN = 6


def digits_run(out: Path, seed: int, steps: int, per_class: int):
    """Train on in-memory digits with classes 6-9 unlabelled; (run data, unknown mask)."""
    from open_set import open_set_data
    from trust_runs import train

    data, unknown = open_set_data(seed, per_class)
    if not (out / "summary.json").is_file():
        train(out, seed, steps, [], data)
    data, unknown = open_set_data(seed, per_class)
    return data, unknown


def folder_run(out: Path, seed: int, steps: int, per_class: int, pool: int, extra: list[str]):
    """Generated digit folders, classes 0-5 labelled; (run data, unknown mask)."""
    from kinds import DIGIT_CLASSES as CLASSES, distort, save_image, source_digits
    from comatch.tools.trust.pool import saved_run_data
    from comatch.tools.trust.suggest import run_config

    root = out.parent / f"{out.name}-data"
    truth: dict[str, int] = {}
    rng = np.random.default_rng(seed)
    train_src, test_src, train_y, test_y = source_digits(seed)
    for c in range(KNOWN):
        for k, i in enumerate(rng.choice(np.flatnonzero(train_y == c), per_class, replace=False)):
            save_image(distort(train_src[i], rng), root / "labeled" / CLASSES[c] / f"{c}_{k}.png")
    for k, i in enumerate(rng.integers(0, len(train_src), pool)):
        path = root / "unlabeled" / f"u{k:05d}.png"
        save_image(distort(train_src[i], rng), path)
        truth[str(path.absolute())] = int(train_y[i])
    known_test = np.flatnonzero(test_y < KNOWN)
    for k, i in enumerate(rng.choice(known_test, 300)):
        save_image(distort(test_src[i], rng), root / "test" / CLASSES[test_y[i]] / f"t{k:05d}.png")
    if not (out / "summary.json").is_file():
        command = [sys.executable, "-m", "comatch", "train", "--labeled", str(root / "labeled"), "--unlabeled",
                   str(root / "unlabeled"), "--test", str(root / "test"), "--out", str(out), "--seed", str(seed),
                   "--iterations", str(steps), "--device", "cpu", "run.report=false", "run.tensorboard=false", *extra]
        with (out.parent / f"{out.name}.log").open("w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    data = saved_run_data(run_config(out), out)
    unknown = torch.tensor([truth.get(p, 0) >= KNOWN for p in data.unlabelled.paths])
    return data, unknown


def measure(out: Path, data, unknown: torch.Tensor) -> dict:
    """AUROC of each score, and the screen's flagged rates at its operating point."""
    from comatch.tools.inference.checkpoint import load_model
    from comatch.tools.trust.pool import candidate_rows, outputs_on
    from comatch.tools.trust.scores import auroc, ood_scores
    from comatch.tools.trust.screen import fit_screen
    from torch.utils.data import Subset

    loaded = load_model(out, "ema", "cpu")
    rows = candidate_rows(data)
    view, prep = loaded.eval_view(), loaded.preprocess()
    pool = outputs_on(loaded.model, Subset(data.unlabelled, rows.tolist()), view, prep)
    labelled = outputs_on(loaded.model, data.labelled, view, prep)
    t = loaded.temperature
    probs = torch.softmax(pool.logits.double() / t, 1).float()
    truth = unknown[torch.as_tensor(rows)]
    screen = fit_screen(labelled.z, labelled.labels, pool.z, probs, loaded.class_names)
    flagged = screen.flags(pool.z)
    scores = {
        "confidence": 1 - probs.max(1).values,
        "energy": -t * torch.logsumexp(pool.logits.double() / t, 1),
        "ood": ood_scores(pool.z, probs, labelled.z),
        "prototype": screen.scores(pool.z),
    }
    result = {name: auroc(s, truth) for name, s in scores.items()}
    result["threshold"] = screen.threshold
    result["flagged_unknown"] = float(flagged[truth].float().mean())
    result["flagged_known"] = float(flagged[~truth].float().mean())
    for p in (0.5, 0.7, 0.9):  # what predict --unknown-threshold P flags
        below = probs.max(1).values < p
        result[f"confidence_{p}_unknown"] = float(below[truth].float().mean())
        result[f"confidence_{p}_known"] = float(below[~truth].float().mean())
    result["unknown_share"] = float(truth.float().mean())
    result["accuracy"] = json.loads((out / "summary.json").read_text())["test_accuracy_ema"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=["digits", "folders"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("runs/unknown-screen"))
    parser.add_argument("extra", nargs="*", help="after --: comatch train arguments of the folder runs")
    args = parser.parse_args()
    results: dict = {}
    path = args.out / "results.json"
    if path.is_file():
        results = json.loads(path.read_text())
    for kind in args.kinds:
        for seed in args.seeds:
            key = f"{kind}/seed{seed}"
            if key in results:
                continue
            out = args.out / kind / f"seed{seed}"
            out.parent.mkdir(parents=True, exist_ok=True)
            data, unknown = digits_run(out, seed, args.steps, args.per_class) if kind == "digits" else \
                folder_run(out, seed, args.steps, args.per_class, args.pool, args.extra)
            results[key] = measure(out, data, unknown)
            results["provenance"] = provenance(
                steps=args.steps, per_class=args.per_class, pool=args.pool, train_arguments=args.extra,
                numerics="digits: portable, one thread per run; folders: fast (the CPU's own kernels)")
            path.write_text(json.dumps(results, indent=2) + "\n")
            print(key, json.dumps(results[key]), flush=True)
    names = ["confidence", "energy", "ood", "prototype", "flagged_unknown", "flagged_known"]
    for kind in args.kinds:
        rows = [v for k, v in results.items() if k.startswith(kind + "/")]
        cells = [f"{name} {100 * np.mean([r[name] for r in rows]):.1f} ± {100 * np.std([r[name] for r in rows]):.1f}"
                 for name in names]
        print(f"{kind} ({len(rows)} seeds): " + ", ".join(cells))


if __name__ == "__main__":
    main()
