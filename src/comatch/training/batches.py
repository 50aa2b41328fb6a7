"""The batches of the training steps: the endless loaders of the views a method asks for, and
each step's :class:`~comatch.methods.base.Batch` from what they yield."""

from __future__ import annotations

from typing import Any

import torch

from comatch import config as cfg
from comatch import distributed
from comatch.data import RunData
from comatch.data.batch_views import BatchViews
from comatch.data.datasets import ViewBatch, batch_seed
from comatch.data.loaders import endless_batches
from comatch.methods import Batch, Method
from comatch.training import parallel
from comatch.training.defaults import default_workers

# Distinct seed streams for the two loaders and the step's own randomness, from the run's seed.
LABELLED_STREAM, UNLABELLED_STREAM, STEP_STREAM = 1, 2, 3
# Batches a loader without worker processes augments at once, and the most memory their views may take.
AUGMENT_GROUP, AUGMENT_GROUP_BYTES = 8, 32 * 2**20


class StepBatches:
    """Loaders and step batches of one run.

    Args:
        config: the run's configuration.
        data: its datasets.
        method: names the views of the labelled and unlabelled images.
        views: makes the augmented views of a batch.
        device: where the batches go.
    """

    def __init__(self, config: cfg.Config, data: RunData, method: Method, views: BatchViews, device: torch.device) -> None:
        o = config.optim
        self.config, self.data, self.method, self.views, self.device = config, data, method, views, device
        self.rows_x = parallel.batch_rows(o.batch_size, "labelled")
        self.rows_u = parallel.batch_rows(o.batch_size * o.mu, "unlabelled")

    def loaders(self, start: int) -> tuple[Any, Any | None]:
        """The endless labelled and (if the method uses unlabelled data) unlabelled loaders, from step ``start``."""
        o, seed, workers = self.config.optim, self.config.seed, self._workers()
        group_x, group_u = self._groups()
        common = dict(start_batch=start, num_workers=workers, pin_memory=self.device.type == "cuda",
                      shard=(distributed.rank(), distributed.world_size()))
        views = None if self.config.data.augment_on == "gpu" else self.views
        labelled = endless_batches(
            self.data.labelled, views, self.method.labelled_views, o.batch_size,
            seed * 16 + LABELLED_STREAM, group=group_x, **common,
        )
        unlabelled = None
        if self.method.unlabelled_views:
            unlabelled = endless_batches(
                self.data.unlabelled, views, self.method.unlabelled_views, o.batch_size * o.mu,
                seed * 16 + UNLABELLED_STREAM, group=group_u, **common,
            )
        return labelled, unlabelled

    def _workers(self) -> int:
        """Worker processes per loader (``data.num_workers``, or the device's default)."""
        return default_workers(self.config.data.num_workers, self.device.type)

    def _groups(self) -> tuple[int, int]:
        """Batches the labelled and the unlabelled loader augment at once: 1 where worker
        processes augment (a batch each) or the device does (in the step)."""
        if self._workers() or self.config.data.augment_on == "gpu":
            return 1, 1
        o = self.config.optim
        return (self.augment_group(o.batch_size, self.method.labelled_views),
                self.augment_group(o.batch_size * o.mu, self.method.unlabelled_views))

    def augment_group(self, batch_size: int, views: dict[str, str]) -> int:
        """How many batches a loader without workers augments at once (the same batches
        whatever the number): 8 while their views take at most 32 MiB, else 4, 2 or 1.

        On small images most of the augmentation's cost is the fixed cost of each operation
        (at the folder defaults for 28 px images, 5.6 ms of CPU per step in groups of 4 and
        4.7 in groups of 8: benchmarks/augment_group.py, benchmarks/LOG.md).
        """
        view_bytes = batch_size * len(views) * self.data.channels * self.data.image_size ** 2
        group = AUGMENT_GROUP
        while group > 1 and group * view_bytes > AUGMENT_GROUP_BYTES:
            group //= 2
        return group

    def largest_group(self) -> int:
        """The most batches a loader of this run augments at once."""
        group_x, group_u = self._groups()
        return max(group_x, group_u) if self.method.unlabelled_views else group_x

    def _views(self, loaded: ViewBatch, names: dict[str, str], rows: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The views ``names`` (key -> kind) of a loader batch on the device (this process's
        ``rows`` of the global batch); augments here when the loader did not."""
        if loaded.images is None:
            return {key: loaded.views[key].to(self.device, non_blocking=True) for key in names}
        images = loaded.images.to(self.device, non_blocking=True)
        generator = torch.Generator().manual_seed(loaded.seed)
        total = (rows[1] - rows[0]) * distributed.world_size()
        return {key: self.views(kind, images, generator, start=rows[0], total=total)
                for key, kind in names.items()}

    def make(self, loaded_x: ViewBatch, loaded_u: ViewBatch | None, step: int) -> Batch:
        """The method's :class:`~comatch.methods.base.Batch` for ``step`` from the loaders' batches."""
        unlabelled, truth = {}, None
        if loaded_u is not None:
            unlabelled = self._views(loaded_u, self.method.unlabelled_views, self.rows_u)
            truth = loaded_u.labels.to(self.device, non_blocking=True)
        return Batch(
            labelled=self._views(loaded_x, self.method.labelled_views, self.rows_x),
            targets=loaded_x.labels.to(self.device, non_blocking=True),
            unlabelled=unlabelled, truth=truth, step=step,
            seed=batch_seed(self.config.seed * 16 + STEP_STREAM, step),
        )
