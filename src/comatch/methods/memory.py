"""CoMatch's persistent state: the distribution aligner and the memory bank.

Both are small ``nn.Module``s whose state lives in registered buffers, so ``state_dict()``
saves and restores them exactly (a resumed run smooths with the same bank it had).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from comatch import distributed
from comatch.methods.losses import distribution_alignment


class DistributionAligner(nn.Module):
    """Keeps the per-batch mean of ``p_w`` over the last ``window`` steps and divides by it.

    ``p_avg`` is the mean of the stored batch means. Each call first records the current
    batch's mean (all-reduced over processes), then aligns with the updated average, so the
    first step is aligned with its own batch mean.

    Args:
        num_classes: ``C``.
        window: number of past steps averaged (32 on CIFAR/STL, 128 on ImageNet).
        prior: target class distribution ``[C]`` (positive, sums to 1) the aligned
            probabilities are pulled towards: ``normalise(p * prior / p_avg)``; None: uniform
            (the paper's ``normalise(p / p_avg)``, bit for bit).
    """

    def __init__(self, num_classes: int, window: int, prior: torch.Tensor | None = None) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.prior = None if prior is None else check_prior(prior, num_classes)
        self.register_buffer("history", torch.zeros(window, num_classes))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        # Host copy of num_updates, so that the training step never waits on the device.
        self._num_updates = 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._num_updates = int(self.num_updates.item())

    @property
    def mean_probs(self) -> torch.Tensor:
        """``p_avg`` ``[C]``: the mean over the filled history (uniform before any update)."""
        filled = min(self._num_updates, self.window)
        if filled == 0:
            return torch.full_like(self.history[0], 1.0 / self.history.shape[1])
        return self.history[:filled].mean(dim=0)

    @torch.no_grad()
    def align(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``probs [N, C]`` aligned with the history as :meth:`record` would leave it after
        this batch, and the batch mean to record; the history itself is not changed.

        Returns:
            ``(aligned [N, C], batch_mean [C])``; the mean is averaged over all processes.
        """
        batch_mean = distributed.all_reduce_mean(probs.detach().float().mean(dim=0))  # [C]
        history = self.history.clone()  # [window, C]
        history[self._num_updates % self.window] = batch_mean.to(history)
        filled = min(self._num_updates + 1, self.window)
        mean_probs = history[:filled].mean(dim=0)  # [C]
        return distribution_alignment(probs, mean_probs.to(probs.dtype), self._prior_for(probs)), batch_mean

    @torch.no_grad()
    def record(self, batch_mean: torch.Tensor) -> None:
        """Append one step's (already all-reduced) batch mean ``[C]`` to the history."""
        self.history[self._num_updates % self.window] = batch_mean.to(self.history)
        self._num_updates += 1
        self.num_updates.fill_(self._num_updates)

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """Record the batch mean of ``probs [N, C]`` (averaged over all processes)."""
        self.record(distributed.all_reduce_mean(probs.detach().float().mean(dim=0)))

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        """Update the history with ``probs [N, C]`` and return them aligned ``[N, C]``."""
        self.update(probs)
        return distribution_alignment(probs, self.mean_probs.to(probs.dtype), self._prior_for(probs))

    def _prior_for(self, probs: torch.Tensor) -> torch.Tensor | None:
        """The prior on ``probs``' device and dtype (None: uniform)."""
        return None if self.prior is None else self.prior.to(probs.device, probs.dtype)


def check_prior(prior: torch.Tensor | list[float], num_classes: int) -> torch.Tensor:
    """A class prior as a float32 tensor ``[C]``, renormalised to sum to 1.

    Raises:
        ValueError: wrong length, or a value that is not positive and finite.
    """
    prior = torch.as_tensor(prior, dtype=torch.float32).flatten()
    if prior.numel() != num_classes:
        raise ValueError(f"the class prior has {prior.numel()} values but there are {num_classes} classes")
    if not bool(torch.isfinite(prior).all()) or bool((prior <= 0).any()):
        raise ValueError("every value of the class prior must be positive and finite")
    return prior / prior.sum()


class MemoryBank(nn.Module):
    """Ring buffer of weak-view embeddings and their class probabilities.

    Labelled samples store their one-hot label; unlabelled ones ``p_w`` after alignment and
    before smoothing. Under ``torch.distributed`` every push is all-gathered first, so all
    processes hold the same bank and ``size`` counts entries of the global batch.

    Args:
        size: number of entries ``K``.
        feature_dim: embedding size ``D``.
        num_classes: ``C``.
    """

    def __init__(self, size: int, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"memory bank size must be >= 1, got {size}")
        self.register_buffer("feats", torch.zeros(size, feature_dim))
        self.register_buffer("probs", torch.zeros(size, num_classes))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_filled", torch.zeros((), dtype=torch.long))
        # Host copies of ptr and num_filled: the step never waits on the device for them.
        self._ptr = 0
        self._num_filled = 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ptr = int(self.ptr.item())
        self._num_filled = int(self.num_filled.item())

    @property
    def size(self) -> int:
        """Capacity ``K``."""
        return self.feats.shape[0]

    def __len__(self) -> int:
        return self._num_filled

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The written entries only: ``(feats [n, D], probs [n, C])`` with ``n = len(self)``.

        A ring buffer fills from slot 0 and only then wraps, so the written slots are always
        the first ``n``.
        """
        n = len(self)
        return self.feats[:n], self.probs[:n]

    @torch.no_grad()
    def push(
        self,
        feats: torch.Tensor | Sequence[torch.Tensor],
        probs: torch.Tensor | Sequence[torch.Tensor],
    ) -> None:
        """Write ``feats [n, D]`` and ``probs [n, C]`` (all-gathered across processes).

        Either may be a sequence of parts (e.g. the labelled and the unlabelled entries of a
        step): each part is gathered separately, so the bank receives ``[part 0 of every
        process, part 1 of every process, ...]``, the order one process holding the whole
        global batch would push. Entries go to consecutive slots from the pointer; a push
        that runs past the end writes its remainder at the start. A push larger than the bank
        keeps its last ``K``.
        """
        feats = gather_parts(feats, self.feats.dtype)  # [W * n, D]
        probs = gather_parts(probs, self.probs.dtype)  # [W * n, C]
        if feats.shape[0] > self.size:
            feats, probs = feats[-self.size :], probs[-self.size :]
        n = feats.shape[0]
        slots = torch.arange(self._ptr, self._ptr + n, device=self.feats.device) % self.size  # [n]
        self.feats.index_copy_(0, slots, feats)
        self.probs.index_copy_(0, slots, probs)
        self._ptr = (self._ptr + n) % self.size
        self._num_filled = min(self._num_filled + n, self.size)
        self.ptr.fill_(self._ptr)
        self.num_filled.fill_(self._num_filled)


def gather_parts(parts: torch.Tensor | Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """All-gather a tensor, or a sequence of parts, part by part in rank order (one collective).

    Args:
        parts: ``[n, ...]`` or parts ``[n_i, ...]`` with equal trailing shapes; every process
            passes the same shapes.
        dtype: dtype of the result.

    Returns:
        ``[W * n, ...]``: part 0 of ranks 0..W-1, then part 1 of ranks 0..W-1, ...
    """
    if isinstance(parts, torch.Tensor):
        parts = [parts]
    local = torch.cat([p.detach().to(dtype) for p in parts])  # [n, ...]
    world = distributed.world_size()
    if world == 1:
        return local
    gathered = distributed.all_gather_cat(local).view(world, *local.shape)  # [W, n, ...]
    sizes = [p.shape[0] for p in parts]
    return torch.cat([chunk.flatten(0, 1) for chunk in gathered.split(sizes, dim=1)])
