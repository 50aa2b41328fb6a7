"""Which network a CPU run of your own folders should train at each image size: the step's cost, measured.

For each image side and each CPU network (``digits_cnn``, ``wrn10_1``, ``resnet18``), builds the
run that ``comatch train --labeled ... --unlabeled ...`` would build for colour images of that side
on this machine (:func:`comatch.training.defaults.choose_defaults`, with the network set), and
times the trainer's own CoMatch step on random images (speed does not depend on content), as
``step_time.py`` does. The networks of one side take turns, a block of steps each, for several
rounds, so they see the same machine; the result is each one's median step, its images per
second (labelled and unlabelled images of a step over its time), and the network the defaults
choose (:func:`comatch.training.defaults.choose_network`).

    python benchmarks/network_per_size.py --sizes 16 32 48 64 --rounds 3 --json out.json

A network that is cheaper per step is not better: how many steps a run gets is one side of the
choice, what a step teaches the other (``short_runs.py`` measures that at equal wall time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from comatch import numerics, openmp

numerics.pin("fast")  # before torch loads: the numerics `comatch train` uses by default
openmp.choose()  # before torch loads: how idle OpenMP threads wait, as `comatch train` chooses it
import torch

from comatch import config as cfg
from comatch.training.defaults import Situation, choose_defaults, choose_network
from comatch.training.runtime import usable_cpus
from comatch.training.trainer import Trainer

from step_time import random_data, time_steps

ARCHS = ("digits_cnn", "wrn10_1", "resnet18")


def build(arch: str, size: int, out: Path) -> Trainer:
    """The trainer a folder run of 10 classes of ``size`` px colour images (100 labelled, 20,000
    unlabelled, 15 minutes' steps) would build with ``model.arch=arch``."""
    situation = Situation(device="cpu", cpu_cores=usable_cpus(), image_size=size, channels=3,
                          num_labelled=100, num_unlabelled=20_000, iterations=3_000)
    chosen = choose_defaults(situation, {"model.arch": arch, "data.image_size": size})
    overrides = [*chosen.as_override_strings(), f"model.arch={arch}", f"data.image_size={size}",
                 "run.tensorboard=false", "run.fit_to_length=[]"]
    config = cfg.build_config("folder", overrides=overrides)
    return Trainer(config, out, data=random_data(3, size, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[16, 32, 48, 64])
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--rounds", type=int, default=3, help="turns each network takes per side")
    parser.add_argument("--blocks", type=int, default=1, help="blocks of steps per turn (a block: the batches "
                                                               "the loaders augment at once)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            trainers = {arch: build(arch, size, Path(tmp) / f"{arch}-{size}") for arch in args.archs}
            steps: dict[str, list[float]] = {arch: [] for arch in args.archs}
            for turn in range(args.rounds):
                for arch, trainer in trainers.items():
                    group = trainer.batches.largest_group()  # steps whose batches the loaders augment at once
                    phases, _, _ = time_steps(trainer, args.blocks * group, warmup=group if turn == 0 else 0)
                    steps[arch] += phases["step"]
            chosen = choose_network("cpu", size, 10)[0]
            for arch, trainer in trainers.items():
                o, images = trainer.config.optim, trainer.images_per_step
                median = statistics.median(steps[arch])
                row = {"size": size, "arch": arch, "chosen": arch == chosen, "batch_size": o.batch_size, "mu": o.mu,
                       "images_per_step": images, "step_median_s": median, "step_min_s": min(steps[arch]),
                       "step_max_s": max(steps[arch]), "images_per_sec": images / median,
                       "parameters": sum(p.numel() for p in trainer.model.parameters()),
                       "precision": trainer.precision.mode}
                rows.append(row)
                print(f"{size:3d} px {arch:10s}{' (chosen)' if row['chosen'] else '         '} B={o.batch_size:2d} "
                      f"mu={o.mu}: step {median * 1e3:7.1f} ms (min {row['step_min_s'] * 1e3:.1f}, "
                      f"max {row['step_max_s'] * 1e3:.1f}), {row['images_per_sec']:6.0f} images/s, "
                      f"{row['parameters'] / 1e6:.2f} M parameters, {row['precision']}", flush=True)
    if args.json:
        from provenance import provenance  # benchmarks/provenance.py, beside this script

        args.json.write_text(json.dumps({"rows": rows, "rounds": args.rounds, "blocks": args.blocks,
                                         "provenance": provenance(threads=torch.get_num_threads())}, indent=2) + "\n")


if __name__ == "__main__":
    main()
