"""How good the learned representations are: k-nearest-neighbour accuracy.

The paper's claim is that CoMatch's embeddings separate classes better. A kNN classifier on
frozen features measures that directly: every test image takes the (similarity-weighted)
majority label of its ``k`` most cosine-similar training images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from comatch.training.evaluation import network_outputs


def encode(
    model: nn.Module, loader: DataLoader, preprocess: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encoder features, projection embeddings and labels of a dataset (eval mode).

    Returns:
        ``(features [N, F], z [N, D], labels [N])`` on the CPU.
    """
    feats, _, z, labels = network_outputs(model, loader, preprocess)
    return feats, z, labels


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 10,
) -> float:
    """Accuracy of a cosine-similarity-weighted k-nearest-neighbour vote.

    Args:
        train_feats: memory features ``[M, F]``; ``train_labels`` their classes ``[M]``.
        test_feats: query features ``[N, F]``; ``test_labels`` their classes ``[N]``.
        k: neighbours per query.

    Returns:
        Top-1 accuracy in [0, 1].
    """
    memory = F.normalize(train_feats.float(), dim=1)
    queries = F.normalize(test_feats.float(), dim=1)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    sims, idx = (queries @ memory.T).topk(min(k, len(memory)), dim=1)  # [N, k]
    votes = torch.zeros(len(queries), num_classes)
    votes.scatter_add_(1, train_labels[idx], sims.clamp_min(0) + 1e-6)  # [N, C]
    return (votes.argmax(dim=1) == test_labels).float().mean().item()
