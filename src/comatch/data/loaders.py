"""Endless training loaders and evaluation loaders."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

from torch.utils.data import DataLoader, Dataset

from comatch.signals import ignore_stop_signals
from comatch.data.datasets import BatchViewDataset, BatchViewFn, EvalDataset, ViewBatch


def endless_batches(
    base: Dataset,
    views: BatchViewFn | None,
    names: Mapping[str, str],
    batch_size: int,
    seed: int,
    *,
    start_batch: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    shard: tuple[int, int] = (0, 1),
    group: int = 1,
) -> Iterator[ViewBatch]:
    """An endless iterator of :class:`~comatch.data.datasets.ViewBatch` es, with the views
    ``names`` (view key -> view kind) of every batch.

    The stream of samples and of their augmentations is a pure function of ``seed``;
    ``start_batch`` skips ahead to where a previous run stopped; ``shard = (rank, world)``
    yields only this process's rows of every (global) batch. Whole batches are augmented
    at once (see :class:`~comatch.data.batch_views.BatchViews`), in a worker process when
    ``num_workers > 0`` so that augmentation overlaps the training step; without workers,
    ``group`` batches at a time (the same batches: see
    :class:`~comatch.data.datasets.BatchViewDataset`).
    """
    loader = DataLoader(
        BatchViewDataset(base, batch_size, views, names, seed, shard, group=group if num_workers == 0 else 1),
        batch_size=None,
        sampler=itertools.count(start_batch),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        prefetch_factor=2 if num_workers > 0 else None,
        worker_init_fn=ignore_stop_signals,  # a signal to the process group is the trainer's to handle
    )
    return iter(loader)


def eval_loader(base: Dataset, view, batch_size: int = 256) -> DataLoader:  # type: ignore[no-untyped-def]
    """A loader over ``base`` in order, with the deterministic evaluation view."""
    return DataLoader(EvalDataset(base, view), batch_size=batch_size, shuffle=False)
