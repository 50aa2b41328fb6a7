"""Accuracy grid: methods x labels per class x seeds on any preset, with a table and a plot.

Every cell is one `comatch train` run in its own directory under OUT/runs. A cell whose run
finished is read back, not rerun, so an interrupted grid continues where it stopped. Several
cells run at once (--jobs), each with its share of the CPU threads.

    python benchmarks/accuracy.py --preset digits --labels 1 2 4 --seeds 0 1 2 \
        --iterations 600 --jobs 2 --out docs/results/digits

Writes OUT/results.csv (one row per run), OUT/summary.csv and OUT/summary.md (mean and
standard deviation per method and label count), OUT/accuracy.png, and OUT/provenance.json
(the command, the commit, the torch version, the threads per run, the numerics and the CPU model).
Runs use ``run.numerics=portable`` unless ``--numerics fast`` is given: a portable run computes the
same bits on any x86-64 CPU for the same code, torch build and thread count, so anyone can rerun a
cell and get its row exactly.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# Each method is the comatch CLI's --method plus config overrides (the ablation switches of docs/method.md).
METHODS: dict[str, list[str]] = {
    "supervised": ["--method", "supervised"],
    "mixmatch": ["--method", "mixmatch"],
    "fixmatch": ["--method", "fixmatch"],
    "comatch": ["--method", "comatch"],
    "comatch-no-smoothing": ["--method", "comatch", "comatch.smoothing=false"],
    "comatch-no-graph-loss": ["--method", "comatch", "comatch.contrastive=false"],
    "comatch-self-loop-graph": ["--method", "comatch", "comatch.self_loop_only=true"],
    "comatch-no-alignment": ["--method", "comatch", "comatch.alignment=false"],
    "comatch-hard-labels": ["--method", "comatch", "comatch.hard_labels=true"],
}
FRACTIONS = (0.25, 0.5, 1.0)
TARGET = 0.90


def cell_dir(out: Path, method: str, labels: int, seed: int) -> Path:
    return out / "runs" / f"{method}-l{labels}-s{seed}"


def finished(run: Path) -> bool:
    summary = run / "summary.json"
    return summary.exists() and not json.loads(summary.read_text()).get("stopped", False)


def run_cell(args: argparse.Namespace, method: str, labels: int, seed: int, threads: int) -> Path:
    """Train one cell (resuming a partial run) unless it already finished."""
    run = cell_dir(args.out, method, labels, seed)
    if finished(run):
        return run
    common = [f"run.numerics={args.numerics}", f"run.threads={threads}", "run.tensorboard=false",
              f"run.eval_every={args.eval_every}",
              f"run.log_every={max(1, args.eval_every // 2)}",
              "data.num_workers=1", *args.override]
    if (run / "checkpoints" / "last.pt").exists() or (run / "checkpoints" / "previous.pt").exists():
        cmd = ["train", "--resume", str(run)]
    else:
        shutil.rmtree(run, ignore_errors=True)  # a run that died before its first checkpoint
        cmd = ["train", "--preset", args.preset, "--seed", str(seed), "--out", str(run),
               f"data.labels_per_class={labels}", *METHODS[method], *common]
        if args.iterations:
            cmd += ["--iterations", str(args.iterations)]
    run.parent.mkdir(parents=True, exist_ok=True)
    with (run.parent / f"{run.name}.log").open("w") as log:
        subprocess.run([sys.executable, "-m", "comatch", *cmd], stdout=log, stderr=subprocess.STDOUT, check=True)
    return run


def knn_scores(run: Path) -> dict[str, float]:
    """kNN test accuracy of the final EMA encoder features and projection embeddings.

    The kNN memory is the run's whole training pool with its true labels: this measures how
    well the representation separates classes, not what the semi-supervised model predicts.
    """
    import torch

    from comatch import config as cfg
    from comatch.data.loaders import eval_loader
    from comatch.tools.report.representation import encode, knn_accuracy
    from comatch.training.trainer import Trainer

    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    config = cfg.validate(state["config"])
    trainer = Trainer(config, run)
    trainer.ema.load_state_dict(state["ema"])
    model, view, norm = trainer.ema.module, trainer.eval_view, trainer.normalize
    train = encode(model, eval_loader(trainer.data.unlabelled, view), norm)
    test = encode(model, eval_loader(trainer.data.test, view), norm)
    return {"knn_features": knn_accuracy(train[0], train[2], test[0], test[2]),
            "knn_embeddings": knn_accuracy(train[1], train[2], test[1], test[2])}


def cell_row(run: Path, method: str, labels: int, seed: int) -> dict[str, Any]:
    """One results row: final accuracy, time to 90%, pseudo-label stats along the run, kNN."""
    summary = json.loads((run / "summary.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    trains = [r for r in records if r["kind"] == "train"]
    total = summary["iterations"]
    reached = next((r["step"] for r in evals if r["test_acc_ema"] >= TARGET), None)
    row: dict[str, Any] = {
        "method": method, "labels_per_class": labels, "seed": seed,
        "test_acc_ema": summary["test_accuracy_ema"], "test_acc": summary["test_accuracy"],
        "val_acc_ema": summary.get("val_accuracy_ema"),
        "steps_to_90": reached,
        "seconds_to_90": None if reached is None else summary["wall_seconds"] * reached / total,
        "wall_seconds": summary["wall_seconds"],
    }
    for fraction in FRACTIONS:
        step = round(fraction * total)
        nearest = min(trains, key=lambda r: abs(r["step"] - step)) if trains else {}
        tag = f"{int(fraction * 100)}"
        row[f"pl_acc@{tag}%"] = nearest.get("pseudo_label_acc")
        row[f"mask@{tag}%"] = nearest.get("mask_rate")
    knn_file = run / "knn.json"
    if not knn_file.exists():
        knn_file.write_text(json.dumps(knn_scores(run)))
    row.update(json.loads(knn_file.read_text()))
    return row


def mean_sd(values: list[float | None]) -> tuple[float | None, float | None, int]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None, 0
    return statistics.mean(present), (statistics.stdev(present) if len(present) > 1 else 0.0), len(present)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of every numeric column, per method and labels."""
    keys = [k for k in rows[0] if k not in ("method", "labels_per_class", "seed")]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["labels_per_class"]), []).append(row)
    table = []
    for (method, labels), members in groups.items():
        entry: dict[str, Any] = {"method": method, "labels_per_class": labels, "runs": len(members)}
        for key in keys:
            mean, sd, n = mean_sd([m[key] for m in members])
            entry[f"{key}_mean"], entry[f"{key}_sd"] = mean, sd
            if key == "steps_to_90":
                entry["reached_90"] = f"{n}/{len(members)}"
        table.append(entry)
    return table


def fmt(mean: float | None, sd: float | None, percent: bool = True) -> str:
    if mean is None:
        return "-"
    if percent:
        return f"{mean:.1%} ± {sd:.1%}"
    return f"{mean:.0f} ± {sd:.0f}"


def markdown(table: list[dict[str, Any]]) -> str:
    head = ("| method | labels/class | EMA test acc | steps to 90% (reached) | s to 90% | "
            "PL acc @25/50/100% | mask @25/50/100% | kNN features | kNN embeddings | wall s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for e in table:
        pl = " / ".join("-" if e[f"pl_acc@{t}%_mean"] is None else f"{e[f'pl_acc@{t}%_mean']:.1%}" for t in (25, 50, 100))
        mask = " / ".join("-" if e[f"mask@{t}%_mean"] is None else f"{e[f'mask@{t}%_mean']:.2f}" for t in (25, 50, 100))
        lines.append(
            f"| {e['method']} | {e['labels_per_class']} | {fmt(e['test_acc_ema_mean'], e['test_acc_ema_sd'])} | "
            f"{fmt(e['steps_to_90_mean'], e['steps_to_90_sd'], False)} ({e['reached_90']}) | "
            f"{fmt(e['seconds_to_90_mean'], e['seconds_to_90_sd'], False)} | {pl} | {mask} | "
            f"{fmt(e['knn_features_mean'], e['knn_features_sd'])} | "
            f"{fmt(e['knn_embeddings_mean'], e['knn_embeddings_sd'])} | "
            f"{fmt(e['wall_seconds_mean'], e['wall_seconds_sd'], False)} |"
        )
    return "\n".join(lines) + "\n"


def plot(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(e["method"] for e in table):
        entries = sorted((e for e in table if e["method"] == method), key=lambda e: e["labels_per_class"])
        ax.errorbar([e["labels_per_class"] for e in entries], [100 * e["test_acc_ema_mean"] for e in entries],
                    yerr=[100 * e["test_acc_ema_sd"] for e in entries], marker="o", capsize=3, label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labels per class")
    ax.set_ylabel("final EMA test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def build_parser() -> argparse.ArgumentParser:
    """The grid's command line (tests/test_evidence.py parses the recorded command with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="digits")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--labels", type=int, nargs="+", default=[1, 2, 4], help="labels per class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, help="training steps per run (default: the preset's)")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at once")
    parser.add_argument("--threads", type=int, help="CPU threads per run (default: the CPUs shared by the jobs); "
                        "the results depend on it in the last digits")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--numerics", choices=("portable", "fast"), default="portable",
                        help="run.numerics of every run (portable: the same bits on any x86-64 CPU)")
    parser.add_argument("override", nargs="*", help="key=value overrides applied to every run")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    from comatch import numerics

    numerics.pin(args.numerics)  # before torch loads here (the kNN scores evaluate the runs in this process)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    args.out.mkdir(parents=True, exist_ok=True)
    from provenance import provenance  # benchmarks/provenance.py, beside this script

    (args.out / "provenance.json").write_text(json.dumps(provenance(threads_per_run=threads, numerics=args.numerics), indent=2) + "\n")
    cells = [(m, n, s) for n in args.labels for m in args.methods for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda c: run_cell(args, *c, threads), cells))
    rows = [cell_row(run, *cell) for run, cell in zip(runs, cells)]
    table = aggregate(rows)
    write_csv(rows, args.out / "results.csv")
    write_csv(table, args.out / "summary.csv")
    (args.out / "summary.md").write_text(markdown(table))
    plot(table, args.out / "accuracy.png")
    print(markdown(table))


if __name__ == "__main__":
    main()
