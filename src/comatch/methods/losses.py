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

Every function checks its inputs before computing: a tensor of the wrong rank, shape or dtype
raises ``ValueError`` (``TypeError`` for a dtype) naming the argument, the shape it has and
the shape expected; an empty batch or a temperature that is not above 0 raises ``ValueError``.
The checks read only shapes, dtypes and Python numbers, so they never wait for a GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "distribution_alignment",
    "memory_smoothed_labels",
    "pseudo_label_graph",
    "contrastive_graph_loss",
    "pseudo_label_loss",
]


def _matrix(name: str, tensor: torch.Tensor, rows: int | None = None, cols: int | None = None,
            *, what: str, floating: bool = True) -> torch.Tensor:
    """Check that ``tensor`` is a 2-D tensor ``[rows, cols]`` (None: any size) of floats.

    Raises:
        TypeError: not a tensor, or not floating point when ``floating``.
        ValueError: not 2-D, or a size other than the one expected.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {what}, got {type(tensor).__name__}")
    if floating and not tensor.is_floating_point():
        hint = ", e.g. F.one_hot(labels, C).float()" if "probabilities" in what else ""
        raise TypeError(f"{name} must be floating point {what}, got dtype {tensor.dtype}{hint}")
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D {what}, got shape {list(tensor.shape)}")
    for axis, (expected, size) in enumerate(zip((rows, cols), tensor.shape)):
        if expected is not None and size != expected:
            raise ValueError(f"{name} must be {what}; got shape {list(tensor.shape)}, expected "
                             f"{expected} {'rows' if axis == 0 else 'columns'}")
    return tensor


def _nonempty(name: str, tensor: torch.Tensor) -> None:
    """Raise ValueError for a batch of no rows (its mean would be NaN)."""
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {list(tensor.shape)}); the loss of no samples is undefined")


def _positive(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a finite number above 0."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number above 0 (it divides the similarities), got {value!r}")


def _number(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise ValueError unless ``value`` is a number (not NaN) within ``[low, high]``."""
    if not isinstance(value, (int, float)) or math.isnan(value) or \
            (low is not None and value < low) or (high is not None and value > high):
        bounds = f" in [{low}, {high}]" if low is not None and high is not None else ""
        raise ValueError(f"{name} must be a number{bounds}, got {value!r}")


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

    Raises:
        TypeError, ValueError: inputs of another shape or dtype (see the module docstring).
    """
    _matrix("probs", probs, what="class probabilities [N, C]")
    classes = probs.shape[1]
    if not isinstance(mean_probs, torch.Tensor) or tuple(mean_probs.shape) != (classes,):
        shape = list(mean_probs.shape) if isinstance(mean_probs, torch.Tensor) else type(mean_probs).__name__
        raise ValueError(f"mean_probs must be the mean class distribution [C] = [{classes}], got {shape}")
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

    Raises:
        TypeError, ValueError: inputs of another shape or dtype, ``alpha`` outside
            ``[0, 1]`` or ``temperature`` not above 0.
    """
    _matrix("probs", probs, what="class probabilities [N, C]")
    n, classes = probs.shape
    _matrix("feats", feats, n, what=f"embeddings [N, D] with N = {n} (the rows of probs)")
    dim = feats.shape[1]
    _matrix("bank_feats", bank_feats, None, dim, what=f"bank embeddings [K, D] with D = {dim}")
    _matrix("bank_probs", bank_probs, bank_feats.shape[0], classes,
            what=f"bank probabilities [K, C] with K = {bank_feats.shape[0]}, C = {classes}")
    _number("alpha", alpha, 0.0, 1.0)
    _positive("temperature", temperature)
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

    Raises:
        TypeError, ValueError: inputs of another shape or dtype, or a NaN threshold.
    """
    _matrix("probs", probs, what="pseudo-labels [N, C]")
    if queue_probs is not None:
        _matrix("queue_probs", queue_probs, None, probs.shape[1],
                what=f"queued pseudo-labels [K, C] with C = {probs.shape[1]}")
    _number("threshold", threshold)
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

    Raises:
        TypeError, ValueError: inputs of another shape or dtype, an empty batch, or
            ``temperature`` not above 0.
    """
    _matrix("z0", z0, what="embeddings [N, D]")
    _nonempty("z0", z0)
    n, dim = z0.shape
    _matrix("z1", z1, None, dim, what=f"embeddings [M, D] with D = {dim}")
    if z1.shape[0] < n:
        raise ValueError(f"z1 must have at least the N = {n} rows of z0 (the second view of the same "
                         f"samples first), got shape {list(z1.shape)}")
    _matrix("target_graph", target_graph, n, z1.shape[0],
            what=f"the target graph [N, M] = [{n}, {z1.shape[0]}]")
    _positive("temperature", temperature)
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

    Raises:
        TypeError: integer targets (class indices instead of probabilities), or integer logits.
        ValueError: ``targets`` not the shape of ``logits_strong`` (no broadcasting), an empty
            batch, or a NaN threshold.
    """
    _matrix("logits_strong", logits_strong, what="logits [N, C]")
    _nonempty("logits_strong", logits_strong)
    n, classes = logits_strong.shape
    _matrix("targets", targets, n, classes, what=f"probabilities [N, C] = [{n}, {classes}] like logits_strong")
    _number("threshold", threshold)
    targets = targets.detach()
    compute_dtype = torch.promote_types(logits_strong.dtype, torch.float32)
    mask = (targets.max(dim=1).values >= threshold).to(compute_dtype)  # [N]
    log_probs = F.log_softmax(logits_strong.to(compute_dtype), dim=1)
    per_sample = -(targets.to(compute_dtype) * log_probs).sum(dim=1)  # [N]
    return (per_sample * mask).mean()
