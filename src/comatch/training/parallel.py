"""One training job as several processes (torchrun): start-up, shards and rank-0 gating.

What is global and what is per process:

- ``optim.batch_size`` (labelled) and ``mu * batch_size`` (unlabelled) are the global batch.
  Process ``r`` of ``W`` takes rows ``[r * b / W, (r + 1) * b / W)`` of global batch ``k``,
  whose samples and augmentations are a pure function of ``(seed, k)``: the run sees the same
  images whatever ``W``, and a run may resume with another number of processes as long as
  ``W`` divides both batch sizes.
- The memory bank, the momentum queue and the distribution aligner are global: pushes are
  all-gathered and batch means all-reduced, so every process holds the same state.
- The graph contrastive loss is computed on each process's own rows (its ``[N/W, N/W + K]``
  graph); gradients are averaged over processes by DistributedDataParallel.
- Only rank 0 writes files: config, metrics, TensorBoard, summary and checkpoints.

Every ``torch.distributed`` call is in :mod:`comatch.distributed`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from comatch import distributed
from comatch.data.datasets import shard_rows
from comatch.errors import UserError
from comatch.training.monitor import RunMonitor
from comatch.training.runtime import resolve_device

T = TypeVar("T")


def start(device: str, timeout_s: float) -> torch.device:
    """Join torchrun's process group (if launched by torchrun) and return this process's device.

    Idempotent: a second call returns the device again.

    Args:
        device: ``run.device`` (auto, cpu or cuda).
        timeout_s: ``run.dist_timeout``.
    """
    return distributed.init_from_env(resolve_device(device).type, timeout_s)


@contextlib.contextmanager
def launched(device: str, timeout_s: float) -> Iterator[torch.device]:
    """:func:`start`, and leave the process group when the block ends."""
    try:
        yield start(device, timeout_s)
    finally:
        distributed.destroy()


def decide_on_main(decide: Callable[[], T]) -> T:
    """Run ``decide`` on rank 0 only and give its result (or its UserError) to every process.

    For decisions that look at the file system, such as choosing a new run directory, which
    would race if every process made them.
    """
    result: Any = None
    if distributed.is_main_process():
        try:
            result = ("ok", decide())
        except UserError as err:
            result = ("error", str(err))
    kind, value = distributed.broadcast_object(result)
    if kind == "error":
        raise UserError(value)
    return value


def batch_rows(batch_size: int, what: str) -> tuple[int, int]:
    """This process's rows ``[start, stop)`` of a global batch.

    Raises:
        UserError: the batch cannot be split evenly over the processes.
    """
    world = distributed.world_size()
    try:
        return shard_rows(batch_size, distributed.rank(), world)
    except ValueError:
        raise UserError(f"the global {what} batch of {batch_size} cannot be split evenly over {world} "
                        f"processes; use a number of processes that divides it, or change optim.batch_size") from None


def prepare_network(model: nn.Module, device: torch.device, *, sync_bn: bool,
                    channels_last: bool) -> nn.Module:
    """Move the network to its device, optionally with synchronised BatchNorm and channels-last.

    Raises:
        UserError: ``sync_bn`` with several processes on the CPU (PyTorch has no CPU kernel).
    """
    if sync_bn:
        if distributed.world_size() > 1 and device.type != "cuda":
            raise UserError("run.sync_bn needs CUDA devices when several processes train (PyTorch's "
                            "SyncBatchNorm has no CPU kernel); set run.sync_bn=false")
        model = distributed.convert_sync_batchnorm(model)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


class NullMonitor:
    """The monitor of processes other than rank 0: records nothing, writes nothing."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.offset = 0

    def log(self, record: dict[str, Any]) -> None:
        """Ignore a record."""

    def advance(self, steps: int = 1) -> None:
        """Ignore progress."""

    def set_total(self, total: int) -> None:
        """Nothing to show."""

    def message(self, text: str) -> None:
        """Ignore a message."""

    def check(self) -> None:
        """Nothing to check."""

    def close(self) -> None:
        """Nothing to close."""


def run_monitor(out_dir: Path, total: int, start_step: int, metrics_offset: int,
                tensorboard: bool, class_names: Sequence[str] = ()) -> RunMonitor | NullMonitor:
    """Rank 0's :class:`RunMonitor`; a :class:`NullMonitor` elsewhere."""
    if not distributed.is_main_process():
        return NullMonitor()
    return RunMonitor(out_dir, total, start_step, metrics_offset, tensorboard=tensorboard, class_names=class_names)
