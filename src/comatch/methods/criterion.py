"""CoMatch's loss and its state for one training step, with its ablation switches.

A criterion holds only its settings and its persistent state (aligner, memory bank); the
equations are the pure functions of :mod:`comatch.methods.losses`. The training loop owns backward,
the optimizer and the EMA. The :class:`~comatch.methods.comatch.CoMatch` method routes a step's
views through the network into it; FixMatch is it with every CoMatch-specific part switched off
(:mod:`comatch.methods.fixmatch`). Other methods' criteria: :func:`comatch.methods.build_criterion`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from comatch import distributed
from comatch.methods.losses import (
    contrastive_graph_loss,
    memory_smoothed_labels,
    pseudo_label_graph,
    pseudo_label_loss,
)
from comatch.methods.base import MethodOutput
from comatch.methods.memory import DistributionAligner, MemoryBank

CriterionOutput = MethodOutput
"""What a criterion returns for one step (the same record a method returns)."""


class CoMatchCriterion(nn.Module):
    """CoMatch's loss ``L = L_x + lambda_u L_u + lambda_c L_c`` and its state.

    Symbols as in :mod:`comatch.methods.losses`. One call per training step: it aligns and smooths
    the weak-view pseudo-labels, pushes the step's weak-view entries into the memory bank,
    and returns the loss and its parts.

    Args:
        num_classes: ``C``.
        proj_dim: embedding size ``D`` of the projection head.
        bank_size: memory bank entries ``K`` (global, across processes).
        alpha: weight of the model's own prediction in the smoothed label.
        temperature: ``T`` of both the smoothing affinities and the embedding graph.
        threshold: ``tau``, the confidence needed for a pseudo-label to count in ``L_u``.
        graph_threshold: ``t``, the pseudo-label similarity needed for a graph edge.
        lambda_u: weight of ``L_u``.
        lambda_c: weight of ``L_c`` (the trainer may ramp it by setting the attribute).
        da_window: steps averaged by distribution alignment.
        alignment: ablation switch: distribution alignment on/off.
        smoothing: ablation switch: memory-smoothed pseudo-labels on/off (off: no bank).
        contrastive: ablation switch: graph contrastive loss on/off (off: no ``s1`` view).
        self_loop_only: ablation switch: ``W^q`` keeps only self-loops (instance contrast).
        hard_labels: ablation switch: one-hot ``argmax(q)`` instead of the soft ``q`` in both
            ``L_u`` and ``W^q``.
        prior: target class distribution ``[C]`` of distribution alignment
            (``normalise(p * prior / p_avg)``); None: uniform, the paper's alignment.
        defer_updates: False (for your own loop): the aligner, bank (and queue) are updated
            at the end of each call, unless an input was not finite, in which case nothing
            is recorded. True (the trainer): the updates wait for :meth:`commit`, which the
            loop calls only for a step it applied; :meth:`discard` drops them.
    """

    def __init__(
        self,
        num_classes: int,
        proj_dim: int,
        bank_size: int,
        *,
        alpha: float = 0.9,
        temperature: float = 0.2,
        threshold: float = 0.95,
        graph_threshold: float = 0.8,
        lambda_u: float = 1.0,
        lambda_c: float = 1.0,
        da_window: int = 32,
        alignment: bool = True,
        smoothing: bool = True,
        contrastive: bool = True,
        self_loop_only: bool = False,
        hard_labels: bool = False,
        prior: torch.Tensor | None = None,
        defer_updates: bool = False,
    ) -> None:
        super().__init__()
        self.defer_updates = defer_updates
        self.smoothing_paused = False  # set by a schedule that starts smoothing later
        self._pending: list[Callable[[], None]] = []
        self._checked: list[torch.Tensor] = []
        self.num_classes = num_classes
        self.alpha, self.temperature = alpha, temperature
        self.threshold, self.graph_threshold = threshold, graph_threshold
        self.lambda_u, self.lambda_c = lambda_u, lambda_c
        self.smoothing, self.contrastive = smoothing, contrastive
        self.self_loop_only, self.hard_labels = self_loop_only, hard_labels
        self.aligner = DistributionAligner(num_classes, da_window, prior) if alignment else None
        self.bank = MemoryBank(bank_size, proj_dim, num_classes) if smoothing else None

    @property
    def unlabelled_views(self) -> tuple[str, ...]:
        """The views of each unlabelled image this criterion needs, in forward order."""
        return ("weak", "strong", "contrastive") if self.contrastive else ("weak", "strong")

    def forward(
        self,
        logits_x: torch.Tensor,
        targets_x: torch.Tensor,
        logits_u_w: torch.Tensor,
        logits_u_s0: torch.Tensor,
        z_x: torch.Tensor | None = None,
        z_u_w: torch.Tensor | None = None,
        z_u_s0: torch.Tensor | None = None,
        z_u_s1: torch.Tensor | None = None,
    ) -> CriterionOutput:
        """Compute the step's loss.

        Args:
            logits_x: labelled weak view ``[B, C]``; ``targets_x`` its labels ``[B]``.
            logits_u_w, logits_u_s0: unlabelled weak and strong views ``[N, C]``.
            z_x, z_u_w: weak-view embeddings ``[B, D]``, ``[N, D]`` (needed with smoothing).
            z_u_s0, z_u_s1: strong-view embeddings ``[N, D]`` (needed with the graph loss).

        Returns:
            The loss, its parts, ``mask_rate``/``graph_edges`` stats and the pseudo-labels.
        """
        loss_x = F.cross_entropy(logits_x.float(), targets_x)
        probs_u = self._pseudo_labels(logits_u_w, targets_x, z_x, z_u_w)  # [N, C]
        confident = probs_u.max(dim=1).values >= self.threshold  # [N]
        graph_probs = probs_u
        if self.hard_labels:
            graph_probs = F.one_hot(probs_u.argmax(dim=1), self.num_classes).to(probs_u)
        targets_u = graph_probs * confident.unsqueeze(1) if self.hard_labels else probs_u
        loss_u = pseudo_label_loss(logits_u_s0, targets_u, self.threshold)
        stats = {"mask_rate": confident.float().mean()}
        if self.contrastive:
            loss_c, stats["graph_edges"] = self._graph_loss(graph_probs, z_u_s0, z_u_s1)
        else:
            loss_c = loss_x.new_zeros(())
        loss = loss_x + self.lambda_u * loss_u + self.lambda_c * loss_c
        if not self.defer_updates:
            self._commit_if_finite()
        return CriterionOutput(loss, loss_x, loss_u, loss_c, stats, probs_u, confident)

    # ------------------------------------------------------------- deferred state updates
    def _defer(self, update: Callable[[], None], *inputs: torch.Tensor) -> None:
        """Queue a state update of this call; ``inputs`` are what it records."""
        self._pending.append(update)
        self._checked.extend(inputs)

    def commit(self) -> None:
        """Apply the state updates of the last call (aligner history, bank, queue).

        Under torch.distributed every process must call it at the same point.
        """
        pending, self._pending, self._checked = self._pending, [], []
        for update in pending:
            update()

    def discard(self) -> None:
        """Drop the state updates of the last call: the state stays as it was before it."""
        self._pending, self._checked = [], []

    def _commit_if_finite(self) -> None:
        """Commit unless a recorded value is not finite (on any process): one host sync."""
        if not self._pending:
            return
        finite = torch.stack([t.detach().isfinite().all() for t in self._checked]).all()
        if distributed.any_process(not bool(finite), finite.device):
            self.discard()
        else:
            self.commit()

    @property
    def _edge_threshold(self) -> float:
        """``t``, or infinity for the self-loop-only ablation."""
        return float("inf") if self.self_loop_only else self.graph_threshold

    def _graph_loss(
        self, graph_probs: torch.Tensor, z_u_s0: torch.Tensor | None, z_u_s1: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``L_c`` of this process's batch and the mean number of graph edges per sample.

        Args:
            graph_probs: pseudo-labels defining ``W^q`` ``[N, C]``.
            z_u_s0, z_u_s1: strong-view embeddings ``[N, D]``.
        """
        if z_u_s0 is None or z_u_s1 is None:
            raise ValueError("the graph contrastive loss needs the strong-view embeddings z_u_s0 and z_u_s1")
        graph = pseudo_label_graph(graph_probs, self._edge_threshold)  # [N, N]
        loss_c = contrastive_graph_loss(z_u_s0.float(), z_u_s1.float(), graph, self.temperature)
        return loss_c, ((graph > 0).sum(dim=1) - 1).float().mean()

    @torch.no_grad()
    def _pseudo_labels(
        self,
        logits_u_w: torch.Tensor,
        targets_x: torch.Tensor,
        z_x: torch.Tensor | None,
        z_u_w: torch.Tensor | None,
    ) -> torch.Tensor:
        """Weak-view probabilities, aligned and memory-smoothed ``[N, C]``; the aligner's
        history and the bank receive this step's entries when the step is committed."""
        probs = torch.softmax(logits_u_w.detach().float(), dim=1)  # [N, C]
        if self.aligner is not None:
            aligner = self.aligner
            probs, batch_mean = aligner.align(probs)
            self._defer(lambda: aligner.record(batch_mean), batch_mean)
        if self.bank is None:
            return probs
        if z_x is None or z_u_w is None:
            raise ValueError("memory smoothing needs the weak-view embeddings z_x and z_u_w")
        smoothed = probs
        if self._smoothing_ready(z_x.shape[0] + z_u_w.shape[0]):
            bank_feats, bank_probs = self.bank.contents()
            smoothed = memory_smoothed_labels(
                probs, z_u_w.float(), bank_feats, bank_probs, self.alpha, self.temperature
            )
        onehot_x = F.one_hot(targets_x, self.num_classes).to(probs)  # [B, C]
        bank, feats, labels = self.bank, [z_x.detach(), z_u_w.detach()], [onehot_x, probs]
        self._defer(lambda: bank.push(feats, labels), *feats, probs)  # labelled, then unlabelled
        return smoothed

    def _smoothing_ready(self, entries_per_process: int) -> bool:
        """Whether this call smooths: the bank holds at least one step's entries (so from the
        second step on) and :attr:`smoothing_paused` is not set."""
        if self.smoothing_paused or self.bank is None:
            return False
        return len(self.bank) >= entries_per_process * distributed.world_size()

