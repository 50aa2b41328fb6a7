"""Optimizer helpers."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["param_groups_for_weight_decay"]


def param_groups_for_weight_decay(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed and a non-decayed group.

    Parameters with ``ndim <= 1`` (BatchNorm weights and biases, all biases)
    get no weight decay; conv / linear weights get ``weight_decay``. Parameters
    with ``requires_grad=False`` are skipped; shared parameters appear once.

    Args:
        model: The model whose parameters are grouped.
        weight_decay: Weight decay of the decayed group.

    Returns:
        ``[{"params": decayed, "weight_decay": weight_decay},
        {"params": not_decayed, "weight_decay": 0.0}]``, suitable for
        ``torch.optim`` constructors. A group with no parameters is omitted.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, param in model.named_parameters():  # named_parameters de-duplicates
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
