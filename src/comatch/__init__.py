"""CoMatch: semi-supervised image classification with contrastive graph regularization.

The five equations are pure functions (:mod:`comatch.methods.losses`); the state they need lives in
:class:`DistributionAligner` and :class:`MemoryBank`; :class:`CoMatchCriterion` puts them
together for one training step. The large-scale (ImageNet) variant adds
:class:`MomentumEncoder`, :func:`shuffled_forward`, :class:`EmbeddingQueue` and
:class:`MomentumCoMatchCriterion` (see :mod:`comatch.methods.momentum`).
"""

from typing import TYPE_CHECKING, Any

# The public names, imported on first use (PEP 562): importing ``comatch`` (and so starting the
# command line) does not load torch until something needs it.
_EXPORTS = {
    "CoMatchCriterion": "comatch.methods.criterion",
    "CriterionOutput": "comatch.methods.criterion",
    "SupervisedCriterion": "comatch.methods.supervised",
    "build_criterion": "comatch.methods",
    "contrastive_graph_loss": "comatch.methods.losses",
    "distribution_alignment": "comatch.methods.losses",
    "memory_smoothed_labels": "comatch.methods.losses",
    "pseudo_label_graph": "comatch.methods.losses",
    "pseudo_label_loss": "comatch.methods.losses",
    "DistributionAligner": "comatch.methods.memory",
    "MemoryBank": "comatch.methods.memory",
    "EmbeddingQueue": "comatch.methods.momentum",
    "MomentumCoMatchCriterion": "comatch.methods.momentum",
    "MomentumEncoder": "comatch.methods.momentum",
    "shuffled_forward": "comatch.methods.momentum",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'comatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from comatch.methods import build_criterion
    from comatch.methods.criterion import CoMatchCriterion, CriterionOutput
    from comatch.methods.losses import (
        contrastive_graph_loss,
        distribution_alignment,
        memory_smoothed_labels,
        pseudo_label_graph,
        pseudo_label_loss,
    )
    from comatch.methods.memory import DistributionAligner, MemoryBank
    from comatch.methods.momentum import EmbeddingQueue, MomentumCoMatchCriterion, MomentumEncoder, shuffled_forward
    from comatch.methods.supervised import SupervisedCriterion

__version__ = "0.1.0"

__all__ = [
    "CoMatchCriterion",
    "CriterionOutput",
    "DistributionAligner",
    "EmbeddingQueue",
    "MemoryBank",
    "MomentumCoMatchCriterion",
    "MomentumEncoder",
    "SupervisedCriterion",
    "build_criterion",
    "contrastive_graph_loss",
    "distribution_alignment",
    "memory_smoothed_labels",
    "pseudo_label_graph",
    "pseudo_label_loss",
    "shuffled_forward",
]
