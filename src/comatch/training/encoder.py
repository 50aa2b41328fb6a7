"""How a method runs a network: uint8 views in, float32 ``(logits, z)`` out.

Images are normalised, optionally made channels-last, and the network runs under the run's
autocast; its outputs are cast to float32 so that a method's own arithmetic always runs in
float32, outside autocast. The trainer hands an :class:`Encoder` to the method each step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from comatch.training.precision import Precision

Timer = Callable[[str], contextlib.AbstractContextManager]
"""Makes a context manager that times one named phase of a step (see Trainer.timer)."""


def no_timer(phase: str) -> contextlib.AbstractContextManager:
    """The default :data:`Timer`: times nothing."""
    return contextlib.nullcontext()


class Encoder:
    """Implements :class:`~comatch.methods.base.Encode` for one run.

    Args:
        net: the trained network as it is called for training (DistributedDataParallel,
            torch.compile'd, or the network itself).
        normalize: maps a uint8 batch to the normalised float batch on the device.
        precision: the run's :class:`~comatch.training.precision.Precision`.
        channels_last: use the channels-last memory format for the images.
        timer: times each network call as the ``network`` phase.
    """

    def __init__(self, net: nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor], precision: Precision,
                 channels_last: bool = False, timer: Timer = no_timer) -> None:
        self.net, self.normalize, self.precision = net, normalize, precision
        self.channels_last, self.timer = channels_last, timer

    def __call__(self, images: torch.Tensor, network: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 ``(logits [n, C], z [n, D])`` of a uint8 batch ``[n, C, H, W]``.

        Args:
            images: the batch.
            network: the module to run; None: the trained network.
        """
        with self.timer("network"):
            inputs = self.normalize(images)
            if self.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with self.precision.autocast():
                logits, z = (self.net if network is None else network)(inputs)
            return logits.float(), z.float()
