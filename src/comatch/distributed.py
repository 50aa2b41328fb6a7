"""Every ``torch.distributed`` call of the project, each with a single-process fallback.

Nothing else in the package imports ``torch.distributed``: when no process group is
initialised (one process, CPU or one GPU) these functions are identities, so the rest of the
code never branches on whether it runs distributed.

Processes are started by ``torchrun``, which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` reads them.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device_type: str, timeout_s: float = 1800.0, backend: str | None = None) -> torch.device:
    """Join the process group torchrun described in the environment; pick this process's device.

    Backend: NCCL for CUDA, gloo for the CPU (unless ``backend`` names another). A collective
    that waits longer than ``timeout_s`` (a peer died or hangs) raises instead of hanging
    forever. With one process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) no group is created.

    Args:
        device_type: ``"cuda"`` or ``"cpu"``: where this run trains.
        timeout_s: process-group timeout, seconds.
        backend: override of the backend choice (e.g. ``"gloo"`` on CUDA machines).

    Returns:
        ``cuda:LOCAL_RANK`` (made the current CUDA device) for CUDA, else ``cpu``.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if env_world_size() > 1 and not is_initialized():
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend, init_method="env://", timeout=timedelta(seconds=timeout_s))
    return device


def destroy() -> None:
    """Leave the process group (no-op when none exists)."""
    if is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes, 1 when not distributed."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's global rank, 0 when not distributed."""
    return dist.get_rank() if is_initialized() else 0


def is_main_process() -> bool:
    """True on the process that writes logs, plots and checkpoints."""
    return rank() == 0


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0, in rank order (no gradient).

    Every process must pass the same shape.

    Args:
        tensor: ``[n, ...]`` on this process.

    Returns:
        ``[world_size * n, ...]``; the input itself when not distributed.
    """
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over processes (returns a new tensor; the input is unchanged)."""
    if world_size() == 1:
        return tensor
    reduced = tensor.clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / world_size()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes (returns a new tensor; the input is unchanged)."""
    if world_size() == 1:
        return tensor
    reduced = tensor.clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced


def any_process(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is True on at least one process (so that all decide alike).

    Args:
        flag: this process's answer.
        device: where the collective runs (the training device: NCCL needs CUDA tensors).
    """
    if world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """``tensor`` of process ``src`` on every process (in place; returned for convenience)."""
    if world_size() > 1:
        dist.broadcast(tensor, src)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """A picklable object of process ``src``, on every process."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def barrier() -> None:
    """Wait for every process; no-op when not distributed."""
    if world_size() > 1:
        dist.barrier()


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` in DistributedDataParallel (gradients averaged over processes), or itself.

    Args:
        model: the network, already on ``device``.
        device: this process's device.
        find_unused_parameters: needed when the loss does not reach every parameter (e.g.
            the projection head under FixMatch or the supervised baseline).
    """
    if world_size() == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=find_unused_parameters
    )


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm by a SyncBatchNorm (batch statistics over all processes).

    PyTorch's SyncBatchNorm runs on CUDA only when several processes train; in one process it
    behaves like plain BatchNorm.
    """
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
