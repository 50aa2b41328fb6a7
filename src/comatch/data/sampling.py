"""Index sampling: per-class labelled subsets and endless, resumable samplers."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from comatch.errors import UserError


def select_labelled(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Draw ``per_class`` indices of every class with ``seed`` (same seed, same subset).

    Args:
        labels: class index of every candidate ``[N]``.
        per_class: labelled images wanted per class.
        seed: the run's seed.

    Returns:
        Sorted indices into ``labels``.

    Raises:
        UserError: a class has fewer than ``per_class`` images.
    """
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise UserError(
                f"class {cls} has only {len(members)} images but {per_class} labels per class "
                f"were asked for; lower data.labels_per_class"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def labels_per_class(num_labels: int, num_classes: int) -> int:
    """Labels per class for a balanced total of ``num_labels``; it must divide evenly."""
    if num_labels % num_classes:
        raise UserError(
            f"data.num_labels={num_labels} cannot be split evenly over {num_classes} classes; "
            f"use a multiple of {num_classes}"
        )
    return num_labels // num_classes


class InfiniteSampler(Sampler[tuple[int, int]]):
    """Endless shuffled passes over ``range(size)``; never runs dry.

    Each pass is a fresh permutation drawn from ``(seed, pass number)``, so the stream is a
    pure function of the seed: a sampler restarted at ``start`` continues exactly where an
    earlier one stopped. Yields ``(index, draw)`` where ``draw`` is the position in the
    stream; datasets seed each sample's augmentation from it, which makes augmentation
    independent of the number of workers and exactly reproducible on resume.

    Args:
        size: number of samples.
        seed: seed of the permutations.
        start: position in the stream to start from.
    """

    def __init__(self, size: int, seed: int, start: int = 0) -> None:
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.start = size, seed, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        draw = self.start
        while True:
            epoch, offset = divmod(draw, self.size)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
            for index in order[offset:]:
                yield index, draw
                draw += 1

    def __len__(self) -> int:  # DataLoader asks; an endless sampler has no length.
        raise TypeError("InfiniteSampler is endless")
