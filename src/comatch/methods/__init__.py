"""The training methods: CoMatch and its baselines, their losses and their state.

``METHODS`` is the one mapping from a method's name (``config.method``) to its class; a new
method is one module implementing :class:`~comatch.methods.base.Method` plus its entry here.
:func:`build_criterion` gives a method's loss for your own training loop, through the same mapping.
"""

from typing import Any

from torch import nn

from comatch.methods.base import Batch, Encode, Method, MethodContext, MethodOutput, MethodSettings
from comatch.methods.comatch import CoMatch, MomentumCoMatch
from comatch.methods.fixmatch import FixMatch
from comatch.methods.mixmatch import MixMatch
from comatch.methods.supervised import Supervised

METHODS: dict[str, type[Method]] = {
    "comatch": CoMatch,
    "fixmatch": FixMatch,
    "supervised": Supervised,
    "mixmatch": MixMatch,
}


def build_criterion(method: str, num_classes: int, proj_dim: int, bank_size: int, **settings: Any) -> nn.Module:
    """The loss and state of a training method for your own loop (:meth:`Method.make_criterion`).

    Args:
        method: a name in :data:`METHODS` (``comatch``, ``fixmatch``, ``supervised``; MixMatch
            has no stand-alone criterion).
        num_classes, proj_dim, bank_size: see :class:`~comatch.methods.criterion.CoMatchCriterion`.
        **settings: its keyword settings (ignored by ``supervised``; FixMatch keeps ``threshold``
            and ``lambda_u`` and forces its definition on the CoMatch-specific switches).

    Raises:
        ValueError: unknown method, or one without a stand-alone criterion.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method].make_criterion(num_classes, proj_dim, bank_size, **settings)


__all__ = [
    "METHODS", "Batch", "CoMatch", "build_criterion", "Encode", "FixMatch", "Method", "MethodContext", "MethodOutput",
    "MethodSettings", "MixMatch", "MomentumCoMatch", "Supervised",
]
