"""Small CNN encoder for scikit-learn's 8x8 grayscale digits."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from comatch.models.wideresnet import init_conv_bn

__all__ = ["DigitsNet"]

LRELU_SLOPE = 0.1


def _conv_bn_act(in_ch: int, out_ch: int, bn_momentum: float) -> nn.Sequential:
    """conv3x3 (padding 1, no bias) - BatchNorm - LeakyReLU(0.1).

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        bn_momentum: BatchNorm momentum (PyTorch convention).

    Returns:
        The layer stack; spatial size is preserved.
    """
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch, momentum=bn_momentum),
        nn.LeakyReLU(LRELU_SLOPE, inplace=True),
    )


class _MaxPool2x2ChannelsLast(torch.autograd.Function):
    """2x2 max-pooling of an NCHW CPU batch through the channels-last kernel; NCHW in and out,
    forward and backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out, where = torch.ops.aten.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), [2, 2], [2, 2])
        ctx.save_for_backward(where)
        ctx.in_shape = x.shape
        return out.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        # ``where`` holds each window's maximum as a flat index into its H x W plane; windows
        # do not overlap, so each input position receives at most one gradient (added to
        # zero, as max-pooling's own backward does, so even the sign of a zero agrees)
        (where,) = ctx.saved_tensors
        n, c, h, w = ctx.in_shape
        grad_in = grad.new_zeros(n, c, h * w)
        grad_in.scatter_add_(2, where.contiguous().view(n, c, -1), grad.contiguous().view(n, c, -1))
        return grad_in.view(n, c, h, w)


class MaxPool2x2(nn.Module):
    """2x2 max-pooling, through the channels-last kernel on the CPU.

    PyTorch's CPU kernel for NCHW tensors is slow on small maps (2.0 ms against 0.8 ms for the
    digits CNN's 352 x 32 x 8 x 8 activations, conversions included). Output and gradient are
    handed on in the NCHW layout: a channels-last gradient would meet the NCHW activation in
    the LeakyReLU backward before the pooling, whose kernel takes a slow path for mixed layouts
    (2.0 against 0.08 ms; ``benchmarks/digits_network.py``). Max-pooling reads and returns exact
    values, so the output and the gradient (routed to the first maximum of each window) are bit
    for bit those of ``nn.MaxPool2d(2)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or x.is_contiguous(memory_format=torch.channels_last):
            return F.max_pool2d(x, 2)
        if x.requires_grad and torch.is_grad_enabled() and not torch.jit.is_tracing():
            return _MaxPool2x2ChannelsLast.apply(x)
        # nothing to differentiate, or a TorchScript trace (which cannot hold a Python
        # autograd function): the same values with plain operations
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous()


class DigitsNet(nn.Module):
    """Four-conv CNN for 8x8 images: two convs at 8x8, max-pool, two convs at 4x4.

    Args:
        in_channels: Image channels (1 for the digits data set).
        width: Base width ``c``; the features have ``2c`` dimensions.
        bn_momentum: BatchNorm momentum (PyTorch convention).

    Attributes:
        feature_dim: ``2 * width``.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, bn_momentum: float = 0.01) -> None:
        super().__init__()
        c = width
        self.body = nn.Sequential(
            _conv_bn_act(in_channels, c, bn_momentum),
            _conv_bn_act(c, c, bn_momentum),
            MaxPool2x2(),  # 8x8 -> 4x4
            _conv_bn_act(c, 2 * c, bn_momentum),
            _conv_bn_act(2 * c, 2 * c, bn_momentum),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 2 * c
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            x: Images ``[N, in_channels, H, W]`` (8x8, or larger: global pooling).

        Returns:
            Features ``[N, 2 * width]``.
        """
        out = self.body(x)  # [N, 2c, H/2, W/2]
        return torch.flatten(self.pool(out), 1)  # [N, 2c, 1, 1] -> [N, 2c]
