"""Datasets that return the augmented views of each sample as uint8 tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

View = Callable[[torch.Tensor], torch.Tensor]


def sample_seed(stream_seed: int, draw: int) -> int:
    """Seed of one sample's augmentation: a pure function of the stream and the draw."""
    return (stream_seed * 0x9E3779B1 + draw * 0x85EBCA77) % (2**63)


class TensorImages(Dataset):
    """Images held in memory: item ``i`` is ``(uint8 image [C, H, W], label)``.

    Args:
        images: uint8 ``[N, C, H, W]``.
        labels: class indices ``[N]``; -1 where unknown.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 tensor [N, C, H, W]")
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class ViewDataset(Dataset):
    """Each sample of ``base`` returned as several independently augmented views.

    Indexed by ``(index, draw)`` pairs from :class:`~comatch.data.sampling.InfiniteSampler`:
    the views of a draw are seeded from ``(seed, draw)`` on a forked RNG, so the same draw
    always gives the same views, whichever worker computes it.

    Args:
        base: dataset whose items are ``(uint8 image [C, H, W], label)``.
        views: the view functions to apply, in order.
        seed: stream seed.

    Returns (per item): ``(view_1, ..., view_k, label, index)``.
    """

    def __init__(self, base: Dataset, views: Sequence[View], seed: int) -> None:
        self.base, self.views, self.seed = base, list(views), seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple:
        index, draw = key
        image, label = self.base[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, draw))
            views = tuple(view(image) for view in self.views)
        return (*views, label, index)


class EvalDataset(Dataset):
    """``base`` with one deterministic view (resize only): ``(image, label)``."""

    def __init__(self, base: Dataset, view: View) -> None:
        self.base, self.view = base, view

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return self.view(image), label
