"""The supervised baseline: cross-entropy on the labelled batch; unlabelled data is never loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F

from comatch.methods.base import Batch, Encode, Method, MethodContext, MethodOutput

if TYPE_CHECKING:
    from comatch.config import Config


class Supervised(Method):
    """``L = L_x``: the labelled weak view through the network, cross-entropy against the labels."""

    @classmethod
    def from_config(cls, config: Config, context: MethodContext) -> "Supervised":
        return cls()

    @property
    def uses_every_parameter(self) -> bool:
        return False  # the projection head is never used

    def forward(self, batch: Batch, encode: Encode) -> MethodOutput:  # type: ignore[override]
        logits_x, _ = encode(batch.labelled["weak"])  # [B, C]
        loss_x = F.cross_entropy(logits_x.float(), batch.targets)
        zero = loss_x.new_zeros(())
        return MethodOutput(loss=loss_x, loss_x=loss_x, loss_u=zero, loss_c=zero)
