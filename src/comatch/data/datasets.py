"""Datasets of uint8 images, and the batch-level dataset that augments whole batches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

import torch
from torch.utils.data import Dataset, Subset

from comatch.data.sampling import IndexStream


class BatchViewFn(Protocol):
    def __call__(self, name: str, images: torch.Tensor, generator: torch.Generator, *,
                 start: int = 0, total: int | None = None) -> torch.Tensor: ...


class ViewBatch(NamedTuple):
    """One loader batch (this process's rows of a global batch).

    Attributes:
        views: the augmented views by view key, uint8 ``[n, C, S, S]`` each; empty when the
            loader leaves augmentation to the training device.
        images: the images before augmentation (uint8 ``[n, C, H, W]``) when ``views`` is
            empty, else None.
        labels: class indices ``[n]`` (-1 where unknown).
        indices: the samples' indices in the dataset ``[n]``.
        seed: seed of the batch's augmentation (see :func:`batch_seed`).
    """

    views: dict[str, torch.Tensor]
    images: torch.Tensor | None
    labels: torch.Tensor
    indices: torch.Tensor
    seed: int


def batch_seed(stream_seed: int, batch: int) -> int:
    """Seed of one batch's augmentation: a pure function of the stream and the batch number."""
    return (stream_seed * 0x9E3779B1 + batch * 0x85EBCA77) % (2**63)


def shard_rows(batch_size: int, index: int, count: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of a global batch that shard ``index`` of ``count`` takes.

    Shard ``r`` takes rows ``[r * b / W, (r + 1) * b / W)``: together the shards hold the
    global batch exactly, so a run is the same whatever its number of processes.

    Raises:
        ValueError: ``batch_size`` is not a multiple of ``count``.
    """
    if batch_size % count:
        raise ValueError(f"a batch of {batch_size} cannot be split evenly over {count} processes")
    per_shard = batch_size // count
    return index * per_shard, (index + 1) * per_shard


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


def gather(base: Dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[n, C, H, W]`` (uint8) and labels ``[n]`` of ``indices`` in ``base``.

    In-memory datasets are sliced in one indexing operation; others are read item by item
    (each item must be a uint8 image of the run's size and its label).
    """
    if isinstance(base, Subset):
        return gather(base.dataset, torch.as_tensor(base.indices)[indices])
    if isinstance(base, TensorImages):
        return base.images[indices], base.labels[indices]
    items = [base[int(i)] for i in indices]
    return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])


class BatchViewDataset(Dataset):
    """Item ``k`` is training batch ``k`` of an endless stream, in several augmented views.

    The samples of batch ``k`` come from an :class:`IndexStream`, and its augmentation from a
    generator seeded with ``(seed, k)``: the same batch number always gives the same
    tensors, in any worker, after any resume.

    Args:
        base: dataset of ``(uint8 image, label)``.
        batch_size: samples per batch.
        views: batched view function ``views(kind, images, generator)``, or None to return
            the raw images (the trainer then augments on its device).
        names: view key -> view kind (``weak``, ``strong``, ``contrastive``) of the views to
            return, drawn in this order from the batch's generator.
        seed: stream seed (sample order and augmentation).
        shard: ``(index, count)``: this process's share of every batch, rows
            ``[index * b / count, (index + 1) * b / count)`` (see :func:`shard_rows`), augmented
            exactly as in the whole batch; ``(0, 1)`` is the whole batch.
        group: augment this many batches at once when ``views`` can
            (:meth:`~comatch.data.batch_views.BatchViews.views_of_batches`): item ``k`` then
            also makes items ``k + 1 ... k + group - 1`` and keeps them for the next requests.
            The items are the same whatever the group; only for a loader that asks for the
            batches in order (no worker processes), where it saves the fixed cost of each
            operation on small images.

    Returns (per item): a :class:`ViewBatch` of the shard.
    """

    def __init__(
        self, base: Dataset, batch_size: int, views: BatchViewFn | None, names: Mapping[str, str], seed: int,
        shard: tuple[int, int] = (0, 1), group: int = 1,
    ) -> None:
        self.base, self.batch_size, self.views, self.names = base, batch_size, views, dict(names)
        self.seed = seed
        self.rows = shard_rows(batch_size, *shard)
        self.stream = IndexStream(len(base), seed)  # type: ignore[arg-type]
        self.group = group if hasattr(views, "views_of_batches") else 1
        self._ready: dict[int, ViewBatch] = {}  # batches made ahead with an earlier one

    def __len__(self) -> int:  # the stream is endless; DataLoader samples batch numbers itself
        raise TypeError("BatchViewDataset is endless")

    def __getitem__(self, batch: int) -> ViewBatch:
        if batch not in self._ready:
            self._ready = self._make(batch)
        return self._ready.pop(batch)

    def _make(self, first: int) -> dict[int, ViewBatch]:
        """Batches ``first ... first + group - 1`` (augmented together when ``group > 1``)."""
        start, stop = self.rows
        numbers = range(first, first + self.group)
        indices = [self.stream.batch(b, self.batch_size)[start:stop] for b in numbers]
        gathered = [gather(self.base, i) for i in indices]
        seeds = [batch_seed(self.seed, b) for b in numbers]
        if self.views is None:
            views = [{} for _ in numbers]
        else:
            batches = [(images, torch.Generator().manual_seed(s)) for (images, _), s in zip(gathered, seeds)]
            if self.group > 1:
                views = self.views.views_of_batches(self.names, batches, start=start, total=self.batch_size)  # type: ignore[union-attr]
            else:
                views = [{key: self.views(kind, images, generator, start=start, total=self.batch_size)
                          for key, kind in self.names.items()} for images, generator in batches]
        raw = self.views is None  # the trainer augments on its device
        return {b: ViewBatch(v, images if raw else None, labels, i, s)
                for b, v, (images, labels), i, s in zip(numbers, views, gathered, indices, seeds)}


class EvalDataset(Dataset):
    """``base`` with one deterministic per-image view (resize only): ``(image, label)``."""

    def __init__(self, base: Dataset, view) -> None:  # type: ignore[no-untyped-def]
        self.base, self.view = base, view

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return self.view(image), label
