"""Index sampling: per-class labelled subsets and endless, resumable samplers."""

from __future__ import annotations

import numpy as np
import torch

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


class IndexStream:
    """Endless shuffled passes over ``range(size)``, cut into batches; never runs dry.

    Pass ``e`` is a permutation drawn from ``(seed, e)``, so batch ``k`` (positions
    ``[k * b, (k + 1) * b)`` of the stream) is a pure function of ``(seed, k)``: a resumed
    run continues exactly where it stopped, whatever the number of workers.

    Args:
        size: number of samples.
        seed: seed of the permutations.
    """

    def __init__(self, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed = size, seed
        self._cached: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of pass ``epoch`` ``[size]``."""
        if self._cached is None or self._cached[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cached = (epoch, torch.randperm(self.size, generator=generator))
        return self._cached[1]

    def batch(self, index: int, batch_size: int) -> torch.Tensor:
        """Sample indices of batch ``index`` ``[batch_size]``."""
        positions = range(index * batch_size, (index + 1) * batch_size)
        epochs = {p // self.size for p in (positions.start, positions.stop - 1)}
        parts = []
        for epoch in sorted(range(min(epochs), max(epochs) + 1)):
            lo = max(positions.start, epoch * self.size) - epoch * self.size
            hi = min(positions.stop, (epoch + 1) * self.size) - epoch * self.size
            parts.append(self.permutation(epoch)[lo:hi])
        return torch.cat(parts)
