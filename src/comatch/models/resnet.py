"""ResNet encoders built from torchvision (randomly initialised, never downloaded)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import ResNet, resnet18, resnet50

__all__ = ["ResNetEncoder"]

_FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048}
_BUILDERS: dict[str, Callable[..., ResNet]] = {"resnet18": resnet18, "resnet50": resnet50}


def _make_stem_conv(in_channels: int, small_input: bool) -> nn.Conv2d:
    """First convolution of the network.

    Args:
        in_channels: Image channels.
        small_input: Use a 3x3 stride-1 conv (small images) instead of 7x7 stride-2.

    Returns:
        A Kaiming-initialised convolution with 64 output channels.
    """
    if small_input:
        conv = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    else:
        conv = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class ResNetEncoder(nn.Module):
    """torchvision ResNet without its final fully connected layer.

    Args:
        arch: ``"resnet18"`` or ``"resnet50"``.
        in_channels: Image channels.
        small_input: Replace the 7x7 stride-2 stem and the max-pool by a
            3x3 stride-1 conv without pooling (for 32-96 px images).
        bn_momentum: If given, overrides the momentum of every BatchNorm layer.

    Attributes:
        feature_dim: 512 for ResNet-18, 2048 for ResNet-50.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        in_channels: int = 3,
        small_input: bool = False,
        bn_momentum: float | None = None,
    ) -> None:
        super().__init__()
        if arch not in _BUILDERS:
            raise ValueError(f"unknown ResNet {arch!r}; choose one of {sorted(_BUILDERS)}")
        net = _BUILDERS[arch](weights=None)
        if small_input or in_channels != 3:
            net.conv1 = _make_stem_conv(in_channels, small_input)
        if small_input:
            net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        if bn_momentum is not None:
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = bn_momentum
        self.net = net
        self.arch = arch
        self.small_input = small_input
        self.feature_dim = _FEATURE_DIMS[arch]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            x: Images ``[N, in_channels, H, W]``.

        Returns:
            Features ``[N, feature_dim]`` (global-average pooled).
        """
        return self.net(x)

