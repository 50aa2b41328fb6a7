"""Per-image scores over a pool of unlabelled images: what to label next, what does not belong.

Pure functions of embeddings and probabilities (no network, no files), so that they can be
tested on hand-made points. The equations are in docs/trust.md.

* :func:`smoothed_pool_labels`: CoMatch's memory-smoothed pseudo-label (eq. 4) with the
  labelled images (one-hot) and the rest of the pool as the memory bank.
* :func:`uncertainty`: ``(1 - max_c q_c) * C / (C - 1)``, in [0, 1].
* :func:`diverse_ranking`: k-centre greedy weighted by uncertainty, so that K picks cover the
  embedding space instead of being K near-duplicates.
* :func:`knn_similarity`, :func:`ood_scores`: out-of-distribution score from the
  neighbourhood among the labelled embeddings and the confidence.
* :func:`auroc`: area under the ROC curve of a score separating two groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CHUNK = 1024  # rows of a similarity matrix computed at once


def smoothed_pool_labels(
    probs: torch.Tensor,
    z: torch.Tensor,
    labelled_z: torch.Tensor,
    labelled_targets: torch.Tensor,
    alpha: float = 0.9,
    temperature: float = 0.2,
) -> torch.Tensor:
    """Memory-smoothed pseudo-labels of every pool image ``q [N, C]``.

    ``q_i = alpha p_i + (1 - alpha) sum_j a_ij p_j`` with ``a_ij = softmax_j(z_i . z_j / T)``
    over the labelled images (their one-hot labels) and the other pool images (their ``p``);
    an image is never its own neighbour.

    Args:
        probs: the pool's class probabilities ``[N, C]``.
        z: the pool's unit embeddings ``[N, D]``.
        labelled_z: the labelled images' unit embeddings ``[L, D]``.
        labelled_targets: their classes ``[L]``.
        alpha: weight of the image's own prediction (``comatch.alpha``).
        temperature: ``T`` of the similarities (``comatch.temperature``).

    Returns:
        ``q [N, C]``, rows summing to 1.
    """
    num_classes = probs.shape[1]
    onehot = F.one_hot(labelled_targets.long(), num_classes).to(probs)  # [L, C]
    bank_z = torch.cat([labelled_z, z])  # [L + N, D]
    bank_p = torch.cat([onehot, probs])  # [L + N, C]
    out = torch.empty_like(probs)
    n_lab = labelled_z.shape[0]
    for start in range(0, probs.shape[0], CHUNK):
        rows = slice(start, min(start + CHUNK, probs.shape[0]))
        logits = z[rows] @ bank_z.T / temperature  # [n, L + N]
        own = torch.arange(rows.start, rows.stop) + n_lab
        logits[torch.arange(own.numel()), own] = float("-inf")  # not its own neighbour
        neighbours = torch.softmax(logits, dim=1) @ bank_p  # [n, C]
        out[rows] = alpha * probs[rows] + (1 - alpha) * neighbours
    return out


def uncertainty(q: torch.Tensor) -> torch.Tensor:
    """``(1 - max_c q_c) * C / (C - 1)`` per row of ``q [N, C]``: 0 certain, 1 uniform."""
    num_classes = q.shape[1]
    return (1 - q.max(dim=1).values) * num_classes / max(num_classes - 1, 1)


def cosine_distance_to_set(z: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``min_s (1 - z_i . z_s) / 2`` over the rows of ``chosen [S, D]`` for each row of
    ``z [N, D]`` (unit vectors), in [0, 1]; 1 when ``chosen`` is empty."""
    if chosen.shape[0] == 0:
        return torch.ones(z.shape[0])
    best = torch.full((z.shape[0],), -1.0)
    for start in range(0, chosen.shape[0], CHUNK):
        best = torch.maximum(best, (z @ chosen[start:start + CHUNK].T).max(dim=1).values)  # [N]
    return ((1 - best) / 2).clamp(0, 1)


@dataclass
class Ranking:
    """The K picks of :func:`diverse_ranking`, in pick order.

    Attributes:
        order: pool rows picked ``[K]``.
        score: the gain ``(floor + u) * d`` of each pick when it was made ``[K]``.
        uncertainty: ``u`` of each pick ``[K]``.
        distance: ``d``, its cosine distance to the labelled and earlier picks ``[K]``.
    """

    order: torch.Tensor
    score: torch.Tensor
    uncertainty: torch.Tensor
    distance: torch.Tensor


def diverse_ranking(z: torch.Tensor, u: torch.Tensor, k: int, labelled_z: torch.Tensor | None = None,
                    floor: float = 0.05) -> Ranking:
    """Pick ``k`` pool rows by uncertainty-weighted k-centre greedy.

    Each round picks ``argmax_i (floor + u_i) * d_i``, where ``d_i`` is the cosine distance
    (``(1 - cos) / 2``) from ``z_i`` to the nearest labelled image or earlier pick. A
    near-duplicate of an earlier pick has ``d ~ 0`` and waits; ``floor`` keeps pure coverage
    working when every ``u`` is 0 (a confident model) or meaningless (before training: pass
    ``u = 1``).

    Args:
        z: the pool's unit embeddings ``[N, D]``.
        u: their uncertainties ``[N]`` in [0, 1].
        k: picks wanted (at most ``N``).
        labelled_z: unit embeddings of the images already labelled ``[L, D]``.
        floor: added to ``u`` (see above).

    Returns:
        The picks with their scores.
    """
    k = min(k, z.shape[0])
    anchors = labelled_z if labelled_z is not None else z.new_zeros(0, z.shape[1])
    distance = cosine_distance_to_set(z, anchors)  # [N]
    weight = floor + u
    picks, scores, dists = [], [], []
    taken = torch.zeros(z.shape[0], dtype=torch.bool)
    for _ in range(k):
        gain = (weight * distance).masked_fill(taken, float("-inf"))
        best = int(gain.argmax())
        picks.append(best)
        scores.append(float(gain[best]))
        dists.append(float(distance[best]))
        taken[best] = True
        distance = torch.minimum(distance, ((1 - z @ z[best]) / 2).clamp(0, 1))  # [N]
    order = torch.tensor(picks, dtype=torch.long)
    return Ranking(order, torch.tensor(scores), u[order], torch.tensor(dists))


def knn_similarity(z: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """Mean cosine similarity of each row of ``z [N, D]`` to its ``k`` most similar rows of
    ``reference [R, D]`` (unit vectors) ``[N]``; ``k`` is capped at ``R``."""
    k = max(1, min(k, reference.shape[0]))
    parts = [(z[i:i + CHUNK] @ reference.T).topk(k, dim=1).values.mean(dim=1) for i in range(0, z.shape[0], CHUNK)]
    return torch.cat(parts) if parts else z.new_zeros(0)


def ood_scores(z: torch.Tensor, probs: torch.Tensor, reference: torch.Tensor, k: int = 5,
               weight: float = 0.5) -> torch.Tensor:
    """Out-of-distribution score of each pool image ``[N]``, in [0, 1]: higher is stranger.

    ``s_i = weight * (1 - sim_i) / 2 + (1 - weight) * (1 - max_c p_ic)``, where ``sim_i`` is
    the mean cosine similarity to the ``k`` nearest labelled embeddings
    (:func:`knn_similarity`): an image far from every labelled image, on which the model is
    unsure, scores high.

    Args:
        z: the pool's unit embeddings ``[N, D]``.
        probs: its class probabilities ``[N, C]``.
        reference: unit embeddings of images known to belong (the labelled ones) ``[R, D]``.
        k: neighbours averaged.
        weight: share of the neighbourhood term (the rest is the confidence term).
    """
    far = (1 - knn_similarity(z, reference, k)) / 2  # [N], in [0, 1]
    unsure = 1 - probs.max(dim=1).values  # [N]
    return weight * far + (1 - weight) * unsure


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores [N]`` for ``positive [N]`` (bool): the chance that
    a random positive scores above a random negative (ties count half); scikit-learn's
    ``roc_auc_score``.

    Raises:
        ValueError: one of the groups is empty.
    """
    from sklearn.metrics import roc_auc_score

    if bool(positive.all()) or not bool(positive.any()):
        raise ValueError("AUROC needs at least one positive and one negative")
    return float(roc_auc_score(positive.numpy(), scores.double().numpy()))
