"""The supervised baseline: cross-entropy on the labelled batch; unlabelled data is never loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from comatch.methods.base import Batch, Encode, Method, MethodContext, MethodOutput

if TYPE_CHECKING:
    from comatch.config import Config


class SupervisedCriterion(nn.Module):
    """``L = L_x``: cross-entropy on the labelled batch only; unlabelled data is never used."""

    unlabelled_views: tuple[str, ...] = ()

    def forward(self, logits_x: torch.Tensor, targets_x: torch.Tensor) -> MethodOutput:
        """Args: ``logits_x [B, C]``, ``targets_x [B]`` (class indices)."""
        loss_x = F.cross_entropy(logits_x.float(), targets_x)
        zero = loss_x.new_zeros(())
        return MethodOutput(loss=loss_x, loss_x=loss_x, loss_u=zero, loss_c=zero)


class Supervised(Method):
    """The labelled weak view through the network into :class:`SupervisedCriterion`."""

    def __init__(self) -> None:
        super().__init__()
        self.criterion = SupervisedCriterion()

    @classmethod
    def make_criterion(cls, num_classes: int, proj_dim: int, bank_size: int, **settings: Any) -> SupervisedCriterion:
        """:class:`SupervisedCriterion` (the sizes and settings are not used)."""
        return SupervisedCriterion()

    @classmethod
    def from_config(cls, config: Config, context: MethodContext) -> "Supervised":
        return cls()

    @property
    def uses_every_parameter(self) -> bool:
        return False  # the projection head is never used

    def forward(self, batch: Batch, encode: Encode) -> MethodOutput:  # type: ignore[override]
        logits_x, _ = encode(batch.labelled["weak"])  # [B, C]
        return self.criterion(logits_x, batch.targets)
