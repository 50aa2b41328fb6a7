"""CoMatch as a training method: its settings, its views, and which network sees which view.

The loss and its state are :class:`~comatch.methods.criterion.CoMatchCriterion` (plain
variant) and :class:`~comatch.methods.momentum.MomentumCoMatchCriterion` (large-scale
variant); this module routes a step's views through the networks into them. The equations
are in docs/method.md.

Views of an unlabelled image: ``weak`` (pseudo-labels, memory-bank embeddings), ``strong``
(``s0``: the view that must predict the pseudo-label, and the rows of the embedding graph)
and, with the graph loss, ``contrastive`` (``s1``: the columns of the embedding graph).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from comatch.errors import UserError
from comatch.methods.base import Batch, Encode, Method, MethodContext, MethodOutput, MethodSettings
from comatch.methods.criterion import CoMatchCriterion
from comatch.methods.memory import check_prior
from comatch.methods.momentum import MomentumCoMatchCriterion, MomentumEncoder, shuffled_forward
from comatch.methods.schedule import epoch_of, ramped_lambda_c, ramped_threshold

if TYPE_CHECKING:
    from comatch.config import Config


class CoMatchSettings(MethodSettings):
    """The ``comatch`` section of the configuration."""

    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the model's own prediction in the memory-smoothed label.")
    temperature: float = Field(0.2, gt=0, description="T: temperature of embedding similarities (0.2 CIFAR/STL, 0.1 ImageNet).")
    threshold: float = Field(0.95, ge=0, le=1, description="tau: confidence a pseudo-label needs to count in L_u.")
    threshold_start: float | None = Field(
        None, ge=0, le=1, description="Short runs: tau at the first step, moved linearly to comatch.threshold over the first "
        "comatch.threshold_ramp of the run (its length as set or as the time budget fits it); None: comatch.threshold throughout (the paper)."
    )
    threshold_ramp: float = Field(1.0, gt=0, le=1, description="The fraction of the run over which tau moves from comatch.threshold_start to comatch.threshold.")
    graph_threshold: float = Field(0.8, ge=0, le=1, description="t: pseudo-label similarity needed for a graph edge.")
    lambda_u: float = Field(1.0, ge=0, description="Weight of the pseudo-label loss L_u.")
    lambda_c: float = Field(1.0, ge=0, description="Weight of the graph contrastive loss L_c (1 CIFAR-10, 5 STL-10).")
    da_window: int = Field(32, ge=1, description="Steps averaged by distribution alignment (32 CIFAR/STL, 128 ImageNet).")
    queue_batches: int = Field(5, ge=1, description="Memory bank size in steps: bank = queue_batches * (1 + mu) * batch_size (global batch: the bank holds every process's entries).")
    bank_size: int | None = Field(None, ge=1, description="Memory bank entries, global (the bank holds every process's entries); overrides queue_batches (30000 on ImageNet).")
    alignment: bool = Field(True, description="Ablation: distribution alignment on/off.")
    da_prior: Literal["uniform", "labelled"] | list[float] = Field(
        "uniform", description="Class distribution that distribution alignment pulls the pseudo-labels towards: "
        "'uniform' (the paper: right for balanced data), 'labelled' (the labelled images' class frequencies: for skewed "
        "data whose labelled part has the unlabelled part's skew), or C positive numbers (a known prior; renormalised)."
    )
    smoothing: bool = Field(True, description="Ablation: memory-smoothed pseudo-labels on/off.")
    contrastive: bool = Field(True, description="Ablation: graph contrastive loss on/off.")
    self_loop_only: bool = Field(False, description="Ablation: pseudo-label graph of self-loops only (instance contrast).")
    hard_labels: bool = Field(False, description="Ablation: one-hot instead of soft pseudo-labels in L_u and the graph.")
    smoothing_from: Literal["start", "full_bank", "first_epoch"] = Field(
        "start", description="When memory smoothing starts: 'start' (from the second step, with a partly filled bank: useful in short runs), "
        "'full_bank' (once the bank is full, as the released CIFAR code) or 'first_epoch' (after one pass over the unlabelled set, as the released ImageNet code)."
    )
    momentum: float | None = Field(
        None, ge=0, lt=1, description="Large-scale variant: decay of the momentum encoder that makes the pseudo-labels and s1 embeddings (0.996 on ImageNet); None: the plain variant. Method comatch only."
    )
    momentum_first_epoch: float | None = Field(
        None, ge=0, lt=1, description="Large-scale variant: the momentum encoder's decay during the first epoch (0.99 in the released ImageNet code, so it follows the fast-changing network early); None: comatch.momentum throughout."
    )
    queue_size: int = Field(
        0, ge=0, description="Large-scale variant: past s1 embeddings (global) that extend both graphs to mu*B + K columns (30000 on ImageNet); needs comatch.momentum."
    )
    queue_init: Literal["empty", "random"] = Field(
        "empty", description="Large-scale variant: the queue starts empty, or full of random unit embeddings with zero pseudo-labels (negatives only; the released ImageNet code)."
    )
    lambda_c_ramp: bool = Field(
        False, description="Ramp lambda_c as min(epoch + 1, lambda_c), an epoch being one pass over the unlabelled set at the global unlabelled batch size (ImageNet)."
    )


def bank_size(settings: CoMatchSettings, batch_size: int, mu: int) -> int:
    """Memory bank entries ``K`` (global): ``comatch.bank_size``, else ``queue_batches`` steps."""
    if settings.bank_size is not None:
        return settings.bank_size
    return settings.queue_batches * (1 + mu) * batch_size


def alignment_prior(settings: CoMatchSettings, context: MethodContext) -> torch.Tensor | None:
    """The target prior ``[C]`` of distribution alignment that ``comatch.da_prior`` names.

    Returns:
        None for ``uniform`` (the paper's alignment, computed exactly as before), the
        labelled class frequencies for ``labelled``, or the given values renormalised.

    Raises:
        UserError: ``labelled`` without labelled counts in ``context``, a class without
            labelled images, or a list of the wrong length or with a non-positive value.
    """
    prior = settings.da_prior
    if prior == "uniform":
        return None
    if prior == "labelled":
        counts = context.labelled_counts
        if counts is None:
            raise UserError("comatch.da_prior=labelled needs the labelled class counts of the run; give the prior as a list")
        if min(counts) <= 0:
            empty = [c for c, n in enumerate(counts) if n <= 0]
            raise UserError(f"comatch.da_prior=labelled: class {empty[0]} has no labelled image; "
                             "give the prior as a list of numbers instead")
        prior = [float(n) for n in counts]
    try:
        return check_prior(prior, context.num_classes)
    except ValueError as err:
        raise UserError(f"comatch.da_prior: {err}; give 'uniform', 'labelled' or {context.num_classes} positive numbers") from None


class CoMatch(Method):
    """CoMatch, plain variant: one network sees ``cat([x_w, u_w, u_s0, u_s1])``.

    Args:
        criterion: the loss and its state, built with ``defer_updates=True``.
        lambda_c: the final graph-loss weight.
        lambda_c_ramp: ramp it as ``min(epoch + 1, lambda_c)``.
        smoothing_from: ``"start"``: memory smoothing from the second step (the criterion's
            own rule: the bank holds one step's entries); ``"full_bank"``: from step
            ``K // (B + mu B) + 1`` (0-based), once the bank has been full for a step, as the
            released CIFAR code (``it > queue_batch``); ``"first_epoch"``: from the second
            epoch, as the released ImageNet code.
        unlabelled_batch, unlabelled_size: global unlabelled images per step and in the pool
            (an epoch's length).
        step_entries: global bank entries a step writes, ``B + mu B``.
        threshold_start, threshold_ramp: tau at the first step, moved linearly to the
            criterion's over the first ``threshold_ramp`` of the run (see :meth:`threshold_at`);
            None: the criterion's tau throughout.
    """

    section: ClassVar[str | None] = "comatch"
    Settings: ClassVar[type[MethodSettings] | None] = CoMatchSettings

    def __init__(self, criterion: CoMatchCriterion, *, lambda_c: float, lambda_c_ramp: bool = False,
                 smoothing_from: str = "start", unlabelled_batch: int = 1, unlabelled_size: int = 0,
                 step_entries: int = 1, threshold_start: float | None = None, threshold_ramp: float = 1.0) -> None:
        super().__init__()
        if smoothing_from not in ("start", "full_bank", "first_epoch"):
            raise ValueError(f"smoothing_from must be start, full_bank or first_epoch, got {smoothing_from!r}")
        self.criterion = criterion
        self.lambda_c, self.lambda_c_ramp = lambda_c, lambda_c_ramp
        self.smoothing_from = smoothing_from
        self.unlabelled_batch, self.unlabelled_size = unlabelled_batch, unlabelled_size
        self.step_entries = step_entries
        self.threshold = criterion.threshold  # tau at the ramp's end
        self.threshold_start, self.threshold_ramp = threshold_start, threshold_ramp
        self.total_steps = 1

    # ------------------------------------------------------------------ construction
    @staticmethod
    def criterion_settings(c: CoMatchSettings) -> dict[str, object]:
        """The keyword settings of :class:`CoMatchCriterion` in the ``comatch`` section."""
        return dict(
            alpha=c.alpha, temperature=c.temperature, threshold=c.threshold,
            graph_threshold=c.graph_threshold, lambda_u=c.lambda_u, lambda_c=c.lambda_c,
            da_window=c.da_window, alignment=c.alignment, smoothing=c.smoothing,
            contrastive=c.contrastive, self_loop_only=c.self_loop_only, hard_labels=c.hard_labels,
        )

    @classmethod
    def make_criterion(cls, num_classes: int, proj_dim: int, bank_size: int, **settings: Any) -> CoMatchCriterion:
        """:class:`CoMatchCriterion` (the plain variant; the large-scale one is
        :class:`~comatch.methods.momentum.MomentumCoMatchCriterion`)."""
        return CoMatchCriterion(num_classes, proj_dim, bank_size, **settings)

    @classmethod
    def from_config(cls, config: Config, context: MethodContext) -> "CoMatch":
        c, o = config.comatch, config.optim
        if c.momentum is not None:
            return MomentumCoMatch.from_config(config, context)
        criterion = cls.make_criterion(context.num_classes, context.proj_dim, bank_size(c, o.batch_size, o.mu),
                                       prior=alignment_prior(c, context), defer_updates=True,
                                       **cls.criterion_settings(c))
        return cls(criterion, **cls._schedule_settings(config, context))

    @staticmethod
    def _schedule_settings(config: Config, context: MethodContext) -> dict[str, object]:
        c, o = config.comatch, config.optim
        return dict(lambda_c=c.lambda_c, lambda_c_ramp=c.lambda_c_ramp, smoothing_from=c.smoothing_from,
                    unlabelled_batch=o.batch_size * o.mu, unlabelled_size=context.unlabelled_size,
                    step_entries=(1 + o.mu) * o.batch_size, threshold_start=c.threshold_start,
                    threshold_ramp=c.threshold_ramp)

    @classmethod
    def check_config(cls, config: Config) -> None:
        c, o = config.comatch, config.optim
        step_entries = (1 + o.mu) * o.batch_size
        if c.smoothing and bank_size(c, o.batch_size, o.mu) < step_entries:
            raise ValueError(
                f"comatch.bank_size ({bank_size(c, o.batch_size, o.mu)}) is smaller than one step's entries "
                f"({step_entries} = (1 + mu) * batch_size); raise comatch.bank_size or queue_batches"
            )
        if c.queue_size > 0 and c.momentum is None:
            raise ValueError("comatch.queue_size needs the momentum encoder; set comatch.momentum (0.996 on ImageNet) or queue_size=0")

    # ------------------------------------------------------------------ what the loop asks
    @property
    def unlabelled_views(self) -> dict[str, str]:
        views = {"weak": "weak", "strong": "strong"}
        if self.criterion.contrastive:
            views["contrastive"] = "contrastive"
        return views

    @property
    def uses_every_parameter(self) -> bool:
        return self.criterion.contrastive  # without L_c the projection head gets no gradient

    def lambda_c_at(self, step: int) -> float:
        """``lambda_c`` at step ``k``: constant, or ``min(epoch + 1, lambda_c)`` when ramped."""
        if not self.lambda_c_ramp:
            return self.lambda_c
        return ramped_lambda_c(self.lambda_c, step, self.unlabelled_batch, self.unlabelled_size)

    def set_length(self, total: int) -> None:
        self.total_steps = total

    def threshold_at(self, step: int) -> float:
        """tau at step ``k``: constant, or ramped from ``threshold_start`` over the first
        ``threshold_ramp`` of the run's current length."""
        if self.threshold_start is None:
            return self.threshold
        return ramped_threshold(self.threshold_start, self.threshold, step, self.total_steps, self.threshold_ramp)

    def epoch(self, step: int) -> int:
        """The epoch of step ``k`` (one pass over the unlabelled pool)."""
        return epoch_of(step, self.unlabelled_batch, self.unlabelled_size)

    def smoothing_paused_at(self, step: int) -> bool:
        """Whether ``smoothing_from`` holds memory smoothing back at step ``k`` (0-based)."""
        if self.smoothing_from == "full_bank" and self.criterion.bank is not None:
            return step <= self.criterion.bank.size // self.step_entries
        return self.smoothing_from == "first_epoch" and self.epoch(step) < 1

    def _prepare(self, step: int) -> None:
        """Set the criterion's step-dependent settings."""
        self.criterion.lambda_c = self.lambda_c_at(step)
        self.criterion.threshold = self.threshold_at(step)
        self.criterion.smoothing_paused = self.smoothing_paused_at(step)

    def forward(self, batch: Batch, encode: Encode) -> MethodOutput:  # type: ignore[override]
        self._prepare(batch.step)
        x_w, keys = batch.labelled["weak"], list(self.unlabelled_views)  # weak, strong[, contrastive]
        logits, z = encode(torch.cat([x_w, *(batch.unlabelled[k] for k in keys)]))  # [B + k*N, C], [B + k*N, D]
        n_x = x_w.shape[0]
        logits_u = dict(zip(keys, logits[n_x:].chunk(len(keys))))  # view -> [N, C]
        z_u = dict(zip(keys, z[n_x:].chunk(len(keys))))  # view -> [N, D]
        extra = {"z_u_s1": z_u["contrastive"]} if self.criterion.contrastive else {}
        return self.criterion(
            logits[:n_x], batch.targets, logits_u["weak"], logits_u["strong"],
            z_x=z[:n_x].detach(), z_u_w=z_u["weak"].detach(), z_u_s0=z_u["strong"], **extra,
        )

    def commit(self, model: nn.Module) -> None:
        self.criterion.commit()

    def discard(self) -> None:
        self.criterion.discard()


class MomentumCoMatch(CoMatch):
    """CoMatch, large-scale variant: targets from a momentum encoder, a queue extends the graphs.

    The momentum encoder sees ``cat([x_w, u_w, u_s1])`` without gradient (pseudo-labels,
    bank embeddings, ``z_u_s1``), with its batch shuffled across processes (shuffle-BN); the
    trained network sees ``cat([x_w, u_s0])``. After each applied step the encoder moves
    towards the network: ``f_m <- m f_m + (1 - m) f`` (``m`` = ``momentum_first_epoch`` during
    the first epoch when given).
    """

    def __init__(self, criterion: MomentumCoMatchCriterion, encoder: MomentumEncoder, *,
                 momentum_first_epoch: float | None = None, **schedule: object) -> None:
        super().__init__(criterion, **schedule)  # type: ignore[arg-type]
        self.momentum_encoder = encoder
        self.momentum_first_epoch = momentum_first_epoch
        self._step = 0

    @classmethod
    def from_config(cls, config: Config, context: MethodContext) -> "MomentumCoMatch":
        c, o = config.comatch, config.optim
        if context.model is None:
            raise ValueError("the momentum variant needs the trained network to copy")
        criterion = MomentumCoMatchCriterion(
            context.num_classes, context.proj_dim, bank_size(c, o.batch_size, o.mu), queue_size=c.queue_size,
            queue_init=c.queue_init, prior=alignment_prior(c, context), defer_updates=True,
            **cls.criterion_settings(c),  # type: ignore[arg-type]
        )
        encoder = MomentumEncoder(context.model, c.momentum)  # type: ignore[arg-type]
        return cls(criterion, encoder, momentum_first_epoch=c.momentum_first_epoch,
                   **cls._schedule_settings(config, context))

    def momentum_at(self, step: int) -> float:
        """The momentum encoder's ``m`` for the update that follows step ``k``."""
        if self.momentum_first_epoch is not None and self.epoch(step) < 1:
            return self.momentum_first_epoch
        return self.momentum_encoder.momentum

    def forward(self, batch: Batch, encode: Encode) -> MethodOutput:  # type: ignore[override]
        self._prepare(batch.step)
        self._step = batch.step
        x_w, u_w, u_s0 = batch.labelled["weak"], batch.unlabelled["weak"], batch.unlabelled["strong"]
        rest = [batch.unlabelled["contrastive"]] if self.criterion.contrastive else []
        n_x, n_u = x_w.shape[0], u_w.shape[0]
        encode_momentum = partial(encode, network=self.momentum_encoder)
        with torch.no_grad():
            logits_m, z_m = shuffled_forward(encode_momentum, torch.cat([x_w, u_w, *rest]),
                                             generator=batch.generator())  # [B + (1|2)N, .]
        logits, z = encode(torch.cat([x_w, u_s0]))  # [B + N, C], [B + N, D]
        extra = {"z_u_s1": z_m[n_x + n_u :]} if rest else {}
        return self.criterion(
            logits[:n_x], batch.targets, logits_m[n_x : n_x + n_u], logits[n_x:],
            z_x=z_m[:n_x], z_u_w=z_m[n_x : n_x + n_u], z_u_s0=z[n_x:], **extra,
        )

    def commit(self, model: nn.Module) -> None:
        super().commit(model)
        self.momentum_encoder.update(model, self.momentum_at(self._step + 1))
