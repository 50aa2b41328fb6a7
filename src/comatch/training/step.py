"""The forward half of a training step: which network sees which view, then the criterion.

Both functions take ``encode`` callables that map a batch to float32 ``(logits [n, C],
z [n, D])``, so that the criterion always runs in float32, outside autocast;
:class:`StepForward` builds them (normalisation, channels-last, autocast) for the trainer.
Views: ``images_x`` is the labelled weak view ``[B, ...]``; ``views_u`` the unlabelled views
``[N, ...]`` in the criterion's order (weak, strong ``s0``, and the contrastive ``s1`` when
the graph loss is on).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from comatch.methods.criterion import CriterionOutput
from comatch.methods.momentum import MomentumEncoder, shuffled_forward
from comatch.training.precision import Precision

Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def plain_outputs(
    encode: Encode,
    criterion: nn.Module,
    images_x: torch.Tensor,
    targets_x: torch.Tensor,
    views_u: Sequence[torch.Tensor],
) -> CriterionOutput:
    """One forward of the network over ``cat([x_w, u_w, u_s0, u_s1])``, then the criterion.

    Args:
        encode: the trained network.
        criterion: a :class:`~comatch.methods.criterion.CoMatchCriterion` (or the supervised one
            when ``views_u`` is empty).
        images_x, targets_x: labelled weak view ``[B, ...]`` and labels ``[B]``.
        views_u: unlabelled views, each ``[N, ...]``.
    """
    logits, z = encode(torch.cat([images_x, *views_u]))  # [B + k*N, C], [B + k*N, D]
    n_x = images_x.shape[0]
    if not views_u:
        return criterion(logits[:n_x], targets_x)
    logits_u = logits[n_x:].chunk(len(views_u))  # k x [N, C]
    z_u = z[n_x:].chunk(len(views_u))  # k x [N, D]
    extra = {"z_u_s1": z_u[2]} if len(views_u) == 3 else {}
    return criterion(
        logits[:n_x], targets_x, logits_u[0], logits_u[1],
        z_x=z[:n_x].detach(), z_u_w=z_u[0].detach(), z_u_s0=z_u[1], **extra,
    )


def momentum_outputs(
    encode: Encode,
    encode_momentum: Encode,
    criterion: nn.Module,
    images_x: torch.Tensor,
    targets_x: torch.Tensor,
    views_u: Sequence[torch.Tensor],
) -> CriterionOutput:
    """The large-scale variant: targets from the momentum encoder, predictions from the network.

    The momentum encoder sees ``cat([x_w, u_w, u_s1])`` without gradient (pseudo-labels,
    memory-bank embeddings and ``z_u_s1``); the network sees ``cat([x_w, u_s0])``.

    Args:
        encode: the trained network.
        encode_momentum: the momentum encoder (e.g. through
            :func:`~comatch.methods.momentum.shuffled_forward`).
        criterion: a :class:`~comatch.methods.momentum.MomentumCoMatchCriterion`.
        images_x, targets_x, views_u: as in :func:`plain_outputs` (at least weak and strong).
    """
    u_w, u_s0, rest = views_u[0], views_u[1], list(views_u[2:])
    n_x, n_u = images_x.shape[0], u_w.shape[0]
    with torch.no_grad():
        logits_m, z_m = encode_momentum(torch.cat([images_x, u_w, *rest]))  # [B + (1|2)N, .]
    logits, z = encode(torch.cat([images_x, u_s0]))  # [B + N, C], [B + N, D]
    extra = {"z_u_s1": z_m[n_x + n_u :]} if rest else {}
    return criterion(
        logits[:n_x], targets_x, logits_m[n_x : n_x + n_u], logits[n_x:],
        z_x=z_m[:n_x], z_u_w=z_m[n_x : n_x + n_u], z_u_s0=z[n_x:], **extra,
    )


class StepForward:
    """Runs a training step's networks: uint8 views in, the criterion's output out.

    Images are normalised, optionally made channels-last, and the networks run under the
    precision's autocast; their outputs are cast to float32 for the criterion.

    Args:
        model: the trained network, unwrapped (the momentum encoder follows it).
        net: the same network as it is called for training (DistributedDataParallel or itself).
        normalize: maps a uint8 batch to the normalised float batch on the device.
        precision: a :class:`~comatch.training.precision.Precision`.
        channels_last: use the channels-last memory format for the images.
        momentum: the momentum encoder of the large-scale variant, or None (plain variant).
    """

    def __init__(self, model: nn.Module, net: nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor],
                 precision: Precision, channels_last: bool = False, momentum: MomentumEncoder | None = None) -> None:
        self.model, self.net, self.normalize, self.precision = model, net, normalize, precision
        self.channels_last, self.momentum = channels_last, momentum

    def encode(self, module: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 ``(logits [n, C], z [n, D])`` of a uint8 batch ``[n, C, H, W]``."""
        inputs = self.normalize(images)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with self.precision.autocast():
            logits, z = module(inputs)
        return logits.float(), z.float()

    def __call__(self, criterion: nn.Module, images_x: torch.Tensor, targets_x: torch.Tensor,
                 views_u: Sequence[torch.Tensor], shuffle: torch.Generator | None = None) -> CriterionOutput:
        """The step's criterion output; with a momentum encoder, first moves it towards the network.

        Args:
            criterion, images_x, targets_x, views_u: as in :func:`plain_outputs`.
            shuffle: CPU generator of the shuffle-BN permutation (momentum variant).
        """
        encode = partial(self.encode, self.net)
        if self.momentum is None or not views_u:
            return plain_outputs(encode, criterion, images_x, targets_x, views_u)
        self.momentum.update(self.model)
        encode_momentum = partial(shuffled_forward, partial(self.encode, self.momentum), generator=shuffle)
        return momentum_outputs(encode, encode_momentum, criterion, images_x, targets_x, views_u)
