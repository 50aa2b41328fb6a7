"""Endless training loaders and evaluation loaders."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from comatch.data.datasets import EvalDataset, View, ViewDataset
from comatch.data.sampling import InfiniteSampler


def endless_batches(
    base: Dataset,
    views: Sequence[View],
    batch_size: int,
    seed: int,
    *,
    start_batch: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[list]:
    """An endless iterator of batches ``[view_1, ..., view_k, labels, indices]``.

    The stream of samples and of their augmentations is a pure function of ``seed``;
    ``start_batch`` skips ahead to where a previous run stopped.

    Args:
        base: dataset of ``(uint8 image, label)``.
        views: the view functions each sample is returned in.
        batch_size: samples per batch.
        seed: stream seed (order and augmentation).
        start_batch: number of batches already consumed.
        num_workers: worker processes (persistent); 0 loads in the training process.
        pin_memory: pin batches for faster host-to-GPU copies.
    """
    sampler = InfiniteSampler(len(base), seed, start=start_batch * batch_size)  # type: ignore[arg-type]
    loader = DataLoader(
        ViewDataset(base, views, seed),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        drop_last=True,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    return iter(loader)


def eval_loader(base: Dataset, view: View, batch_size: int = 256) -> DataLoader:
    """A loader over ``base`` in order, with the deterministic evaluation view."""
    return DataLoader(EvalDataset(base, view), batch_size=batch_size, shuffle=False)
