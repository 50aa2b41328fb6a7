"""Augmented views of whole batches: the one implementation of the weak, strong and contrastive views.

:class:`BatchViews` maps a uint8 batch ``[N, C, H, W]`` to a uint8 batch ``[N, C, S, S]`` on
the batch's device, with per-sample random parameters and no per-image Python loop. All
parameters are sampled on the CPU from an explicit ``torch.Generator`` (the ``sample_*``
functions below) and then applied by the vectorised kernels of :mod:`comatch.data.batch_ops`
(RandAugment: :mod:`comatch.data.randaugment`), so a generator state gives the same result on
CPU and GPU up to float rounding in interpolation.

Views (their settings: :class:`ViewSettings`, the configuration's ``views`` section):

* ``weak``: reflect-pad by ``crop_padding`` pixels, random crop back to ``S``, optional
  horizontal flip (``crop_offsets="released"`` draws the shift from ``-pad..pad-1`` as the
  released CoMatch code does); or, with ``weak="resized_crop"``, a random resized crop (scale
  ``crop_scale_min`` to 1) and flip (ImageNet).
* ``strong``: the weak view, then RandAugment, then Cutout; with ``strong="contrastive"`` the
  contrastive view (ImageNet).
* ``contrastive``: random resized crop, optional flip, colour jitter (with probability
  ``jitter_prob``), random grayscale.
* ``eval``: resize to ``S`` if needed (:class:`~comatch.data.images.ResizeIfNeeded`, which also
  serves evaluation image by image).

Every view draws from the distributions of torchvision's per-image transforms, and given the
same parameters the RandAugment ops, ColorJitter and grayscale reproduce torchvision's uint8
kernels exactly on the CPU; a per-image implementation in the tests (``tests/oracle_views.py``)
checks it. Deviations from those per-image transforms: inputs not already ``S x S`` are resized
to ``S`` first for every view (a per-image contrastive view would crop the original image); the
contrastive resize is bilinear in float with the horizontal pass rounded first, while
torchvision's antialiased uint8 kernel uses fixed-point weights: a few percent of pixels differ
by 1 (rarely 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from pydantic import ConfigDict, Field, model_validator

from comatch.config import ViewConfig
from comatch.data import batch_ops as ops
from comatch.data.batch_ops import Kernel, apply_groups, bind_values
from comatch.data.images import ResizeIfNeeded
from comatch.data.randaugment import (
    RANDAUGMENT_PROB,
    RandAugmentParams,
    apply_randaugment,
    comatch_op_param_table,
    op_param_table,
    sample_comatch_randaugment_params,
    sample_randaugment_params,
)

VIEW_NAMES: tuple[str, ...] = ("weak", "strong", "contrastive", "eval")
CROP_RATIO: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
"""Aspect-ratio range of the contrastive RandomResizedCrop (torchvision's default)."""
JITTER: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
"""ColorJitter strengths of the contrastive view: brightness, contrast, saturation, hue."""


class ViewSettings(ViewConfig):
    """The configuration's ``views`` section (:class:`~comatch.config.ViewConfig`: the same
    fields, defaults and checks) plus what the views need besides it: the side ``S`` of every
    view, the data's image size, known once the data is read."""

    model_config = ConfigDict(frozen=True)

    image_size: int = Field(gt=0, description="Side length of every view, pixels (square).")
    jitter: tuple[float, float, float, float] = Field(JITTER, description="Contrastive view: ColorJitter strengths.")

    @model_validator(mode="before")
    @classmethod
    def _without_colour(cls, data: Any) -> Any:
        """``colour=false``: the contrastive view keeps its brightness and contrast jitter, no
        saturation or hue jitter (and no grayscale: :class:`~comatch.config.ViewConfig`)."""
        if isinstance(data, Mapping) and data.get("colour") is False:
            brightness, contrast, *_ = data.get("jitter", JITTER)
            data = {**data, "jitter": (brightness, contrast, 0.0, 0.0)}
        return data


# --------------------------------------------------------------------------- parameter samplers
class WeakParams(NamedTuple):
    """Weak-view draws: ``dx``, ``dy`` ``[N]`` long offsets, ``flip`` ``[N]`` bool."""

    dx: torch.Tensor
    dy: torch.Tensor
    flip: torch.Tensor


class WeakCropParams(NamedTuple):
    """Weak-view draws of the ImageNet recipe: a random resized ``crop`` and ``flip`` ``[N]``."""

    crop: "CropParams"
    flip: torch.Tensor


class BoxParams(NamedTuple):
    """Per-sample boxes ``[N]`` long: half-open ``[top, bottom) x [left, right)``."""

    top: torch.Tensor
    left: torch.Tensor
    bottom: torch.Tensor
    right: torch.Tensor


class CropParams(NamedTuple):
    """Per-sample crops ``[N]`` long: ``top``, ``left``, ``height``, ``width``."""

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor


class JitterParams(NamedTuple):
    """ColorJitter draws: ``apply`` ``[N]`` bool, ``order`` ``[N, 4]`` (a permutation
    of brightness 0, contrast 1, saturation 2, hue 3), ``factors`` ``[N, 4]``
    float32 (three factors and the hue shift)."""

    apply: torch.Tensor
    order: torch.Tensor
    factors: torch.Tensor


class StrongParams(NamedTuple):
    """Strong-view draws."""

    weak: WeakParams | WeakCropParams
    randaugment: RandAugmentParams
    cutout: BoxParams | None


class ContrastiveParams(NamedTuple):
    """Contrastive-view draws: crop, ``flip`` and ``grayscale`` ``[N]`` bool, jitter."""

    crop: CropParams
    flip: torch.Tensor
    jitter: JitterParams
    grayscale: torch.Tensor


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None,
             dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Uniform draws in ``[low, high)`` on the CPU."""
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=dtype)


def _coin(n: int, prob: float, generator: torch.Generator | None) -> torch.Tensor:
    """``[n]`` bool, True with probability ``prob``."""
    return torch.rand(n, generator=generator) < prob


def _randint_below(bound: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Per-sample uniform integers in ``[0, bound)`` (``bound`` ``[N]`` long, >= 1)."""
    draw = torch.rand(bound.shape, generator=generator, dtype=torch.float64)
    return torch.minimum((draw * bound).long(), bound - 1)


def sample_weak_params(n: int, settings: ViewSettings,
                       generator: torch.Generator | None) -> WeakParams | WeakCropParams:
    """Draw the weak view's translation in ``[-pad, pad]^2`` and flip (p 0.5 if enabled).

    With ``settings.crop_offsets == "released"`` the translation lies in ``[-pad, pad - 1]^2``.

    With ``settings.weak == "resized_crop"``: a random resized crop (scale
    ``crop_scale_min`` to 1) and the flip instead.

    Args:
        n: Batch size.
        settings: View settings.
        generator: CPU generator.

    Returns:
        The :class:`WeakParams` (or :class:`WeakCropParams`).
    """
    if settings.weak == "resized_crop":
        size = settings.image_size
        crop = sample_resized_crop_params(n, size, size, (settings.crop_scale_min, 1.0), CROP_RATIO, generator)
        flip = _coin(n, 0.5, generator) if settings.flip else torch.zeros(n, dtype=torch.bool)
        return WeakCropParams(crop, flip)
    pad = settings.crop_padding
    high = pad if settings.crop_offsets == "released" and pad > 0 else pad + 1  # released: -pad..pad-1
    dx = torch.randint(-pad, high, (n,), generator=generator)
    dy = torch.randint(-pad, high, (n,), generator=generator)
    flip = _coin(n, 0.5, generator) if settings.flip else torch.zeros(n, dtype=torch.bool)
    return WeakParams(dx, dy, flip)


def sample_cutout_params(n: int, height: int, width: int, fraction: float,
                         generator: torch.Generator | None) -> BoxParams:
    """Draw Cutout squares as ``Cutout.sample_box``: uniform centre, clipped square.

    Args:
        n: Batch size.
        height: Image height.
        width: Image width.
        fraction: Side as a fraction of ``min(height, width)``.
        generator: CPU generator.

    Returns:
        The clipped :class:`BoxParams`.
    """
    side = round(fraction * min(height, width))
    cy = torch.randint(height, (n,), generator=generator)
    cx = torch.randint(width, (n,), generator=generator)
    top, left = cy - side // 2, cx - side // 2
    return BoxParams(top.clamp(min=0), left.clamp(min=0), (top + side).clamp(max=height),
                     (left + side).clamp(max=width))


def sample_resized_crop_params(n: int, height: int, width: int, scale: tuple[float, float],
                               ratio: tuple[float, float], generator: torch.Generator | None,
                               tries: int = 10) -> CropParams:
    """Draw RandomResizedCrop boxes with torchvision's algorithm, tries vectorised.

    Each sample takes its first try (area ~ U(scale) * area, log-ratio ~
    U(log ratio)) whose rounded box fits, else the central crop with the ratio
    clamped to ``ratio``.

    Args:
        n: Batch size.
        height: Image height.
        width: Image width.
        scale: Area fraction range.
        ratio: Aspect ratio (w / h) range.
        generator: CPU generator.
        tries: Attempts before the fallback.

    Returns:
        The :class:`CropParams`.
    """
    area = _uniform((n, tries), scale[0], scale[1], generator) * (height * width)
    aspect = torch.exp(_uniform((n, tries), math.log(ratio[0]), math.log(ratio[1]), generator))
    w = torch.sqrt(area * aspect).round().long()  # [N, tries]; round half to even like Python
    h = torch.sqrt(area / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # first fitting try
    found = fits.any(dim=1)
    fb_w, fb_h = _central_crop_size(height, width, ratio)
    crop_w = torch.where(found, w.gather(1, first).squeeze(1), fb_w)
    crop_h = torch.where(found, h.gather(1, first).squeeze(1), fb_h)
    top = _randint_below(height - crop_h + 1, generator)
    left = _randint_below(width - crop_w + 1, generator)
    top = torch.where(found, top, (height - crop_h) // 2)
    left = torch.where(found, left, (width - crop_w) // 2)
    return CropParams(top, left, crop_h, crop_w)


def _central_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """RandomResizedCrop's fallback ``(w, h)``: the whole image with its ratio clamped."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return width, int(round(width / min(ratio)))
    if in_ratio > max(ratio):
        return int(round(height * max(ratio))), height
    return width, height


def jitter_ranges(jitter: tuple[float, float, float, float]) -> list[tuple[float, float] | None]:
    """ColorJitter's ranges for (brightness, contrast, saturation, hue); None = disabled."""
    ranges: list[tuple[float, float] | None] = []
    for value in jitter[:3]:
        ranges.append(None if value == 0 else (max(0.0, 1.0 - value), 1.0 + value))
    ranges.append(None if jitter[3] == 0 else (-jitter[3], jitter[3]))
    return ranges


def sample_jitter_params(n: int, jitter: tuple[float, float, float, float], prob: float,
                         generator: torch.Generator | None) -> JitterParams:
    """Draw RandomApply(ColorJitter): apply flag, random op order and factors.

    Args:
        n: Batch size.
        jitter: (brightness, contrast, saturation, hue) strengths.
        prob: Probability of applying the jitter.
        generator: CPU generator.

    Returns:
        The :class:`JitterParams`; disabled components get the neutral value.
    """
    apply = _coin(n, prob, generator)
    order = torch.rand((n, 4), generator=generator).argsort(dim=1)  # a uniform permutation per row
    columns = []
    for k, bounds in enumerate(jitter_ranges(jitter)):
        neutral = 0.0 if k == 3 else 1.0
        low, high = bounds if bounds is not None else (neutral, neutral)
        columns.append(_uniform((n,), low, high, generator, dtype=torch.float32))
    return JitterParams(apply, order, torch.stack(columns, dim=1))


def sample_strong_params(n: int, settings: ViewSettings, generator: torch.Generator | None) -> StrongParams:
    """Draw all parameters of the strong view (weak, RandAugment, Cutout)."""
    size = settings.image_size
    weak = sample_weak_params(n, settings, generator)
    sampler = sample_comatch_randaugment_params if settings.randaugment == "comatch" else sample_randaugment_params
    randaugment = sampler(n, settings.randaugment_ops, settings.randaugment_magnitude, RANDAUGMENT_PROB, generator,
                          colour=settings.colour, rotate=settings.rotate)
    cutout = (sample_cutout_params(n, size, size, settings.cutout, generator)
              if settings.cutout > 0 else None)
    return StrongParams(weak, randaugment, cutout)


def sample_contrastive_params(n: int, settings: ViewSettings,
                              generator: torch.Generator | None) -> ContrastiveParams:
    """Draw all parameters of the contrastive view."""
    size = settings.image_size
    crop = sample_resized_crop_params(n, size, size, (settings.crop_scale_min, 1.0), CROP_RATIO, generator)
    flip = _coin(n, 0.5, generator) if settings.flip else torch.zeros(n, dtype=torch.bool)
    jitter = sample_jitter_params(n, settings.jitter, settings.jitter_prob, generator)
    grayscale = _coin(n, settings.grayscale_prob, generator)
    return ContrastiveParams(crop, flip, jitter, grayscale)


# --------------------------------------------------------------------------- application

_JITTER_KERNELS: tuple[Kernel, ...] = (ops.adjust_brightness, ops.adjust_contrast,
                                       ops.adjust_saturation, ops.adjust_hue)


def apply_jitter(x: torch.Tensor, params: JitterParams, enabled: list[bool]) -> torch.Tensor:
    """Apply ColorJitter slot by slot in each sample's random order.

    Args:
        x: Float images ``[N, C, H, W]`` (modified in place and returned).
        params: CPU :class:`JitterParams`.
        enabled: Which of (brightness, contrast, saturation, hue) are active.

    Returns:
        The jittered float images.
    """
    factors = params.factors.to(x.device)  # [N, 4]
    ids = [j for j in range(4) if enabled[j]]
    for slot in range(4):
        masks = [params.apply & (params.order[:, slot] == j) for j in ids]
        kernels = [bind_values(lambda img, f, j=j: _JITTER_KERNELS[j](img, f), factors[:, j]) for j in ids]
        apply_groups(x, masks, kernels)
    return x


def apply_weak(images: torch.Tensor, params: WeakParams | WeakCropParams) -> torch.Tensor:
    """Weak view from drawn parameters (any dtype; one gather, or a resized crop)."""
    device = images.device
    if isinstance(params, WeakCropParams):
        crop = [t.to(device) for t in params.crop]
        size = images.shape[-1]
        out = ops.resized_crop(images.float(), *crop, size=size, flip=params.flip.to(device))
        return out.to(images.dtype)
    return ops.translate_flip(images, params.dx.to(device), params.dy.to(device), params.flip.to(device))


def apply_strong(images: torch.Tensor, params: StrongParams, table: torch.Tensor, fill: int,
                 variant: str = "fixmatch") -> torch.Tensor:
    """Strong view (weak, RandAugment of ``variant``, Cutout) from drawn parameters; uint8 in and out."""
    x = apply_weak(images, params.weak).float()
    x = apply_randaugment(x, params.randaugment, table, fill, variant).to(torch.uint8)
    if params.cutout is None:
        return x
    box = [t.to(x.device) for t in params.cutout]
    return ops.box_fill(x, *box, fill=fill)


def apply_contrastive(images: torch.Tensor, params: ContrastiveParams,
                      settings: ViewSettings) -> torch.Tensor:
    """Contrastive view (resized crop, flip, jitter, grayscale) from drawn parameters."""
    device = images.device
    crop = [t.to(device) for t in params.crop]
    x = ops.resized_crop(images.float(), *crop, size=settings.image_size, flip=params.flip.to(device))
    enabled = [r is not None for r in jitter_ranges(settings.jitter)]
    x = apply_jitter(x, params.jitter, enabled)
    apply_groups(x, [params.grayscale], [lambda img, idx: ops.to_grayscale(img)])
    return x.to(torch.uint8)


class BatchViews:
    """The views of whole batches, on any device.

    Args:
        settings: The view configuration.
    """

    def __init__(self, settings: ViewSettings) -> None:
        self.settings = settings
        size = settings.image_size
        if settings.randaugment == "comatch":
            self.table = comatch_op_param_table(settings.randaugment_magnitude, size, size)
        else:
            self.table = op_param_table(settings.randaugment_magnitude, size, size)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Resize ``[N, C, H, W]`` to ``S x S`` (bilinear, antialiased) unless already that size."""
        return ResizeIfNeeded(self.settings.image_size)(images)

    def kind(self, name: str) -> str:
        """The view actually drawn for ``name``: ``strong`` may be the contrastive view."""
        if name not in VIEW_NAMES:
            raise ValueError(f"unknown view {name!r}; expected one of {VIEW_NAMES}")
        if name == "strong" and self.settings.strong == "contrastive":
            return "contrastive"
        return name

    def sample(self, name: str, n: int, generator: torch.Generator | None) -> Params | None:
        """Draw the random parameters of view ``name`` for ``n`` samples (None for ``eval``)."""
        kind, settings = self.kind(name), self.settings
        if kind == "weak":
            return sample_weak_params(n, settings, generator)
        if kind == "strong":
            return sample_strong_params(n, settings, generator)
        if kind == "contrastive":
            return sample_contrastive_params(n, settings, generator)
        return None

    def apply(self, name: str, images: torch.Tensor, params: Params | None) -> torch.Tensor:
        """Apply view ``name`` with drawn ``params`` to ``S x S`` uint8 images."""
        kind = self.kind(name)
        if kind == "weak":
            return apply_weak(images, params)  # type: ignore[arg-type]
        if kind == "strong":
            return apply_strong(images, params, self.table, self.settings.fill,  # type: ignore[arg-type]
                                self.settings.randaugment)
        if kind == "contrastive":
            return apply_contrastive(images, params, self.settings)  # type: ignore[arg-type]
        return images

    def __call__(self, name: str, images: torch.Tensor, generator: torch.Generator | None, *,
                 start: int = 0, total: int | None = None) -> torch.Tensor:
        """Apply view ``name`` to a batch, or to a contiguous share of a batch.

        Args:
            name: One of :data:`VIEW_NAMES`.
            images: uint8 ``[N, C, H, W]`` with ``C`` in ``{1, 3}``, on any device.
            generator: CPU generator all random parameters are drawn from.
            start: ``images`` are rows ``[start, start + N)`` of a batch of ``total``.
            total: size of that batch (default ``N``). Parameters are drawn for all ``total``
                samples and this share's rows applied, so the result equals the same rows of
                the whole batch's view (and the generator advances alike): a process of a
                multi-process run augments its rows exactly as one process would.

        Returns:
            uint8 ``[N, C, S, S]`` on the images' device.

        Raises:
            ValueError: If ``name`` is unknown, ``images`` is not a uint8 batch, or the rows
                do not lie in the batch.
        """
        return self.views_of_batches({name: name}, [(images, generator)], start=start, total=total)[0][name]

    def views_of_batches(self, names: Mapping[str, str], batches: Sequence[tuple[torch.Tensor, torch.Generator | None]],
                         *, start: int = 0, total: int | None = None) -> list[dict[str, torch.Tensor]]:
        """The views of several batches, each view's operations run once over all of them.

        On small images most of a view's cost is the fixed cost of each operation, not the
        pixels, so augmenting a few batches together costs little more than one. The result
        is, tensor for tensor and bit for bit, ``{key: self(kind, images, generator,
        start=start, total=total) for key, kind in names.items()}`` for each batch in turn:
        each batch's parameters are drawn from its own generator in the same order, and
        every operation treats each image on its own.

        Args:
            names: view key -> view name (see :meth:`__call__`), in drawing order.
            batches: ``(images, generator)`` per batch; uint8 ``[N, C, H, W]`` images, the
                same ``N`` in every batch.
            start: the images are rows ``[start, start + N)`` of batches of ``total``.
            total: size of those batches (default ``N``).

        Returns:
            One dict of views (key -> uint8 ``[N, C, S, S]``) per batch.

        Raises:
            ValueError: As :meth:`__call__`, or if the batches differ in size.
        """
        for kind in names.values():
            self.kind(kind)
        if any(images.dtype != torch.uint8 or images.dim() != 4 for images, _ in batches):
            raise ValueError("images must be a uint8 tensor [N, C, H, W]")
        n = batches[0][0].shape[0] if batches else 0
        if any(images.shape[0] != n for images, _ in batches):
            raise ValueError("batches augmented together must hold the same number of images")
        total = n if total is None else total
        if start < 0 or start + n > total:
            raise ValueError(f"rows [{start}, {start + n}) do not lie in a batch of {total}")
        if n == 0:
            size = self.settings.image_size
            return [{key: images.new_empty((0, images.shape[1], size, size)) for key in names} for images, _ in batches]
        drawn = []  # per batch, the parameters of each view, drawn in order from its generator
        for _, generator in batches:
            params = {}
            for key, kind in names.items():
                params[key] = self.sample(kind, total, generator)
                if params[key] is not None and (start, n) != (0, total):
                    params[key] = slice_params(params[key], start, start + n)
            drawn.append(params)
        resized = [self.resize(images) for images, _ in batches]
        images = resized[0] if len(resized) == 1 else torch.cat(resized)
        together = {key: self.apply(kind, images, cat_params([d[key] for d in drawn]))
                    for key, kind in names.items()}
        return [{key: view[k * n:(k + 1) * n] for key, view in together.items()} for k in range(len(batches))]


Params = WeakParams | WeakCropParams | StrongParams | ContrastiveParams


def slice_params(params: Any, start: int, stop: int) -> Any:
    """Rows ``[start, stop)`` of drawn parameters (nested named tuples of ``[N, ...]`` tensors)."""
    if params is None:
        return None
    if isinstance(params, torch.Tensor):
        return params[start:stop]
    return type(params)(*(slice_params(field, start, stop) for field in params))


def cat_params(drawn: list[Any]) -> Any:
    """Drawn parameters of several batches as those of one (concatenated along the rows)."""
    first = drawn[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(drawn)
    return type(first)(*(cat_params([params[i] for params in drawn]) for i in range(len(first))))


