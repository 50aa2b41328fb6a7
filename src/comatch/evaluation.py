"""Evaluation of a classifier on a labelled dataset."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

Preprocess = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict(
    model: nn.Module, loader: DataLoader, preprocess: Preprocess
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``model`` in eval mode over ``loader``.

    Args:
        model: returns ``(logits, z)``.
        loader: yields ``(uint8 images, labels)``.
        preprocess: moves a uint8 batch to the device and normalises it.

    Returns:
        ``(logits [N, C], embeddings [N, D], labels [N])`` on the CPU.
    """
    was_training = model.training
    model.eval()
    logits, embeddings, labels = [], [], []
    for images, targets in loader:
        batch_logits, batch_z = model(preprocess(images))
        logits.append(batch_logits.float().cpu())
        embeddings.append(batch_z.float().cpu())
        labels.append(targets)
    model.train(was_training)
    return torch.cat(logits), torch.cat(embeddings), torch.cat(labels)


def accuracy(model: nn.Module, loader: DataLoader, preprocess: Preprocess) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, in [0, 1]."""
    logits, _, labels = predict(model, loader, preprocess)
    return (logits.argmax(dim=1) == labels).float().mean().item()
