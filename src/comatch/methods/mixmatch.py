"""MixMatch (Berthelot et al., NeurIPS 2019) as a training method.

Each unlabelled image is seen in ``K`` weak views. Its label is *guessed* as the mean of the
network's predictions on those views, sharpened with temperature ``T``:
``q = p^(1/T) / sum_c p_c^(1/T)``. Labelled images (one-hot labels) and unlabelled views
(their guess ``q``) are then mixed with a shuffled copy of the whole set (MixUp):
``x' = l x_1 + (1 - l) x_2``, ``p' = l p_1 + (1 - l) p_2`` with ``l = max(b, 1 - b)``,
``b ~ Beta(alpha, alpha)``, so a mixed input stays closer to its own image. The loss is
``L = L_x + w(k) L_u``: cross-entropy of the mixed labelled inputs against their mixed
targets, and the squared error between the mixed unlabelled inputs' predicted
distributions and their targets (averaged over samples and classes); ``w(k)`` ramps linearly
from 0 to ``lambda_u`` over the first ``rampup_fraction`` of the run.

Choices where the paper leaves room: one ``b`` per step (the paper writes MixUp per pair);
mixing happens in pixel space before normalisation (the same as mixing normalised inputs,
normalisation being affine); all mixed inputs go through the network in one batch, so
BatchNorm sees them together and needs no interleaving. Weight decay is the trainer's
(``optim.weight_decay``), not MixMatch's decoupled decay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from comatch.methods.base import Batch, Encode, Method, MethodContext, MethodOutput, MethodSettings

if TYPE_CHECKING:
    from comatch.config import Config


class MixMatchSettings(MethodSettings):
    """The ``mixmatch`` section of the configuration (the paper's CIFAR-10 values)."""

    augmentations: int = Field(2, ge=1, description="K: weak views of each unlabelled image averaged for its guessed label.")
    temperature: float = Field(0.5, gt=0, le=1, description="T: sharpening temperature of the guessed labels (lower: closer to one-hot).")
    alpha: float = Field(0.75, gt=0, description="MixUp's Beta(alpha, alpha) parameter (small: mixes stay near one image).")
    lambda_u: float = Field(75.0, ge=0, description="Final weight of the squared-error unlabelled loss (75 CIFAR-10, 150 CIFAR-100 in the paper).")
    rampup_fraction: float = Field(
        1 / 64, ge=0, le=1, description="Share of the run over which the unlabelled weight ramps linearly from 0 (16,384 of 2^20 steps in the paper)."
    )


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p^(1/T)`` renormalised per row ``[N, C]`` (``T -> 0``: one-hot of the argmax)."""
    powered = probs.pow(1.0 / temperature)  # [N, C]
    return powered / powered.sum(dim=1, keepdim=True)


def mix(inputs: torch.Tensor, targets: torch.Tensor, order: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp of every row with row ``order[i]``: ``lam * a + (1 - lam) * b`` for inputs and targets."""
    return lam * inputs + (1 - lam) * inputs[order], lam * targets + (1 - lam) * targets[order]


def unlabelled_weight(step: int, lambda_u: float, rampup_steps: float) -> float:
    """``w(k) = lambda_u * min(1, k / rampup_steps)`` (``lambda_u`` at once without a ramp)."""
    if rampup_steps <= 0:
        return lambda_u
    return lambda_u * min(1.0, step / rampup_steps)


class MixMatch(Method):
    """MixMatch: guess, sharpen, mix, and a squared-error unlabelled loss (see the module docstring).

    Args:
        num_classes: ``C``.
        augmentations: ``K``.
        temperature: ``T``.
        alpha: MixUp's Beta parameter.
        lambda_u: final unlabelled-loss weight.
        rampup_steps: steps of the linear ramp of the unlabelled weight.
        rampup_fraction: the ramp's share of the run instead (``rampup_steps`` then follows
            :meth:`set_length`).
    """

    section: ClassVar[str | None] = "mixmatch"
    Settings: ClassVar[type[MethodSettings] | None] = MixMatchSettings

    def __init__(self, num_classes: int, *, augmentations: int = 2, temperature: float = 0.5, alpha: float = 0.75,
                 lambda_u: float = 75.0, rampup_steps: float = 0.0, rampup_fraction: float | None = None) -> None:
        super().__init__()
        self.num_classes, self.augmentations, self.temperature = num_classes, augmentations, temperature
        self.alpha, self.lambda_u, self.rampup_steps = alpha, lambda_u, rampup_steps
        self.rampup_fraction = rampup_fraction

    @classmethod
    def from_config(cls, config: Config, context: MethodContext) -> "MixMatch":
        s = config.mixmatch  # type: ignore[attr-defined]
        return cls(context.num_classes, augmentations=s.augmentations, temperature=s.temperature, alpha=s.alpha,
                   lambda_u=s.lambda_u, rampup_steps=s.rampup_fraction * config.optim.iterations,
                   rampup_fraction=s.rampup_fraction)

    def set_length(self, total: int) -> None:
        """The ramp spans ``rampup_fraction`` of the run's ``total`` steps."""
        if self.rampup_fraction is not None:
            self.rampup_steps = self.rampup_fraction * total

    @property
    def unlabelled_views(self) -> dict[str, str]:
        return {f"weak_{k}": "weak" for k in range(self.augmentations)}

    @property
    def uses_every_parameter(self) -> bool:
        return False  # the projection head is not used

    @torch.no_grad()
    def guess_labels(self, views_u: list[torch.Tensor], encode: Encode) -> torch.Tensor:
        """Sharpened mean prediction over the ``K`` views ``[N, C]`` (no gradient)."""
        logits, _ = encode(torch.cat(views_u))  # [K * N, C]
        probs = torch.softmax(logits, dim=1).view(len(views_u), -1, self.num_classes)  # [K, N, C]
        return sharpen(probs.mean(dim=0), self.temperature)

    def forward(self, batch: Batch, encode: Encode) -> MethodOutput:  # type: ignore[override]
        x, views_u = batch.labelled["weak"], [batch.unlabelled[k] for k in self.unlabelled_views]  # K x [N, ...]
        n_x, n_u = x.shape[0], views_u[0].shape[0]
        q = self.guess_labels(views_u, encode)  # [N, C]
        inputs = torch.cat([x, *views_u]).float()  # [B + K*N, ...], pixel values
        p_x = F.one_hot(batch.targets, self.num_classes).float()  # [B, C]
        targets = torch.cat([p_x, q.repeat(len(views_u), 1)])  # [B + K*N, C]
        lam = float(np.random.default_rng(batch.seed).beta(self.alpha, self.alpha))  # the step's own draw
        lam = max(lam, 1.0 - lam)
        order = torch.randperm(inputs.shape[0], generator=batch.generator()).to(inputs.device)  # [B + K*N]
        mixed, mixed_targets = mix(inputs, targets, order, lam)
        logits, _ = encode(mixed)  # [B + K*N, C]
        loss_x = -(mixed_targets[:n_x] * F.log_softmax(logits[:n_x], dim=1)).sum(dim=1).mean()
        loss_u = F.mse_loss(torch.softmax(logits[n_x:], dim=1), mixed_targets[n_x:])
        loss = loss_x + unlabelled_weight(batch.step, self.lambda_u, self.rampup_steps) * loss_u
        mask = torch.ones(n_u, dtype=torch.bool, device=q.device)
        return MethodOutput(loss, loss_x, loss_u, loss_x.new_zeros(()), {}, q, mask)
