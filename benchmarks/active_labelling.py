"""Labelling rounds on digits: K images chosen by `comatch suggest` vs K drawn at random.

Round 0 trains the digits preset from ``--start`` labels per class (the seed's draw). Each
later round adds K labels to the previous round's list and trains again from scratch, both
strategies from the same round-0 run and with the same budget:

* suggested: the K first images of ``comatch suggest`` on the previous round's run (its
  uncertainty-weighted k-centre ranking);
* random: K images drawn uniformly from the images not yet labelled.

The labels come from the dataset (a simulated annotator), through ``data.labeled_list``.

    PYTHONPATH=src python benchmarks/active_labelling.py --seeds 0 1 2 --rounds 2 --k 10 \\
        --steps 300 --jobs 2 --out runs/active
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from trust_runs import mean_std, parallel, save, train


def round_run(out: Path, seed: int, steps: int, labelled: list[int]) -> dict:
    """Train one round from the labelled list; test accuracy of the EMA model."""
    out.mkdir(parents=True, exist_ok=True)
    listing = out.parent / f"{out.name}.labelled.json"
    listing.write_text(json.dumps(labelled))
    summary = train(out, seed, steps, [f"data.labeled_list={listing}"])
    return {"labels": len(labelled), "accuracy": summary["test_accuracy_ema"]}


def suggested(run_dir: Path, k: int) -> list[int]:
    """The pool indices ``comatch suggest`` ranks first for a finished run."""
    from comatch.tools.trust.suggest import suggest

    picks, _ = suggest(run_dir, k, device="cpu")
    return [s.index for s in picks]


def random_picks(labelled: list[int], k: int, seed: int, round_: int) -> list[int]:
    """``k`` pool indices not yet labelled, drawn with the seed and round."""
    from comatch.data.digits import load_digits_split

    pool = len(load_digits_split(20).train_labels)
    free = np.setdiff1d(np.arange(pool), labelled)
    return np.random.default_rng(1000 * seed + round_).choice(free, k, replace=False).tolist()


def initial_list(seed: int, per_class: int) -> list[int]:
    from comatch.data.digits import load_digits_split
    from comatch.data.sampling import select_labelled

    return select_labelled(load_digits_split(20).train_labels.numpy(), per_class, seed).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--start", type=int, default=2, help="labels per class in round 0")
    parser.add_argument("--k", type=int, default=10, help="labels added per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds after round 0")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/active"))
    args = parser.parse_args()
    lists = {s: initial_list(s, args.start) for s in args.seeds}
    first = parallel([(round_run, (args.out / f"s{s}-r0", s, args.steps, lists[s])) for s in args.seeds], args.jobs)
    results = {s: {"suggested": [first[i]], "random": [first[i]]} for i, s in enumerate(args.seeds)}
    current = {(s, strategy): lists[s] for s in args.seeds for strategy in ("suggested", "random")}
    previous = {(s, strategy): args.out / f"s{s}-r0" for s in args.seeds for strategy in ("suggested", "random")}
    for r in range(1, args.rounds + 1):
        jobs = []
        for s in args.seeds:
            for strategy in ("suggested", "random"):
                key = (s, strategy)
                picks = suggested(previous[key], args.k) if strategy == "suggested" else \
                    random_picks(current[key], args.k, s, r)
                current[key] = current[key] + picks
                previous[key] = args.out / f"s{s}-r{r}-{strategy}"
                jobs.append((round_run, (previous[key], s, args.steps, current[key])))
        done = parallel(jobs, args.jobs)
        for (fn, job_args), result in zip(jobs, done):
            strategy = job_args[0].name.rsplit("-", 1)[1]
            results[job_args[1]][strategy].append(result)
    save({str(s): v for s, v in results.items()}, args.out / "results.json")
    print_table(results, args)
    plot(results, args.out / "active-labelling.png")


def print_table(results: dict, args: argparse.Namespace) -> None:
    labels = [r["labels"] for r in next(iter(results.values()))["suggested"]]
    print("| labels | random (mean ± std, %) | suggested (mean ± std, %) | suggested − random per seed (points) |")
    print("| --- | --- | --- | --- |")
    for i, n in enumerate(labels):
        rand = [results[s]["random"][i]["accuracy"] for s in results]
        sugg = [results[s]["suggested"][i]["accuracy"] for s in results]
        diffs = ", ".join(f"{100 * (a - b):+.1f}" for a, b in zip(sugg, rand))
        print(f"| {n} | {mean_std(rand)} | {mean_std(sugg)} | {diffs} |")


def plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for strategy in ("random", "suggested"):
        table = np.array([[r["accuracy"] for r in results[s][strategy]] for s in results]) * 100  # [seeds, rounds]
        labels = [r["labels"] for r in next(iter(results.values()))[strategy]]
        ax.errorbar(labels, table.mean(0), yerr=table.std(0, ddof=1) if len(table) > 1 else None,
                    marker="o", capsize=3, label=f"{strategy} ({len(table)} seeds, mean ± std)")
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy, EMA model (%)")
    ax.set_title("digits: labelling rounds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
