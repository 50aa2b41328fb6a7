"""Every ``torch.distributed`` call of the project, each with a single-process fallback.

Nothing else in the package imports ``torch.distributed``: when no process group is
initialised (one process, CPU or one GPU) these functions are identities, so the rest of the
code never branches on whether it runs distributed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


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


def barrier() -> None:
    """Wait for every process; no-op when not distributed."""
    if world_size() > 1:
        dist.barrier()
