"""Per-image augmented views used by CoMatch.

Every view maps ONE uint8 image tensor ``[C, H, W]`` (``C`` in ``{1, 3}``) to a
uint8 tensor ``[C, S, S]`` with ``S = ViewSettings.image_size``. Normalisation is
applied later on the batch. All randomness comes from torch's global RNG, so
``torch.manual_seed`` alone makes a view reproducible.

Views (see :func:`build_views`):

* ``weak``: reflect-pad by ``crop_padding`` pixels, random crop back to ``S``,
  optional horizontal flip.
* ``strong``: the weak view, then FixMatch-style RandAugment
  (:class:`FixMatchRandAugment`), then :class:`Cutout`.
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
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

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
    if settings.crop_padding > 0:
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
