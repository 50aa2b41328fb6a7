"""Optimizer helpers."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["EXEMPTIONS", "backbone_blocks", "param_groups_for_weight_decay", "param_groups_layer_decay"]

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


def _has_params(module: nn.Module, recurse: bool = True) -> bool:
    """Whether ``module`` holds any parameter."""
    return any(True for _ in module.parameters(recurse=recurse))


def _stage_modules(children: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """``children`` with each ``nn.Sequential`` / ``nn.ModuleList`` of composite blocks opened into them."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in children:
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and all(any(True for _ in c.children()) for c in child):
            out += [(f"{name}.{n}", c) for n, c in child.named_children() if _has_params(c)]
        else:
            out.append((name, child))
    return out


def backbone_blocks(encoder: nn.Module) -> list[list[str]]:
    """The encoder's parameter names grouped into blocks, from the input side to the output side.

    A timm backbone (``encoder.net`` with timm's ``group_matcher``) is grouped by timm's own
    fine-grained matcher (stem, then each block). Other encoders are grouped by their
    top-level children in registration order, which is their stage order: a wrapper holding a
    single child with parameters (e.g. ``ResNetEncoder.net``) is looked through, a
    ``Sequential`` / ``ModuleList`` stage is opened into its blocks, and consecutive single
    layers (a stem's conv and BatchNorm) form one block.

    Args:
        encoder: the network's encoder.

    Returns:
        Lists of parameter names (relative to ``encoder``), first block first; parameters
        directly on a module that has children join the first block.
    """
    prefix, module = "", encoder
    net = getattr(encoder, "net", None)
    if isinstance(net, nn.Module) and hasattr(net, "group_matcher"):
        from timm.models import group_parameters

        groups = group_parameters(net, net.group_matcher(coarse=False))  # {index: [names]}, in order
        return [[f"net.{n}" for n in names] for _, names in sorted(groups.items())]
    while True:
        with_params = [(n, c) for n, c in module.named_children() if _has_params(c)]
        if len(with_params) != 1 or _has_params(module, recurse=False):
            break
        prefix, module = f"{prefix}{with_params[0][0]}.", with_params[0][1]
    blocks: list[list[str]] = []
    previous_leaf = False
    for name, child in _stage_modules(with_params):
        names = [f"{prefix}{name}.{n}" for n, _ in child.named_parameters()]
        leaf = not any(True for _ in child.children())
        if leaf and previous_leaf:  # consecutive single layers (conv1, bn1) form one block
            blocks[-1].extend(names)
        else:
            blocks.append(names)
        previous_leaf = leaf
    own = [f"{prefix}{n}" for n, _ in module.named_parameters(recurse=False)]
    if own:
        blocks = [own + (blocks[0] if blocks else [])] + blocks[1:]
    return [b for b in blocks if b]


def param_groups_layer_decay(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise learning-rate decay (for pretrained backbones).

    The heads (classifier, projector: everything outside ``model.encoder``) get ``lr``; the
    encoder's blocks (:func:`backbone_blocks`), counted from the output side, get
    ``lr * layer_decay ** depth`` with depth 1 for the last block and ``L`` for the first
    (the stem) of ``L`` blocks. Within each depth, weights (``ndim > 1``) get
    ``weight_decay`` and biases / normalisation parameters none, as in
    :func:`param_groups_for_weight_decay`. Frozen parameters are skipped.

    Args:
        model: a network with an ``encoder`` attribute (:class:`~comatch.models.CoMatchNet`).
        lr: learning rate of the heads.
        weight_decay: weight decay of the weights.
        layer_decay: factor per block, in (0, 1]; 1 gives every group ``lr``.

    Returns:
        Groups ``{"params", "lr", "weight_decay", "layer_depth"}`` for ``torch.optim``; the
        learning-rate schedule scales each group's own ``lr``. Empty groups are omitted.

    Raises:
        ValueError: ``layer_decay`` outside (0, 1].
    """
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    params = dict(model.named_parameters())
    blocks = backbone_blocks(model.encoder)
    depth_of = {f"encoder.{name}": len(blocks) - i for i, block in enumerate(blocks) for name in block}
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, param in params.items():
        if not param.requires_grad:
            continue
        depth = depth_of.get(name, 0)  # heads (and anything unmatched): depth 0, the full lr
        groups.setdefault((depth, param.ndim > 1), []).append(param)
    return [
        {"params": group, "lr": lr * layer_decay**depth, "weight_decay": float(weight_decay) if decayed else 0.0,
         "layer_depth": depth}
        for (depth, decayed), group in sorted(groups.items(), key=lambda item: (-item[0][0], not item[0][1]))
    ]


def param_groups(model: nn.Module, weight_decay: float, exempt: str, lr: float,
                 layer_decay: float | None) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: layer-wise learning-rate decay when ``layer_decay`` is
    set (a pretrained backbone), else one learning rate with the weight-decay exemptions."""
    if layer_decay is not None:
        return param_groups_layer_decay(model, lr, weight_decay, layer_decay)
    return param_groups_for_weight_decay(model, weight_decay, exempt)
