"""The CoMatch equations as pure functions of tensors.

Symbols (Li, Xiong and Hoi, "CoMatch", ICCV 2021, section 3; every equation in docs/method.md):

- ``p``: class probabilities of the weakly augmented unlabelled images.
- ``q``: the memory-smoothed pseudo-label, ``q = alpha * p + (1 - alpha) * sum_k a_k p_k``.
- ``alpha``: weight of the model's own prediction in ``q`` (0.9 in the paper).
- ``T``: temperature of the embedding similarities (0.2 on CIFAR/STL, 0.1 on ImageNet).
- ``tau``: confidence threshold of the pseudo-label loss (0.95 on CIFAR/STL).
- ``t``: threshold of the pseudo-label graph ``W^q`` (0.8 on CIFAR/STL).
- ``W^q``: pseudo-label graph, the target of the contrastive loss.
- ``W^z``: embedding graph, ``softmax_j(z0_b . z1_j / T)``.

Every function here is pure: no state, no device or dtype assumptions, and the pseudo-label
targets and the target graph are treated as constants (they are detached), so gradients only
ever reach the logits of the strong view and the two strong-view embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "distribution_alignment",
    "memory_smoothed_labels",
    "pseudo_label_graph",
    "contrastive_graph_loss",
    "pseudo_label_loss",
]


def distribution_alignment(
    probs: torch.Tensor, mean_probs: torch.Tensor, prior: torch.Tensor | None = None
) -> torch.Tensor:
    """Distribution alignment: ``normalise(p * prior / p_avg)`` (CoMatch eq. 3, after ReMixMatch).

    Args:
        probs: class probabilities ``[N, C]``.
        mean_probs: running average of the model's predicted class distribution ``[C]``.
        prior: target class distribution ``[C]`` the aligned predictions are pulled towards;
            None: uniform (the paper), computed without the multiplication so that the
            result is bit for bit the paper's ``normalise(p / p_avg)``.

    Returns:
        Aligned probabilities ``[N, C]`` whose rows sum to 1.
    """
    aligned = probs.detach() / mean_probs.detach().clamp_min(torch.finfo(probs.dtype).tiny)
    if prior is not None:
        aligned = aligned * prior.detach().to(aligned.dtype)  # [N, C] * [C]
    return aligned / aligned.sum(dim=1, keepdim=True)


def memory_smoothed_labels(
    probs: torch.Tensor,
    feats: torch.Tensor,
    bank_feats: torch.Tensor,
    bank_probs: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Memory-smoothed pseudo-labels (CoMatch eq. 4).

    ``q_b = alpha * p_b + (1 - alpha) * sum_k a_bk * p_k`` with
    ``a_bk = softmax_k(z_b . z_k / T)`` over the ``K`` bank entries.

    Args:
        probs: (aligned) weak-view probabilities ``[N, C]``.
        feats: L2-normalised weak-view embeddings ``[N, D]``.
        bank_feats: embeddings stored in the memory bank ``[K, D]``.
        bank_probs: class probabilities stored with them ``[K, C]``.
        alpha: weight of ``probs`` in the result, in ``[0, 1]``.
        temperature: ``T > 0`` of the embedding similarities.

    Returns:
        Smoothed pseudo-labels ``[N, C]``; rows sum to 1 when the inputs' rows do. With an
        empty bank (``K == 0``) the probabilities are returned unchanged.
    """
    probs = probs.detach()
    if bank_feats.shape[0] == 0:
        return probs
    affinity = torch.softmax(feats.detach() @ bank_feats.detach().T / temperature, dim=1)  # [N, K]
    neighbours = affinity @ bank_probs.detach().to(affinity.dtype)  # [N, C]
    return alpha * probs + (1.0 - alpha) * neighbours.to(probs.dtype)


def pseudo_label_graph(
    probs: torch.Tensor, threshold: float, queue_probs: torch.Tensor | None = None
) -> torch.Tensor:
    """Pseudo-label graph ``W^q`` (CoMatch eq. 6-7).

    ``W^q_bj = q_b . q_j`` for ``b != j``, zeroed where below ``threshold``; self-loops are 1
    whatever the threshold (so ``threshold > 1`` leaves only self-loops: instance contrast);
    finally each row is normalised to sum to 1.

    With a momentum queue (the large-scale variant) the columns are extended by the ``K``
    queued pseudo-labels: ``W^q`` is ``[N, N + K]`` between ``q`` and ``cat(q, queue_probs)``;
    queued columns are never self-loops.

    Args:
        probs: pseudo-labels ``q`` ``[N, C]``.
        threshold: edge threshold ``t``; 0 connects every pair.
        queue_probs: pseudo-labels of past samples ``[K, C]``, or None (``K = 0``).

    Returns:
        Row-stochastic target graph ``[N, N + K]``.
    """
    probs = probs.detach()
    columns = probs if queue_probs is None else torch.cat([probs, queue_probs.detach().to(probs)])
    graph = probs @ columns.T  # [N, N + K]
    graph = graph * (graph >= threshold)
    graph[:, : probs.shape[0]].fill_diagonal_(1.0)
    return graph / graph.sum(dim=1, keepdim=True)


def contrastive_graph_loss(
    z0: torch.Tensor, z1: torch.Tensor, target_graph: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Graph contrastive loss (CoMatch eq. 8-9): cross-entropy of ``W^z`` against ``W^q``.

    ``W^z_bj = softmax_j(z0_b . z1_j / T)`` and ``L_c = mean_b(-sum_j W^q_bj log W^z_bj)``.
    Computed in at least float32 through ``log_softmax`` for stability.

    Args:
        z0: L2-normalised embeddings of the first strong view ``[N, D]``.
        z1: L2-normalised embeddings of the second strong view ``[M, D]`` (``M >= N``; with a
            momentum queue the extra columns are past embeddings).
        target_graph: row-stochastic target ``W^q`` ``[N, M]`` (detached).
        temperature: ``T > 0``.

    Returns:
        Scalar loss.
    """
    compute_dtype = torch.promote_types(z0.dtype, torch.float32)
    logits = z0.to(compute_dtype) @ z1.to(compute_dtype).T / temperature  # [N, M]
    log_wz = F.log_softmax(logits, dim=1)
    return -(target_graph.detach().to(compute_dtype) * log_wz).sum(dim=1).mean()


def pseudo_label_loss(
    logits_strong: torch.Tensor, targets: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Masked soft-target cross-entropy on the strong view (CoMatch eq. 5).

    ``L_u = (1 / N) sum_b 1[max(q_b) >= tau] * H(q_b, softmax(logits_b))``: averaged over all
    ``N`` samples, masked ones included, as in FixMatch. Hard targets are one-hot rows; a row
    of zeros contributes nothing.

    Args:
        logits_strong: logits of the strong view ``[N, C]``.
        targets: pseudo-labels ``q`` ``[N, C]`` (detached).
        threshold: confidence threshold ``tau``.

    Returns:
        Scalar loss.
    """
    targets = targets.detach()
    compute_dtype = torch.promote_types(logits_strong.dtype, torch.float32)
    mask = (targets.max(dim=1).values >= threshold).to(compute_dtype)  # [N]
    log_probs = F.log_softmax(logits_strong.to(compute_dtype), dim=1)
    per_sample = -(targets.to(compute_dtype) * log_probs).sum(dim=1)  # [N]
    return (per_sample * mask).mean()
