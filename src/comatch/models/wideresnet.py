"""Wide residual network encoder in the FixMatch / CoMatch flavour.

Differences from the original WRN (Zagoruyko & Komodakis, 2016) follow the
FixMatch reference implementation:

* LeakyReLU with slope 0.1 instead of ReLU;
* BatchNorm with PyTorch ``momentum=0.001`` (TensorFlow decay 0.999);
* in the first block of the first group the pre-activation is also fed to the
  shortcut ("activate_before_residual");
* Kaiming-normal (fan_out, leaky_relu) convolution init.

Speed without changing the function: the activations are in-place (LeakyReLU may overwrite its
BatchNorm output; its backward needs only the output), and on the CPU the images enter in the
channels-last memory format, which oneDNN convolutions run markedly faster than NCHW (every later
activation keeps the format). Both give the released network's outputs up to float rounding;
benchmarks/LOG.md times them against a reference copy of it.

``num_groups=3`` gives the CIFAR networks (WRN-28-2, WRN-28-8); ``num_groups=4``
gives FixMatch's STL-10 network WRN-37-2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WideResNetEncoder", "BasicBlock", "blocks_per_group"]

LRELU_SLOPE = 0.1


def init_conv_bn(module: nn.Module) -> None:
    """Kaiming-normal convolutions (fan_out, leaky_relu); BatchNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Convolution stride.

    Returns:
        The convolution layer.
    """
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def blocks_per_group(depth: int, num_groups: int) -> int:
    """Number of basic blocks per group for a given WRN depth.

    Uses ``depth = 2 * n * num_groups + num_groups + 1``, the usual ``6n + 4``
    convention for three groups, extended to four groups so that FixMatch's
    STL-10 network WRN-37-2 has ``n = 4``. WRN-28 gives ``n = 4`` and WRN-10
    gives ``n = 1``.

    Args:
        depth: Network depth.
        num_groups: Number of resolution groups (3 or 4).

    Returns:
        Blocks per group.

    Raises:
        ValueError: If the depth does not match the formula.
    """
    n, rem = divmod(depth - 1 - num_groups, 2 * num_groups)
    if rem != 0 or n < 1:
        raise ValueError(
            f"invalid WideResNet depth {depth} for {num_groups} groups; "
            f"depth must be 2*n*{num_groups} + {1 + num_groups} with n >= 1"
        )
    return n


class BasicBlock(nn.Module):
    """Pre-activation residual block: BN-LReLU-conv3x3-BN-LReLU-conv3x3.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Stride of the first convolution (and of the shortcut).
        bn_momentum: BatchNorm momentum (PyTorch convention).
        activate_before_residual: Feed the pre-activated input to the shortcut.
        dropout: Dropout probability between the two convolutions.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        bn_momentum: float,
        activate_before_residual: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, momentum=bn_momentum)
        self.act1 = nn.LeakyReLU(LRELU_SLOPE, inplace=True)
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch, momentum=bn_momentum)
        self.act2 = nn.LeakyReLU(LRELU_SLOPE, inplace=True)
        self.conv2 = _conv3x3(out_ch, out_ch, 1)
        self.dropout = dropout
        self.activate_before_residual = activate_before_residual
        self.shortcut: nn.Module | None = None
        if in_ch != out_ch or stride != 1:
            self.shortcut = nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: Input ``[N, in_ch, H, W]``.

        Returns:
            Output ``[N, out_ch, H / stride, W / stride]``.
        """
        pre = self.act1(self.bn1(x))
        residual_in = pre if self.activate_before_residual else x
        out = self.conv1(pre)
        out = self.act2(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        shortcut = residual_in if self.shortcut is None else self.shortcut(residual_in)
        return shortcut + out


class WideResNetEncoder(nn.Module):
    """WideResNet feature extractor ending in BN-LReLU-global average pooling.

    Args:
        in_channels: Image channels.
        depth: Network depth (28 or 10 for 3 groups, 37 for 4 groups).
        widen_factor: Width multiplier ``w``.
        num_groups: 3 (channels 16w, 32w, 64w) or 4 (adds 128w).
        bn_momentum: BatchNorm momentum (PyTorch convention; 0.001 as in FixMatch).
        dropout: Dropout probability inside the blocks.

    Attributes:
        feature_dim: Output feature dimension (``64w`` or ``128w``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        depth: int = 28,
        widen_factor: int = 2,
        num_groups: int = 3,
        bn_momentum: float = 0.001,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_groups not in (3, 4):
            raise ValueError(f"num_groups must be 3 or 4, got {num_groups}")
        n = blocks_per_group(depth, num_groups)
        widths = [16 * widen_factor * 2**g for g in range(num_groups)]
        strides = [1] + [2] * (num_groups - 1)
        self.stem = _conv3x3(in_channels, 16, 1)
        groups: list[nn.Module] = []
        in_ch = 16
        for g, (width, stride) in enumerate(zip(widths, strides)):
            blocks = [
                BasicBlock(
                    in_ch if i == 0 else width,
                    width,
                    stride if i == 0 else 1,
                    bn_momentum,
                    activate_before_residual=(g == 0 and i == 0),
                    dropout=dropout,
                )
                for i in range(n)
            ]
            groups.append(nn.Sequential(*blocks))
            in_ch = width
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(in_ch, momentum=bn_momentum)
        self.act = nn.LeakyReLU(LRELU_SLOPE, inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_ch
        self.depth = depth
        self.widen_factor = widen_factor
        self.num_groups = num_groups
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            x: Images ``[N, in_channels, H, W]`` (any resolution).

        Returns:
            Features ``[N, feature_dim]``.
        """
        if x.device.type == "cpu" and x.dim() == 4:  # oneDNN convolutions are faster channels-last
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.groups(self.stem(x))  # [N, feature_dim, H', W']
        out = self.act(self.bn(out))
        return torch.flatten(self.pool(out), 1)  # [N, feature_dim, 1, 1] -> [N, feature_dim]
