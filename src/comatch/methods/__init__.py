"""The training methods: CoMatch and its baselines, their losses and their state.

``METHODS`` is the one mapping from a method's name (``config.method``) to its class; a new
method is one module implementing :class:`~comatch.methods.base.Method` plus its entry here.
"""

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

__all__ = [
    "METHODS", "Batch", "CoMatch", "Encode", "FixMatch", "Method", "MethodContext", "MethodOutput",
    "MethodSettings", "MixMatch", "MomentumCoMatch", "Supervised",
]
