"""The large-scale (ImageNet) variant of CoMatch: momentum encoder, shuffle-BN and a queue.

In this variant a momentum encoder ``f_m`` (an exponential moving average of the trained
network, decay ``m = 0.996``) computes, without gradient, everything CoMatch treats as a
target: the weak-view pseudo-labels (``logits_u_w``), the weak-view embeddings of the memory
bank (``z_x``, ``z_u_w``) and the second strong view's embeddings ``z_u_s1``. The trained
network sees only the labelled weak view and the first strong view ``s0``.

A queue of the ``K`` most recent ``z_u_s1`` embeddings and their pseudo-labels extends both
graphs from ``N`` to ``N + K`` columns: ``W^q`` is computed between the current ``q`` and
``cat(q, queue_probs)``, ``W^z`` between ``z_u_s0`` and ``cat(z_u_s1, queue_feats)``.

Under torch.distributed, the momentum encoder's BatchNorm sees a random subset of the global
batch (shuffle-BN, as in MoCo), so that batch statistics cannot leak which samples belong
together; :func:`shuffled_forward` does the shuffling.

The pieces work in any training loop::

    momentum = MomentumEncoder(model, momentum=0.996)
    criterion = MomentumCoMatchCriterion(num_classes, proj_dim, bank_size, queue_size=K)
    for step ...:
        momentum.update(model)
        logits_m, z_m = shuffled_forward(momentum, torch.cat([x_w, u_w, u_s1]))
        logits, z = model(torch.cat([x_w, u_s0]))
        out = criterion(logits_x, targets_x, logits_u_w_m, logits_u_s0,
                        z_x=z_x_m, z_u_w=z_u_w_m, z_u_s0=z_u_s0, z_u_s1=z_u_s1_m)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from comatch import distributed
from comatch.methods.criterion import CoMatchCriterion
from comatch.methods.losses import contrastive_graph_loss, pseudo_label_graph
from comatch.methods.memory import MemoryBank


class EmbeddingQueue(MemoryBank):
    """Ring buffer of past ``z_u_s1`` embeddings and their pseudo-labels (``K`` entries).

    The same ring buffer as the memory bank: registered buffers (a ``state_dict`` round trip
    restores contents, pointer and fill), pushes all-gathered across processes so that ``K``
    counts entries of the global batch, a push past the end wraps to the start, and
    :meth:`contents` returns only the written entries.

    Args:
        size: ``K``.
        feature_dim: embedding size ``D``.
        num_classes: ``C``.
    """

    @torch.no_grad()
    def fill_random(self) -> None:
        """Fill every slot with a random unit embedding and an all-zero pseudo-label (from
        torch's global generator); the pointer stays at slot 0."""
        feats = torch.randn(self.feats.shape)  # [K, D]
        self.feats.copy_(torch.nn.functional.normalize(feats, dim=1))
        self.probs.zero_()
        self._num_filled = self.size
        self.num_filled.fill_(self.size)


class MomentumEncoder(nn.Module):
    """An exponential moving average of a network, updated every step: ``f_m <- m f_m + (1-m) f``.

    Unlike the evaluation EMA it stays in training mode (its BatchNorm uses batch
    statistics) and never receives gradients. Floating-point parameters and buffers are
    averaged; integer buffers (``num_batches_tracked``) are copied. With ``m = 0`` it equals
    the network after every update.

    Args:
        model: the trained network (deep-copied; unwrap DistributedDataParallel first).
        momentum: ``m`` in ``[0, 1)`` (0.996 on ImageNet).
    """

    def __init__(self, model: nn.Module, momentum: float = 0.996) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, momentum: float | None = None) -> None:
        """Move towards ``model`` (same architecture, unwrapped), with ``momentum`` instead
        of the encoder's own ``m`` when given (e.g. a first-epoch value)."""
        m = self.momentum if momentum is None else momentum
        own = list(self.module.parameters()) + list(self.module.buffers())
        new = list(model.parameters()) + list(model.buffers())
        floats = [(a, b.detach()) for a, b in zip(own, new) if a.is_floating_point()]
        for a, b in zip(own, new):
            if not a.is_floating_point():
                a.copy_(b)
        if floats:
            # lerp(f_m, f, 1 - m) = m * f_m + (1 - m) * f
            torch._foreach_lerp_([a for a, _ in floats], [b for _, b in floats], 1.0 - m)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the averaged network (call it under ``torch.no_grad()``)."""
        return self.module(*args, **kwargs)


@torch.no_grad()
def shuffled_forward(
    encode: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
    images: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, ...]:
    """``encode(images)`` with the batch shuffled across processes for BatchNorm (shuffle-BN).

    Every process gathers the global batch, encodes a random ``1/W`` of it (the permutation
    is drawn on rank 0 and broadcast), and gets back the outputs of its own rows, in its
    own order. In one process this is ``encode(images)``.

    Args:
        encode: maps images ``[n, ...]`` to a tuple of outputs ``[n, ...]`` (e.g. the momentum
            encoder's ``(logits, z)``).
        images: this process's batch ``[n, ...]`` (the same ``n`` on every process).
        generator: CPU generator of the permutation (used on rank 0).

    Returns:
        The outputs for ``images``, row for row.
    """
    world = distributed.world_size()
    if world == 1:
        return tuple(encode(images))
    n, rank = images.shape[0], distributed.rank()
    everything = distributed.all_gather_cat(images)  # [W * n, ...]
    order = torch.randperm(world * n, generator=generator).to(images.device)  # [W * n]
    order = distributed.broadcast(order, src=0)
    outputs = encode(everything[order[rank * n : (rank + 1) * n]])  # rows order[r*n:(r+1)*n]
    mine = []
    for out in outputs:
        shuffled = distributed.all_gather_cat(out)  # [W * n, ...]; row i is sample order[i]
        unshuffled = torch.empty_like(shuffled)
        unshuffled[order] = shuffled  # row j is sample j again
        mine.append(unshuffled[rank * n : (rank + 1) * n])
    return tuple(mine)


class MomentumCoMatchCriterion(CoMatchCriterion):
    """CoMatch's loss with a queue of past embeddings extending both graphs to ``N + K`` columns.

    Called exactly like :class:`~comatch.methods.criterion.CoMatchCriterion`, but ``logits_u_w``,
    ``z_x``, ``z_u_w`` and ``z_u_s1`` are the momentum encoder's outputs. After the loss,
    ``(z_u_s1, q)`` enter the queue. With an empty queue (or ``queue_size=0``) it computes
    exactly what CoMatchCriterion computes.

    Args:
        num_classes, proj_dim, bank_size: see :class:`~comatch.methods.criterion.CoMatchCriterion`.
        queue_size: ``K``, entries of the global batch kept (0: no queue).
        queue_init: ``"empty"`` (the queue fills as training goes) or ``"random"`` (it starts
            full of random unit embeddings with all-zero pseudo-labels, as in the released
            ImageNet code: they add no graph edges, only negatives of ``W^z``).
        **settings: the keyword settings of :class:`~comatch.methods.criterion.CoMatchCriterion`.
    """

    def __init__(self, num_classes: int, proj_dim: int, bank_size: int, *, queue_size: int = 0,
                 queue_init: str = "empty", **settings: Any) -> None:
        super().__init__(num_classes, proj_dim, bank_size, **settings)
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        if queue_init not in ("empty", "random"):
            raise ValueError(f"queue_init must be 'empty' or 'random', got {queue_init!r}")
        use_queue = queue_size > 0 and self.contrastive
        self.queue = EmbeddingQueue(queue_size, proj_dim, num_classes) if use_queue else None
        if self.queue is not None and queue_init == "random":
            self.queue.fill_random()

    def _graph_loss(
        self, graph_probs: torch.Tensor, z_u_s0: torch.Tensor | None, z_u_s1: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``L_c`` over ``N + K`` columns; then pushes ``(z_u_s1, q)`` into the queue."""
        if z_u_s0 is None or z_u_s1 is None:
            raise ValueError("the graph contrastive loss needs the strong-view embeddings z_u_s0 and z_u_s1")
        z_u_s1 = z_u_s1.detach().float()  # a target: the momentum encoder's embedding
        queue_feats, queue_probs = self._queued(z_u_s1.shape[1], graph_probs)
        graph = pseudo_label_graph(graph_probs, self._edge_threshold, queue_probs)  # [N, N + K]
        columns = torch.cat([z_u_s1, queue_feats.to(z_u_s1)])  # [N + K, D]
        loss_c = contrastive_graph_loss(z_u_s0.float(), columns, graph, self.temperature)
        if self.queue is not None:
            queue, probs = self.queue, graph_probs.detach()
            self._defer(lambda: queue.push(z_u_s1, probs), z_u_s1, probs)
        return loss_c, ((graph > 0).sum(dim=1) - 1).float().mean()

    def _queued(self, dim: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The queue's written entries ``([K, D], [K, C])``; empty without a queue."""
        if self.queue is None:
            return like.new_zeros(0, dim), like.new_zeros(0, like.shape[1])
        return self.queue.contents()
