"""Optimizer helpers."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["EXEMPTIONS", "param_groups_for_weight_decay"]

EXEMPTIONS = ("norm_and_bias", "norm", "none")
"""Which parameters weight decay spares (see :func:`param_groups_for_weight_decay`)."""

_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _norm_parameter_ids(model: nn.Module) -> set[int]:
    """``id`` of every parameter owned directly by a normalisation layer (BatchNorm, GroupNorm, LayerNorm)."""
    return {id(p) for module in model.modules() if isinstance(module, _NORM_LAYERS)
            for p in module.parameters(recurse=False)}


def param_groups_for_weight_decay(model: nn.Module, weight_decay: float,
                                  exempt: str = "norm_and_bias") -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed and a non-decayed group.

    * ``exempt="norm_and_bias"`` (this project's default): parameters with
      ``ndim <= 1`` (normalisation weights and biases, every bias) get no weight decay.
    * ``exempt="norm"`` (the released CoMatch CIFAR code, which spares parameters of its
      BatchNorm layers): only parameters of normalisation layers are spared; the biases of
      the classifier and projection head are decayed.
    * ``exempt="none"`` (the released ImageNet code, one group for ``model.parameters()``):
      every parameter is decayed.

    Parameters with ``requires_grad=False`` are skipped; shared parameters appear once.

    Args:
        model: The model whose parameters are grouped.
        weight_decay: Weight decay of the decayed group.
        exempt: One of :data:`EXEMPTIONS`.

    Returns:
        ``[{"params": decayed, "weight_decay": weight_decay},
        {"params": not_decayed, "weight_decay": 0.0}]``, suitable for
        ``torch.optim`` constructors. A group with no parameters is omitted.

    Raises:
        ValueError: If ``exempt`` is unknown.
    """
    if exempt not in EXEMPTIONS:
        raise ValueError(f"weight-decay exemption must be one of {EXEMPTIONS}, got {exempt!r}")
    norm_ids = _norm_parameter_ids(model) if exempt == "norm" else set()
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, param in model.named_parameters():  # named_parameters de-duplicates
        if not param.requires_grad:
            continue
        if exempt == "norm_and_bias":
            spared = param.ndim <= 1
        else:
            spared = id(param) in norm_ids
        (no_decay if spared else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
