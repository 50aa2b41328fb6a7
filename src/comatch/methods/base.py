"""The interface every training method implements, and the batch it is given.

A method is an ``nn.Module`` that owns everything specific to it: the views it needs (by
name), which network sees which view, its loss weights as pure functions of the step, its
persistent state (memory bank, aligner, queue: registered buffers) and its statistics. The
training loop owns everything else (backward, the finiteness check, optimizer, schedule,
EMA, logging, checkpoints) and calls a method in three places::

    out = method(batch, encode)      # the loss and its parts; state changes are only *pending*
    ... backward, check, optimizer step ...
    method.commit(model)             # the step was accepted: apply the pending state changes
    method.discard()                 # or the step was rejected: forget them

so that a step rejected for a non-finite loss leaves no trace in the method's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

if TYPE_CHECKING:
    from comatch.config import Config


class MethodSettings(BaseModel):
    """Base of a method's configuration section: unknown keys are errors, assignments are
    validated (the same rules as every other section)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass
class Batch:
    """One training step's data, on the training device.

    Attributes:
        labelled: the labelled images in each view the method asked for, by view key, uint8
            ``[B, C, H, W]`` (this process's rows of the global batch).
        targets: their class indices ``[B]``.
        unlabelled: the unlabelled images in each view, by view key, uint8 ``[N, C, H, W]``
            (empty for a method that uses no unlabelled data).
        truth: the unlabelled images' true classes ``[N]`` where known, -1 elsewhere; for
            statistics only, never for training. None without unlabelled data.
        step: the number of the step (0-based) this batch is for.
        seed: seed of the step's own randomness (shuffle-BN permutation, MixUp draws), a pure
            function of the run's seed and ``step``.
    """

    labelled: dict[str, torch.Tensor]
    targets: torch.Tensor
    unlabelled: dict[str, torch.Tensor] = field(default_factory=dict)
    truth: torch.Tensor | None = None
    step: int = 0
    seed: int = 0

    def generator(self) -> torch.Generator:
        """A fresh CPU generator seeded with :attr:`seed`."""
        return torch.Generator().manual_seed(self.seed)


@dataclass
class MethodOutput:
    """What a method (or a criterion) returns for one step.

    Attributes:
        loss: the total loss (scalar, differentiable).
        loss_x, loss_u, loss_c: its labelled, unlabelled and contrastive parts (scalars;
            zero where a method has none).
        stats: detached scalar tensors for logging, e.g. ``mask_rate`` (share of unlabelled
            samples whose pseudo-label reaches the threshold) and ``graph_edges``.
        pseudo_labels: the pseudo-label targets ``[N, C]`` (detached), or None.
        mask: which unlabelled samples count in the unlabelled loss ``[N]`` (bool), or None.
    """

    loss: torch.Tensor
    loss_x: torch.Tensor
    loss_u: torch.Tensor
    loss_c: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    pseudo_labels: torch.Tensor | None = None
    mask: torch.Tensor | None = None


class Encode(Protocol):
    """Runs a network on a uint8 batch: float32 ``(logits [n, K], z [n, D])``.

    ``network=None`` runs the trained network (as wrapped for training); any other module
    (e.g. a momentum encoder) is run the same way: normalised, in the run's precision.
    """

    def __call__(self, images: torch.Tensor, network: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class MethodContext:
    """What building a method needs to know about the run besides its settings.

    Attributes:
        num_classes: number of classes ``C``.
        proj_dim: embedding size ``D`` of the projection head.
        model: the trained network, unwrapped (a momentum encoder copies it).
        unlabelled_size: images in the unlabelled pool (an epoch's length), 0 if none.
        labelled_counts: labelled images per class ``[C]`` (for a prior from the labelled
            class frequencies), or None when unknown.
    """

    num_classes: int
    proj_dim: int
    model: nn.Module | None = None
    unlabelled_size: int = 0
    labelled_counts: tuple[int, ...] | None = None


class Method(nn.Module):
    """Base class of the training methods (see the module docstring for the protocol).

    Class attributes:
        section: name of the config section holding the method's settings, or None.
        Settings: the pydantic model of that section.
        labelled_views: view key -> view kind (``weak``, ``strong``, ``contrastive``) of the
            labelled batch.
    """

    section: ClassVar[str | None] = None
    Settings: ClassVar[type[MethodSettings] | None] = None
    labelled_views: dict[str, str] = {"weak": "weak"}

    # --------------------------------------------------------------- what the loop asks
    @property
    def unlabelled_views(self) -> dict[str, str]:
        """View key -> view kind of every view of an unlabelled image the method needs, in
        the order they are drawn (empty: no unlabelled data is loaded)."""
        return {}

    @property
    def uses_every_parameter(self) -> bool:
        """Whether every trainable parameter gets a gradient each step (False makes
        DistributedDataParallel look for unused ones)."""
        return True

    @classmethod
    def from_config(cls, config: Config, context: MethodContext) -> "Method":
        """The method as ``config`` describes it (the only place a method reads the config)."""
        raise NotImplementedError

    @classmethod
    def make_criterion(cls, num_classes: int, proj_dim: int, bank_size: int, **settings: Any) -> nn.Module:
        """The method's loss and its state for your own training loop, called with the logits
        (and embeddings) of a step's views (what :func:`comatch.methods.build_criterion` returns).

        Raises:
            ValueError: the method has no such stand-alone loss.
        """
        raise ValueError(f"{cls.__name__} has no stand-alone criterion; train it with `comatch train`")

    @classmethod
    def check_config(cls, config: Config) -> None:
        """Raise ValueError when ``config`` cannot work for this method (called on validation)."""

    def forward(self, batch: Batch, encode: Encode) -> MethodOutput:  # type: ignore[override]
        """The step's loss and its parts; any state change waits for :meth:`commit`."""
        raise NotImplementedError

    def set_length(self, total: int) -> None:
        """The run's length in steps, handed over by the trainer's pacer whenever it is set (a
        time budget chooses it after the first steps). A method whose schedules depend on the
        run's length overrides this; the default does nothing."""

    # --------------------------------------------------------------- pending state changes
    def commit(self, model: nn.Module) -> None:
        """The step was applied to ``model`` (unwrapped): apply this step's state changes
        (nothing for a method without state).

        Every process calls it at the same point (updates may be collectives).
        """

    def discard(self) -> None:
        """The step was rejected: forget its state changes (nothing for a method without state)."""
