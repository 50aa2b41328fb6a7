"""FixMatch (Sohn et al. 2020) as a training method: hard pseudo-labels from the weak view.

``L = L_x + lambda_u L_u`` with ``L_u`` the cross-entropy of the strong view against the
weak view's ``argmax``, counted only where the weak view's confidence reaches ``tau``. It is
CoMatch with every CoMatch-specific part switched off (no distribution alignment, no memory
smoothing, no graph loss, hard labels), so it reads ``comatch.threshold`` and
``comatch.lambda_u`` and shares CoMatch's routing of views through the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from comatch.methods.base import MethodContext
from comatch.methods.comatch import CoMatch, bank_size
from comatch.methods.criterion import CoMatchCriterion

if TYPE_CHECKING:
    from comatch.config import Config

FIXMATCH_SWITCHES = dict(alignment=False, smoothing=False, contrastive=False, hard_labels=True)
"""The CoMatch switches that make it FixMatch."""


class FixMatch(CoMatch):
    """FixMatch: weak and strong views of each unlabelled image, one network over
    ``cat([x_w, u_w, u_s])``, no state."""

    @classmethod
    def from_config(cls, config: Config, context: MethodContext) -> "FixMatch":
        c, o = config.comatch, config.optim
        settings = cls.criterion_settings(c) | FIXMATCH_SWITCHES
        criterion = CoMatchCriterion(context.num_classes, context.proj_dim, bank_size(c, o.batch_size, o.mu),
                                     defer_updates=True, **settings)  # type: ignore[arg-type]
        return cls(criterion, lambda_c=0.0)

    @classmethod
    def check_config(cls, config: Config) -> None:
        """Nothing to check: FixMatch has no memory bank and no queue."""
