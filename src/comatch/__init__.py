"""CoMatch: semi-supervised image classification with contrastive graph regularization.

The five equations are pure functions (:mod:`comatch.methods.losses`); the state they need lives in
:class:`DistributionAligner` and :class:`MemoryBank`; :class:`CoMatchCriterion` puts them
together for one training step. The large-scale (ImageNet) variant adds
:class:`MomentumEncoder`, :func:`shuffled_forward`, :class:`EmbeddingQueue` and
:class:`MomentumCoMatchCriterion` (see :mod:`comatch.methods.momentum`).
"""

from comatch.methods.criterion import CoMatchCriterion, CriterionOutput, SupervisedCriterion, build_criterion
from comatch.methods.losses import (
    contrastive_graph_loss,
    distribution_alignment,
    memory_smoothed_labels,
    pseudo_label_graph,
    pseudo_label_loss,
)
from comatch.methods.memory import DistributionAligner, MemoryBank
from comatch.methods.momentum import EmbeddingQueue, MomentumCoMatchCriterion, MomentumEncoder, shuffled_forward

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
