"""Per-image augmented views used by CoMatch.

Every view maps ONE uint8 image tensor ``[C, H, W]`` (``C`` in ``{1, 3}``) to a
uint8 tensor ``[C, S, S]`` with ``S = ViewSettings.image_size``. Normalisation is
applied later on the batch. All randomness comes from torch's global RNG, so
``torch.manual_seed`` alone makes a view reproducible.

Views (see :func:`build_views`):

* ``weak``: reflect-pad by ``crop_padding`` pixels, random crop back to ``S``,
  optional horizontal flip. ``crop_offsets="released"`` draws the shift from
  ``-crop_padding..crop_padding-1`` as the released CoMatch code does.
* ``strong``: the weak view, then RandAugment (FixMatch's,
  :class:`FixMatchRandAugment`, or with ``randaugment="comatch"`` the released
  CoMatch CIFAR variant, :class:`CoMatchRandAugment`), then :class:`Cutout`.
* ``contrastive``: RandomResizedCrop, optional flip, colour jitter (applied with
  probability ``jitter_prob``), random grayscale.
* ``eval``: resize to ``S`` if needed.

Two switches give the ImageNet recipe: ``weak="resized_crop"`` makes the weak view a random
resized crop (scale ``crop_scale_min`` to 1) plus flip, and ``strong="contrastive"`` makes the
strong view the contrastive view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as nnf
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from comatch.data import batch_ops

View = Callable[[torch.Tensor], torch.Tensor]

FIXMATCH_OPS: tuple[str, ...] = (
    "AutoContrast",
    "Brightness",
    "Color",
    "Contrast",
    "Equalize",
    "Identity",
    "Posterize",
    "Rotate",
    "Sharpness",
    "ShearX",
    "ShearY",
    "Solarize",
    "TranslateX",
    "TranslateY",
)
"""The FixMatch RandAugment op list; ops are drawn uniformly from it."""

MAGNITUDE_SCALE = 10
"""Magnitudes are expressed out of this value (``m / 10`` is the strength)."""

COMATCH_OPS: tuple[str, ...] = FIXMATCH_OPS
"""The released CoMatch RandAugment draws uniformly from the same 14 ops (its own kernels)."""

COMATCH_TRANSLATE_PX = 10.0
"""Largest CoMatch translation, pixels (at magnitude 10), whatever the image size."""

COMATCH_GEOMETRIC: tuple[str, ...] = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
"""CoMatch ops that are bilinear affine warps."""


@dataclass(frozen=True)
class ViewSettings:
    """Configuration of the augmented views.

    Attributes:
        image_size: Output side length (square).
        crop_padding: Weak-view reflect padding before the random crop, pixels.
        flip: Whether weak/strong/contrastive views flip horizontally (p 0.5).
        cutout: Cutout side as a fraction of ``image_size`` (0 disables).
        randaugment_ops: Number of RandAugment ops drawn per image.
        randaugment_magnitude: Largest RandAugment magnitude (out of 10).
        crop_scale_min: Lower area scale of the contrastive RandomResizedCrop.
        jitter: ColorJitter (brightness, contrast, saturation, hue).
        jitter_prob: Probability of applying the colour jitter.
        grayscale_prob: Probability of converting to grayscale.
        fill: Fill value for geometric RandAugment ops and Cutout.
        weak: ``"crop"`` (pad and crop) or ``"resized_crop"`` (random resized crop, ImageNet).
        strong: ``"fixmatch"`` (weak + RandAugment + Cutout) or ``"contrastive"`` (ImageNet).
        randaugment: ``"fixmatch"`` (:class:`FixMatchRandAugment`) or ``"comatch"``
            (:class:`CoMatchRandAugment`, magnitude fixed at ``randaugment_magnitude``).
        crop_offsets: ``"symmetric"`` (shifts ``-pad..pad``) or ``"released"`` (``-pad..pad-1``).
    """

    image_size: int
    crop_padding: int = 4
    flip: bool = True
    cutout: float = 0.5
    randaugment_ops: int = 2
    randaugment_magnitude: int = 10
    crop_scale_min: float = 0.2
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    fill: int = 127
    weak: str = "crop"
    strong: str = "fixmatch"
    randaugment: str = "fixmatch"
    crop_offsets: str = "symmetric"

    def __post_init__(self) -> None:
        """Validate the settings.

        Raises:
            ValueError: If a field is out of range.
        """
        checks = {
            "image_size must be positive": self.image_size > 0,
            "crop_padding must be >= 0": self.crop_padding >= 0,
            "cutout must lie in [0, 1]": 0.0 <= self.cutout <= 1.0,
            "randaugment_ops must be >= 0": self.randaugment_ops >= 0,
            "randaugment_magnitude must be >= 1": self.randaugment_magnitude >= 1,
            "crop_scale_min must lie in (0, 1]": 0.0 < self.crop_scale_min <= 1.0,
            "jitter must have 4 entries": len(self.jitter) == 4,
            "jitter_prob must lie in [0, 1]": 0.0 <= self.jitter_prob <= 1.0,
            "grayscale_prob must lie in [0, 1]": 0.0 <= self.grayscale_prob <= 1.0,
            "fill must lie in [0, 255]": 0 <= self.fill <= 255,
            "weak must be 'crop' or 'resized_crop'": self.weak in ("crop", "resized_crop"),
            "strong must be 'fixmatch' or 'contrastive'": self.strong in ("fixmatch", "contrastive"),
            "randaugment must be 'fixmatch' or 'comatch'": self.randaugment in ("fixmatch", "comatch"),
            "crop_offsets must be 'symmetric' or 'released'": self.crop_offsets in ("symmetric", "released"),
        }
        for message, ok in checks.items():
            if not ok:
                raise ValueError(f"ViewSettings: {message}")


@dataclass(frozen=True)
class OpDraw:
    """One sampled RandAugment op application.

    Attributes:
        op: Name from :data:`FIXMATCH_OPS`.
        apply: Whether the op is applied at all.
        magnitude: Integer magnitude in ``[1, max_magnitude]``.
        sign: +1 or -1, direction for signed ops.
    """

    op: str
    apply: bool
    magnitude: int
    sign: int


def _enhance_factor(magnitude: int, sign: int) -> float:
    """Factor ``1 + sign * 0.9 * m / 10`` (spans [0.1, 1.9])."""
    return 1.0 + sign * 0.9 * magnitude / MAGNITUDE_SCALE


def _affine(img: torch.Tensor, fill: int, translate: tuple[float, float] = (0.0, 0.0),
            shear: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Nearest-neighbour affine warp with pure translation and/or shear (degrees)."""
    return F.affine(img, angle=0.0, translate=list(translate), scale=1.0,
                    shear=list(shear), fill=[float(fill)])


def apply_op(img: torch.Tensor, op: str, magnitude: int, sign: int, fill: int) -> torch.Tensor:
    """Apply one FixMatch RandAugment op to a uint8 image.

    Args:
        img: uint8 tensor ``[C, H, W]`` with ``C`` in ``{1, 3}``.
        op: Name from :data:`FIXMATCH_OPS`.
        magnitude: Strength out of :data:`MAGNITUDE_SCALE`.
        sign: +1 or -1; direction for Brightness/Color/Contrast/Sharpness,
            Rotate, Shear and Translate (ignored by the others).
        fill: Fill value for pixels uncovered by geometric ops.

    Returns:
        The transformed uint8 tensor of the same shape.

    Raises:
        ValueError: If ``op`` is unknown.
    """
    frac = magnitude / MAGNITUDE_SCALE
    height, width = img.shape[-2:]
    if op == "Identity":
        return img
    if op == "AutoContrast":
        return F.autocontrast(img)
    if op == "Equalize":
        return F.equalize(img)
    if op == "Brightness":
        return F.adjust_brightness(img, _enhance_factor(magnitude, sign))
    if op == "Color":
        if img.shape[-3] == 1:
            return img
        return F.adjust_saturation(img, _enhance_factor(magnitude, sign))
    if op == "Contrast":
        return F.adjust_contrast(img, _enhance_factor(magnitude, sign))
    if op == "Sharpness":
        return F.adjust_sharpness(img, _enhance_factor(magnitude, sign))
    if op == "Posterize":
        return F.posterize(img, max(4, 8 - round(4 * frac)))
    if op == "Solarize":
        threshold = min(255, max(0, 256 - round(256 * frac)))
        return F.solarize(img, threshold)
    if op == "Rotate":
        return F.rotate(img, sign * 30.0 * frac, fill=[float(fill)])
    if op in ("ShearX", "ShearY"):
        degrees = sign * math.degrees(math.atan(0.3 * frac))
        shear = (degrees, 0.0) if op == "ShearX" else (0.0, degrees)
        return _affine(img, fill, shear=shear)
    if op == "TranslateX":
        return _affine(img, fill, translate=(sign * 0.3 * frac * width, 0.0))
    if op == "TranslateY":
        return _affine(img, fill, translate=(0.0, sign * 0.3 * frac * height))
    raise ValueError(f"unknown RandAugment op {op!r}")


class FixMatchRandAugment:
    """RandAugment as used by FixMatch.

    ``num_ops`` ops are drawn uniformly with replacement from
    :data:`FIXMATCH_OPS`; each is applied with probability ``prob`` and an
    integer magnitude drawn uniformly from ``[1, max_magnitude]``.

    Args:
        num_ops: Ops drawn per image.
        max_magnitude: Largest magnitude (out of :data:`MAGNITUDE_SCALE`).
        prob: Probability that a drawn op is applied.
        fill: Fill value for geometric ops.
    """

    def __init__(self, num_ops: int = 2, max_magnitude: int = 10, prob: float = 0.5,
                 fill: int = 127) -> None:
        if num_ops < 0 or max_magnitude < 1 or not 0.0 <= prob <= 1.0:
            raise ValueError("invalid RandAugment parameters")
        self.num_ops = num_ops
        self.max_magnitude = max_magnitude
        self.prob = prob
        self.fill = fill

    def sample_params(self) -> list[OpDraw]:
        """Draw the ops for one image from torch's global RNG.

        Returns:
            ``num_ops`` :class:`OpDraw` records, in application order.
        """
        n = self.num_ops
        if n == 0:
            return []
        ops = torch.randint(len(FIXMATCH_OPS), (n,)).tolist()
        applies = (torch.rand(n) < self.prob).tolist()
        mags = torch.randint(1, self.max_magnitude + 1, (n,)).tolist()
        signs = (torch.randint(2, (n,)) * 2 - 1).tolist()
        return [OpDraw(FIXMATCH_OPS[o], a, m, s) for o, a, m, s in zip(ops, applies, mags, signs)]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Augment one uint8 image.

        Args:
            img: uint8 tensor ``[C, H, W]``.

        Returns:
            The augmented uint8 tensor of the same shape.
        """
        for draw in self.sample_params():
            if draw.apply:
                img = apply_op(img, draw.op, draw.magnitude, draw.sign, self.fill)
        return img


def comatch_op_parameters(op: str, magnitude: int, sign: int) -> tuple[float, ...]:
    """Kernel parameters of one released-CoMatch RandAugment op (six floats, zero-padded).

    At level ``m`` (of 10), as the released CIFAR code maps levels to arguments:
    Brightness/Color/Contrast/Sharpness factor ``1.8 m / 10 + 0.1`` (1.9 at 10, never below
    1: no sign); Solarize threshold ``int(256 m / 10)`` (256 at 10: a no-op); Posterize keeps
    ``int(4 m / 10)`` bits; Rotate ``30 m / 10`` degrees counter-clockwise about ``(W/2, H/2)``
    (pixel-centre coordinates); ShearX/Y factor ``0.3 m / 10`` about the top-left pixel;
    TranslateX/Y ``10 m / 10`` pixels. The signed ops take ``sign``. Geometric ops give the
    inverse map of :func:`comatch.data.batch_ops.affine_bilinear`; the rotation's ``(c_x,
    c_y)`` entries are filled in by :func:`comatch_geometry`.

    Args:
        op: Name from :data:`COMATCH_OPS`.
        magnitude: Level out of :data:`MAGNITUDE_SCALE`.
        sign: +1 or -1.

    Returns:
        Six floats: ``(value, 0, ...)`` for pixel ops; for geometric ops ``(a, b, c, d, e,
        f)`` with the rotation's centre terms still to add.
    """
    frac = magnitude / MAGNITUDE_SCALE
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        values: tuple[float, ...] = (frac * 1.8 + 0.1,)
    elif op == "Solarize":
        values = (float(int(frac * 256)),)
    elif op == "Posterize":
        values = (float(int(frac * 4)),)
    elif op == "Rotate":
        theta = math.radians(sign * 30.0 * frac)
        a, b = math.cos(theta), math.sin(theta)
        values = (a, -b, 0.0, b, a, 0.0)
    elif op == "ShearX":
        values = (1.0, -sign * 0.3 * frac, 0.0, 0.0, 1.0, 0.0)
    elif op == "ShearY":
        values = (1.0, 0.0, 0.0, -sign * 0.3 * frac, 1.0, 0.0)
    elif op == "TranslateX":
        values = (1.0, 0.0, sign * COMATCH_TRANSLATE_PX * frac, 0.0, 1.0, 0.0)
    elif op == "TranslateY":
        values = (1.0, 0.0, 0.0, 0.0, 1.0, sign * COMATCH_TRANSLATE_PX * frac)
    else:
        values = ()
    return values + (0.0,) * (6 - len(values))


def comatch_geometry(op: str, values: tuple[float, ...], height: int, width: int) -> tuple[float, ...]:
    """Complete a geometric op's inverse map for an image size (the rotation centre).

    The released code rotates about ``(W/2, H/2)`` in pixel-centre coordinates, so that
    ``source = R (p - c) + c``: the constant terms are ``c - R c``.

    Args:
        op: Op name.
        values: :func:`comatch_op_parameters` of the op.
        height: Image height.
        width: Image width.

    Returns:
        The six entries with the centre terms added (unchanged for other ops).
    """
    if op != "Rotate":
        return values
    a, b, _, d, e, _ = values
    cx, cy = width / 2.0, height / 2.0
    return (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy)


def comatch_kernel(op: str, x: torch.Tensor, params: torch.Tensor, fill: int) -> torch.Tensor:
    """Apply one released-CoMatch RandAugment op to a float batch with per-sample parameters.

    Args:
        op: Name from :data:`COMATCH_OPS`.
        x: Float images ``[M, C, H, W]`` with integer values in ``[0, 255]``.
        params: ``[M, 6]`` parameters (:func:`comatch_op_parameters` / :func:`comatch_geometry`).
        fill: Value of pixels a geometric op uncovers.

    Returns:
        The transformed float images ``[M, C, H, W]``.

    Raises:
        ValueError: If ``op`` is unknown.
    """
    value = params[:, 0]
    kernels = {
        "Identity": lambda: x,
        "AutoContrast": lambda: batch_ops.comatch_autocontrast(x),
        "Equalize": lambda: batch_ops.equalize(x),
        "Brightness": lambda: batch_ops.adjust_brightness(x, value),
        "Color": lambda: batch_ops.comatch_color(x, value),
        "Contrast": lambda: batch_ops.comatch_contrast(x, value),
        "Sharpness": lambda: batch_ops.adjust_sharpness(x, value),
        "Posterize": lambda: batch_ops.posterize(x, value),
        "Solarize": lambda: batch_ops.solarize(x, value),
    }
    if op in COMATCH_GEOMETRIC:
        return batch_ops.affine_bilinear(x, params, float(fill))
    if op not in kernels:
        raise ValueError(f"unknown RandAugment op {op!r}")
    return kernels[op]()


def apply_comatch_op(img: torch.Tensor, op: str, sign: int, fill: int,
                     magnitude: int = MAGNITUDE_SCALE) -> torch.Tensor:
    """Apply one released-CoMatch RandAugment op to a uint8 image.

    Args:
        img: uint8 tensor ``[C, H, W]`` with ``C`` in ``{1, 3}``.
        op: Name from :data:`COMATCH_OPS`.
        sign: +1 or -1; direction of Rotate, Shear and Translate (ignored by the others).
        fill: Fill value of geometric ops (128 in the released code).
        magnitude: Level out of :data:`MAGNITUDE_SCALE` (the released code: always 10).

    Returns:
        The transformed uint8 tensor of the same shape.

    Raises:
        ValueError: If ``op`` is unknown.
    """
    height, width = img.shape[-2:]
    values = comatch_geometry(op, comatch_op_parameters(op, magnitude, sign), height, width)
    params = torch.tensor([values], dtype=torch.float64)
    return comatch_kernel(op, img[None].float(), params, fill)[0].to(torch.uint8)


class CoMatchRandAugment:
    """RandAugment as the released CoMatch CIFAR code runs it.

    ``num_ops`` ops are drawn uniformly with replacement from :data:`COMATCH_OPS`; each is
    applied with probability ``prob`` at the fixed level ``magnitude`` (10 in the released
    code: factor 1.9, solarize a no-op, 30 degrees, shear 0.3, 10 px) with a random sign for
    Rotate, Shear and Translate. See :func:`comatch_op_parameters`.

    Args:
        num_ops: Ops drawn per image.
        magnitude: Fixed level (out of :data:`MAGNITUDE_SCALE`).
        prob: Probability that a drawn op is applied.
        fill: Fill value for geometric ops (128 in the released code).
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 10, prob: float = 0.5, fill: int = 128) -> None:
        if num_ops < 0 or not 1 <= magnitude <= MAGNITUDE_SCALE or not 0.0 <= prob <= 1.0:
            raise ValueError("invalid RandAugment parameters")
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.prob = prob
        self.fill = fill

    def sample_params(self) -> list[OpDraw]:
        """Draw the ops for one image from torch's global RNG.

        Returns:
            ``num_ops`` :class:`OpDraw` records (magnitude fixed), in application order.
        """
        n = self.num_ops
        if n == 0:
            return []
        ops = torch.randint(len(COMATCH_OPS), (n,)).tolist()
        applies = (torch.rand(n) < self.prob).tolist()
        signs = (torch.randint(2, (n,)) * 2 - 1).tolist()
        return [OpDraw(COMATCH_OPS[o], a, self.magnitude, s) for o, a, s in zip(ops, applies, signs)]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Augment one uint8 image ``[C, H, W]``; returns a uint8 tensor of the same shape."""
        for draw in self.sample_params():
            if draw.apply:
                img = apply_comatch_op(img, draw.op, draw.sign, self.fill, draw.magnitude)
        return img


class ReleasedPadCrop:
    """Reflect-pad by ``pad`` and crop back with the corner drawn from ``0..2 pad - 1``.

    The released CoMatch code draws its crop corner with an exclusive upper bound, so the
    shift lies in ``-pad..pad-1``: one pixel more often left/up than right/down.

    Args:
        pad: Padding, pixels (0: identity).
    """

    def __init__(self, pad: int) -> None:
        self.pad = pad

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Crop one uint8 image ``[C, H, W]`` (same shape out)."""
        if self.pad == 0:
            return img
        height, width = img.shape[-2:]
        top = int(torch.randint(2 * self.pad, ()).item())
        left = int(torch.randint(2 * self.pad, ()).item())
        padded = nnf.pad(img[None].float(), (self.pad,) * 4, mode="reflect")[0].to(img.dtype)
        return padded[..., top:top + height, left:left + width]


class Cutout:
    """Fill a square of side ``round(fraction * min(H, W))`` at a random centre.

    The centre is uniform over pixel positions; the square is clipped at the
    borders.

    Args:
        fraction: Side length as a fraction of the image side (0 disables).
        fill: Value written into the square.
    """

    def __init__(self, fraction: float, fill: int = 127) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("Cutout fraction must lie in [0, 1]")
        self.fraction = fraction
        self.fill = fill

    def sample_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Draw the (clipped) square from torch's global RNG.

        Args:
            height: Image height.
            width: Image width.

        Returns:
            ``(top, left, bottom, right)``, half-open, clipped to the image.
        """
        side = round(self.fraction * min(height, width))
        cy = int(torch.randint(height, ()).item())
        cx = int(torch.randint(width, ()).item())
        top, left = cy - side // 2, cx - side // 2
        return max(0, top), max(0, left), min(height, top + side), min(width, left + side)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Apply Cutout to one image (returns a new tensor).

        Args:
            img: uint8 tensor ``[C, H, W]``.

        Returns:
            A copy with the square filled.
        """
        if self.fraction == 0.0:
            return img
        top, left, bottom, right = self.sample_box(img.shape[-2], img.shape[-1])
        out = img.clone()
        out[..., top:bottom, left:right] = self.fill
        return out


class ResizeIfNeeded:
    """Resize to a square ``size`` (bilinear, antialiased) unless already that size.

    Args:
        size: Output side length.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Resize ``img`` (``[C, H, W]``) to ``[C, size, size]`` if needed."""
        if tuple(img.shape[-2:]) == (self.size, self.size):
            return img
        return F.resize(img, [self.size, self.size], antialias=True)


def _flip(settings: ViewSettings) -> list[View]:
    """A horizontal flip with p 0.5 if ``settings.flip`` else nothing."""
    return [v2.RandomHorizontalFlip(p=0.5)] if settings.flip else []


def _weak_steps(settings: ViewSettings) -> list[View]:
    """Resize, reflect-pad + random crop, optional flip (or random resized crop and flip)."""
    size = settings.image_size
    if settings.weak == "resized_crop":
        crop = v2.RandomResizedCrop((size, size), scale=(settings.crop_scale_min, 1.0), antialias=True)
        return [crop, *_flip(settings)]
    steps: list[View] = [ResizeIfNeeded(size)]
    if settings.crop_padding > 0 and settings.crop_offsets == "released":
        steps.append(ReleasedPadCrop(settings.crop_padding))
    elif settings.crop_padding > 0:
        steps.append(v2.RandomCrop(size, padding=settings.crop_padding, padding_mode="reflect"))
    return steps + _flip(settings)


def _contrastive_steps(settings: ViewSettings) -> list[View]:
    """RandomResizedCrop, optional flip, colour jitter, random grayscale."""
    size = settings.image_size
    return [
        v2.RandomResizedCrop((size, size), scale=(settings.crop_scale_min, 1.0), antialias=True),
        *_flip(settings),
        v2.RandomApply([v2.ColorJitter(*settings.jitter)], p=settings.jitter_prob),
        v2.RandomGrayscale(p=settings.grayscale_prob),
    ]


def build_views(settings: ViewSettings) -> dict[str, View]:
    """Build the per-image views.

    Args:
        settings: The view configuration.

    Returns:
        ``{'weak', 'strong', 'contrastive', 'eval'}`` mapped to callables from a
        uint8 ``[C, H, W]`` tensor to a uint8 ``[C, S, S]`` tensor.
    """
    randaugment: View
    if settings.randaugment == "comatch":
        randaugment = CoMatchRandAugment(num_ops=settings.randaugment_ops,
                                         magnitude=settings.randaugment_magnitude, fill=settings.fill)
    else:
        randaugment = FixMatchRandAugment(num_ops=settings.randaugment_ops,
                                          max_magnitude=settings.randaugment_magnitude,
                                          fill=settings.fill)
    strong_steps = [*_weak_steps(settings), randaugment]
    if settings.cutout > 0:
        strong_steps.append(Cutout(settings.cutout, fill=settings.fill))
    if settings.strong == "contrastive":
        strong_steps = _contrastive_steps(settings)
    return {
        "weak": v2.Compose(_weak_steps(settings)),
        "strong": v2.Compose(strong_steps),
        "contrastive": v2.Compose(_contrastive_steps(settings)),
        "eval": ResizeIfNeeded(settings.image_size),
    }
