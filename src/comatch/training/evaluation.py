"""Evaluation of a classifier on a labelled dataset."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

Preprocess = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def network_outputs(
    model: nn.Module, loader: DataLoader, preprocess: Preprocess
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a :class:`~comatch.models.CoMatchNet` in eval mode over ``loader``.

    Args:
        model: has ``features(x)`` and ``heads(features) -> (logits, z)``.
        loader: yields ``(uint8 images, labels)``.
        preprocess: moves a uint8 batch to the device and normalises it.

    Returns:
        ``(features [N, F], logits [N, C], embeddings [N, D], labels [N])`` on the CPU.
    """
    was_training = model.training
    model.eval()
    parts: list[list[torch.Tensor]] = [[], [], [], []]
    for images, targets in loader:
        feats = model.features(preprocess(images))
        logits, z = model.heads(feats)
        for part, value in zip(parts, (feats, logits, z)):
            part.append(value.float().cpu())
        parts[3].append(targets)
    model.train(was_training)
    return tuple(torch.cat(part) for part in parts)  # type: ignore[return-value]


def predict(
    model: nn.Module, loader: DataLoader, preprocess: Preprocess
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits [N, C], embeddings [N, D], labels [N])`` of ``model`` over ``loader``."""
    _, logits, z, labels = network_outputs(model, loader, preprocess)
    return logits, z, labels


def accuracy(model: nn.Module, loader: DataLoader, preprocess: Preprocess) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, in [0, 1]."""
    logits, _, labels = predict(model, loader, preprocess)
    return (logits.argmax(dim=1) == labels).float().mean().item()


def evaluate_parts(model: nn.Module, ema_model: nn.Module, parts: dict, loader: Callable[[object], DataLoader],
                   preprocess: Preprocess) -> dict[str, float]:
    """Accuracy of a network and its EMA twin on each named dataset of ``parts`` (``None`` ones
    skipped): ``{"<part>_acc": ..., "<part>_acc_ema": ...}``; ``loader`` makes a dataset's loader."""
    result = {}
    for part, dataset in parts.items():
        if dataset is None:
            continue
        batches = loader(dataset)
        result[f"{part}_acc"] = accuracy(model, batches, preprocess)
        result[f"{part}_acc_ema"] = accuracy(ema_model, batches, preprocess)
    return result
