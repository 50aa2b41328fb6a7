"""Augmenting several batches at once in a loader without workers, against one by one.

On small images most of a view's cost is the fixed cost of each operation, so a loader that
runs in the training process (no worker processes: the default on up to 4 CPU cores)
augments up to 8 batches together (``StepBatches.augment_group``; the batches are the same, bit for
bit). This script measures, in one process:

- the augmentation of one step (labelled and unlabelled loaders) with groups of 1, 2, 4 and 8,
  each fetch right after a forward + backward of the network on a step's images, as in
  training (a tight loop of fetches alone flatters the small operations: their code and data
  stay in the caches);
- the whole default training step (data, CoMatch, backward, SGD, EMA) of two trainers of the
  default run, one with its loaders in groups and one batch by batch, alternating in blocks of
  8 steps (which one goes first alternates too; each block of the first holds one group's
  augmentation): the median over blocks of the mean step, the median of the paired block
  ratios, and whether both hold the same weights at the end.

    python benchmarks/augment_group.py --fetches 200 --training-steps 400
"""

from __future__ import annotations

import argparse
import statistics
import time

from comatch import openmp

openmp.choose()  # before torch loads: how idle OpenMP threads wait, as `comatch train` chooses it
import torch

from comatch.training.batches import AUGMENT_GROUP
from comatch.training.trainer import Trainer
from digits_network import alternate, default_trainer, same_weights, training_stepper


def trainer_with_group(group: int | None) -> Trainer:
    """A trainer of the default run; ``group`` overrides its loaders' group (None: its own)."""
    def force(trainer: Trainer) -> None:
        trainer.batches.augment_group = lambda batch_size, views: group  # type: ignore[method-assign]

    return default_trainer(None if group is None else force)


def augmentation_per_step(fetches: int, warmup: int) -> dict[int, float]:
    """Median ms per step of fetching both loaders' next batches, by group size."""
    result = {}
    for group in (1, 2, 4, 8):
        trainer = trainer_with_group(group)
        labelled, unlabelled = trainer.loaders()
        images = torch.randint(0, 256, (trainer.images_per_step, trainer.in_channels, 8, 8), dtype=torch.uint8)
        times = []
        for i in range(warmup + fetches):
            logits, _ = trainer.encode(images)
            logits.square().sum().backward()
            t0 = time.perf_counter()
            next(labelled)
            next(unlabelled)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        # the mean, not the median: with groups of 8, seven fetches in eight cost nothing
        result[group] = statistics.fmean(times) * 1e3
    return result


def training_steps(steps: int, warmup: int) -> dict[str, float]:
    """The default run's training step, loaders in groups (their own choice) against one by one."""
    grouped, single = trainer_with_group(None), trainer_with_group(1)
    # blocks of AUGMENT_GROUP steps (one group's augmentation in each), alternating block by
    # block: a single step's time would compare a step that augments with one that does not
    n = AUGMENT_GROUP
    block = lambda step: lambda: sum(step() for _ in range(n)) / n  # noqa: E731
    result = alternate(block(training_stepper(grouped)), block(training_stepper(single)), steps // n, warmup // n)
    result["same_weights"] = same_weights(grouped, single)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fetches", type=int, default=200)
    parser.add_argument("--training-steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads; {openmp.wait}")
    per_step = augmentation_per_step(args.fetches, args.warmup)
    print("augmentation per step, mean of", args.fetches, "fetches after a network step: "
          + ", ".join(f"group {g}: {ms:.2f} ms" for g, ms in per_step.items()), flush=True)
    r = training_steps(args.training_steps, args.warmup)
    print(f"default training step, {args.training_steps // AUGMENT_GROUP} pairs of {AUGMENT_GROUP}-step blocks: in groups {r['first_ms']:.2f} ms, one by one "
          f"{r['second_ms']:.2f} ms, median paired ratio {r['median_paired_ratio']:.3f}; same weights: {r['same_weights']}")


if __name__ == "__main__":
    main()
