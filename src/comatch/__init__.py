"""CoMatch: semi-supervised image classification with contrastive graph regularization.

The five equations are pure functions (:mod:`comatch.methods.losses`); the state they need lives in
:class:`DistributionAligner` and :class:`MemoryBank`; :class:`CoMatchCriterion` puts them
together for one training step. The large-scale (ImageNet) variant adds
:class:`MomentumEncoder`, :func:`shuffled_forward`, :class:`EmbeddingQueue` and
:class:`MomentumCoMatchCriterion` (see :mod:`comatch.methods.momentum`).
"""

import os as _os

# Idle OpenMP threads of PyTorch sleep instead of spinning (unless the environment already says
# otherwise). A CPU run shares its cores with its own data-loader workers, and often with other
# jobs; spinning threads then hold the cores the others need and a step can take several times
# longer (docs/performance.md measures it). libgomp reads the variable when torch is first
# loaded, so this must run before any torch import; it changes no number computed.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
