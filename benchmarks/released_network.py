"""A reference copy of the WideResNet of the released CoMatch code, for the benchmarks only.

Written from the published description of the network used by the released FixMatch / CoMatch
PyTorch code: pre-activation basic blocks (BN - LeakyReLU(0.1) - conv3x3 - BN - LeakyReLU(0.1) -
conv3x3, in-place activations), BatchNorm momentum 0.001, a 1x1 projection shortcut where the
shape changes (fed with the activated input in the first block), a final BN - LeakyReLU, global
mean pooling, Kaiming-normal (fan_out, leaky_relu) convolutions, a linear classifier and
CoMatch's projection head fc - LeakyReLU - fc to 64 dimensions, L2-normalised.
``benchmarks/network_speed.py`` times this project's network against it;
``benchmarks/released_loop.py`` trains it the way the released script does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ReferenceBlock", "ReferenceWideResNet"]


class ReferenceBlock(nn.Module):
    """Pre-activation basic block as in the released code (in-place LeakyReLU).

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Stride of the first convolution and of the shortcut.
        activate_before_residual: Feed the activated input to the shortcut.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, activate_before_residual: bool) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, momentum=0.001)
        self.relu1 = nn.LeakyReLU(0.1, inplace=True)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, momentum=0.001)
        self.relu2 = nn.LeakyReLU(0.1, inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.downsample = None
        if in_ch != out_ch or stride != 1:
            self.downsample = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
        self.activate_before_residual = activate_before_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: Input ``[N, in_ch, H, W]``.

        Returns:
            Output ``[N, out_ch, H / stride, W / stride]``.
        """
        act1 = self.relu1(self.bn1(x))
        residual = self.conv2(self.relu2(self.bn2(self.conv1(act1))))
        shortcut = act1 if self.activate_before_residual else x
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return shortcut + residual


class ReferenceWideResNet(nn.Module):
    """WRN-n-k with classifier and CoMatch projection head, as described for the released code.

    Args:
        depth: Network depth ``6 b + 4``.
        widen_factor: Width multiplier ``k``.
        num_classes: Classes of the linear classifier.
        in_channels: Image channels.
        low_dim: Embedding dimension.
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 10, in_channels: int = 3,
                 low_dim: int = 64) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        layers, in_ch = [], 16
        for g, (width, stride) in enumerate(zip(widths, (1, 2, 2))):
            blocks = [ReferenceBlock(in_ch if i == 0 else width, width, stride if i == 0 else 1,
                                     activate_before_residual=(g == 0 and i == 0)) for i in range(n)]
            layers.append(nn.Sequential(*blocks))
            in_ch = width
        self.layers = nn.Sequential(*layers)
        self.bn_last = nn.BatchNorm2d(in_ch, momentum=0.001)
        self.relu_last = nn.LeakyReLU(0.1, inplace=True)
        self.classifier = nn.Linear(in_ch, num_classes)
        self.fc1 = nn.Linear(in_ch, in_ch)
        self.relu_mlp = nn.LeakyReLU(0.1, inplace=True)
        self.fc2 = nn.Linear(in_ch, low_dim)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and L2-normalised embeddings.

        Args:
            x: Images ``[N, C, H, W]``.

        Returns:
            ``(logits [N, num_classes], z [N, low_dim])``.
        """
        feat = self.relu_last(self.bn_last(self.layers(self.conv1(x))))
        feat = torch.mean(feat, dim=(2, 3))  # [N, C, H, W] -> [N, C]
        logits = self.classifier(feat)
        z = self.fc2(self.relu_mlp(self.fc1(feat)))
        return logits, F.normalize(z, dim=1)
