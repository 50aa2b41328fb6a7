"""Networks, EMA and optimizer helpers for CoMatch."""

from __future__ import annotations

from torch import nn

from comatch.errors import UserError

from .ema import ModelEMA, ema_decay
from .heads import CoMatchNet
from .optim import param_groups_for_weight_decay, param_groups_layer_decay
from .resnet import ResNetEncoder
from .small import DigitsNet
from .timm_backbone import TimmEncoder, is_timm_arch, timm_name
from .wideresnet import WideResNetEncoder

__all__ = [
    "ARCHITECTURES",
    "CoMatchNet",
    "DigitsNet",
    "ModelEMA",
    "ResNetEncoder",
    "TimmEncoder",
    "WideResNetEncoder",
    "INIT_SCHEMES",
    "build_encoder",
    "build_model",
    "released_init",
    "ema_decay",
    "param_groups_for_weight_decay",
    "param_groups_layer_decay",
]

ARCHITECTURES: tuple[str, ...] = (
    "digits_cnn",
    "wrn28_2",
    "wrn28_8",
    "wrn37_2",
    "wrn10_1",
    "resnet18",
    "resnet50",
)

# (depth, widen_factor, num_groups) of the WideResNet variants.
_WRN_CONFIGS: dict[str, tuple[int, int, int]] = {
    "wrn28_2": (28, 2, 3),
    "wrn28_8": (28, 8, 3),
    "wrn37_2": (37, 2, 4),
    "wrn10_1": (10, 1, 3),
}


def _momentum_kwargs(bn_momentum: float | None) -> dict[str, float]:
    """Keyword arguments that override the encoder's BN momentum only when given.

    Args:
        bn_momentum: Requested momentum or None for the architecture default.

    Returns:
        ``{"bn_momentum": value}`` or an empty dict.
    """
    return {} if bn_momentum is None else {"bn_momentum": float(bn_momentum)}


def build_encoder(
    arch: str, in_channels: int = 3, bn_momentum: float | None = None, pretrained: bool = False
) -> nn.Module:
    """Build an encoder by name.

    Args:
        arch: One of :data:`ARCHITECTURES`, or a timm model as ``timm:NAME`` / ``timm/NAME``
            (optional extra ``comatch[timm]``; pooled features of ``timm.create_model``).
        in_channels: Image channels.
        bn_momentum: BatchNorm momentum (PyTorch convention); None keeps the
            architecture default (WRN 0.001, digits CNN 0.01, ResNet 0.1).
        pretrained: timm models only: timm's pretrained weights (downloaded, or from its cache).

    Returns:
        An encoder with a ``feature_dim`` attribute.

    Raises:
        ValueError: For an unknown architecture name.
        UserError: timm missing, unknown timm model, or pretrained weights not cached.
    """
    if is_timm_arch(arch):
        return TimmEncoder(timm_name(arch), in_channels, bn_momentum, pretrained=pretrained)
    if pretrained:
        raise UserError(f"model.pretrained=true needs a timm model (model.arch=timm:NAME), not {arch!r}; "
                        "for the built-in networks give a weights file as model.init")
    kw = _momentum_kwargs(bn_momentum)
    if arch == "digits_cnn":
        return DigitsNet(in_channels=in_channels, **kw)
    if arch in _WRN_CONFIGS:
        depth, width, groups = _WRN_CONFIGS[arch]
        return WideResNetEncoder(in_channels, depth, width, groups, **kw)
    if arch == "resnet18":
        return ResNetEncoder("resnet18", in_channels, small_input=True, **kw)
    if arch == "resnet50":
        return ResNetEncoder("resnet50", in_channels, small_input=False, **kw)
    raise ValueError(
        f"unknown model architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)} "
        "or a timm model as timm:NAME"
    )


INIT_SCHEMES: tuple[str, ...] = ("project", "released")
"""Initialisations :func:`build_model` offers (``model.init_scheme``)."""


def released_init(model: CoMatchNet, arch: str) -> None:
    """Re-initialise ``model`` as the released CoMatch code initialises its networks.

    Wide ResNets: convolutions Kaiming-normal with ``fan_in`` (gain ``sqrt(2)``; this
    project's default is ``fan_out``). ResNets keep their ``fan_out`` convolutions, as the
    released ResNet-50 has them. Every network: the classifier and the projection head keep
    PyTorch's default ``nn.Linear`` initialisation (uniform weights and biases) instead of
    Xavier-normal weights and zero biases.

    Args:
        model: A freshly built network (modified in place).
        arch: Its architecture name.
    """
    if arch.startswith("wrn"):
        for module in model.encoder.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="leaky_relu", a=0.0)
    for module in (model.classifier, *model.projector):
        if isinstance(module, nn.Linear):
            module.reset_parameters()


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    proj_dim: int = 64,
    bn_momentum: float | None = None,
    head_activation: str = "leaky_relu",
    init_scheme: str = "project",
    pretrained: bool = False,
) -> CoMatchNet:
    """Build a CoMatch network (encoder + classifier + projector).

    Args:
        arch: One of :data:`ARCHITECTURES`.
        num_classes: Number of classes.
        in_channels: Image channels.
        proj_dim: Embedding dimension of the projection head.
        bn_momentum: Optional BatchNorm momentum override (see :func:`build_encoder`).
        head_activation: Projection-head non-linearity, ``leaky_relu`` or ``relu``.
        init_scheme: ``"project"`` (this project's initialisation) or ``"released"``
            (:func:`released_init`, applied after building).
        pretrained: timm models only: start from the weights in timm's local cache.

    Returns:
        The network; ``forward`` returns ``(logits, z)``.

    Raises:
        ValueError: For an unknown architecture name or initialisation scheme.
    """
    if init_scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme must be one of {INIT_SCHEMES}, got {init_scheme!r}")
    encoder = build_encoder(arch, in_channels, bn_momentum, pretrained=pretrained)
    model = CoMatchNet(encoder, encoder.feature_dim, num_classes, proj_dim, head_activation)
    if init_scheme == "released":
        released_init(model, arch)
    return model
