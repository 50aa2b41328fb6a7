"""FixMatch (Sohn et al. 2020) as a training method: hard pseudo-labels from the weak view.

``L = L_x + lambda_u L_u`` with ``L_u`` the cross-entropy of the strong view against the
weak view's ``argmax``, counted only where the weak view's confidence reaches ``tau``. It is
CoMatch with every CoMatch-specific part switched off (no distribution alignment, no memory
smoothing, no graph loss, hard labels: :data:`FIXMATCH_SWITCHES`), so it shares CoMatch's
routing of views through the network; its settings are its own ``fixmatch`` section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from comatch.methods.base import MethodContext, MethodSettings
from comatch.methods.comatch import CoMatch
from comatch.methods.criterion import CoMatchCriterion

if TYPE_CHECKING:
    from comatch.config import Config

FIXMATCH_SWITCHES = dict(alignment=False, smoothing=False, contrastive=False, hard_labels=True)
"""The CoMatch switches that make it FixMatch."""


class FixMatchSettings(MethodSettings):
    """The ``fixmatch`` section of the configuration."""

    threshold: float = Field(0.95, ge=0, le=1, description="tau: confidence the weak view's prediction needs for its pseudo-label to count in L_u.")
    lambda_u: float = Field(1.0, ge=0, description="Weight of the pseudo-label loss L_u.")


class FixMatch(CoMatch):
    """FixMatch: weak and strong views of each unlabelled image, one network over
    ``cat([x_w, u_w, u_s])``, no state."""

    section: ClassVar[str | None] = "fixmatch"
    Settings: ClassVar[type[MethodSettings] | None] = FixMatchSettings

    @classmethod
    def make_criterion(cls, num_classes: int, proj_dim: int, bank_size: int, **settings: Any) -> CoMatchCriterion:
        """:class:`CoMatchCriterion` with :data:`FIXMATCH_SWITCHES` (which override ``settings``;
        of the rest only ``threshold``, ``lambda_u`` and ``defer_updates`` matter)."""
        return CoMatchCriterion(num_classes, proj_dim, bank_size, **(settings | FIXMATCH_SWITCHES))

    @classmethod
    def from_config(cls, config: Config, context: MethodContext) -> "FixMatch":
        s: FixMatchSettings = config.fixmatch  # type: ignore[attr-defined]
        criterion = cls.make_criterion(context.num_classes, context.proj_dim, 0,  # no memory bank
                                       threshold=s.threshold, lambda_u=s.lambda_u, defer_updates=True)
        return cls(criterion, lambda_c=0.0)

    @classmethod
    def check_config(cls, config: Config) -> None:
        """Nothing to check: FixMatch has no memory bank and no queue."""
