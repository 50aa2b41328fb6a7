"""The per-image views: the oracle the batched views of the package are checked against.

Every view maps ONE uint8 image tensor ``[C, H, W]`` (``C`` in ``{1, 3}``) to a uint8 tensor
``[C, S, S]`` with ``S = ViewSettings.image_size``, through torchvision's per-image transforms
(and, for the released CoMatch RandAugment, the package's kernels one image at a time). All
randomness comes from torch's global RNG, so ``torch.manual_seed`` alone makes a view
reproducible. The tests compare these views with :class:`comatch.data.batch_views.BatchViews`,
in distribution and, given the same parameters, bit for bit; the package itself augments whole
batches only. The magnitude of each RandAugment op is the package's one table
(:mod:`comatch.data.randaugment`).

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

from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from comatch.data.batch_views import ViewSettings
from comatch.data.images import ResizeIfNeeded, View
from comatch.data.randaugment import (
    COMATCH_OPS,
    FIXMATCH_OPS,
    MAGNITUDE_SCALE,
    comatch_geometry,
    comatch_kernel,
    comatch_op_parameters,
    enhance_factor,
    posterize_bits,
    rotate_degrees,
    shear_degrees,
    solarize_threshold,
    translate_pixels,
)

__all__ = [
    "COMATCH_OPS", "FIXMATCH_OPS", "MAGNITUDE_SCALE", "CoMatchRandAugment", "Cutout", "FixMatchRandAugment", "OpDraw",
    "ReleasedPadCrop", "ViewSettings", "apply_comatch_op", "apply_op", "build_views",
]


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
    height, width = img.shape[-2:]
    if op == "Identity":
        return img
    if op == "AutoContrast":
        return F.autocontrast(img)
    if op == "Equalize":
        return F.equalize(img)
    if op == "Brightness":
        return F.adjust_brightness(img, enhance_factor(magnitude, sign))
    if op == "Color":
        if img.shape[-3] == 1:
            return img
        return F.adjust_saturation(img, enhance_factor(magnitude, sign))
    if op == "Contrast":
        return F.adjust_contrast(img, enhance_factor(magnitude, sign))
    if op == "Sharpness":
        return F.adjust_sharpness(img, enhance_factor(magnitude, sign))
    if op == "Posterize":
        return F.posterize(img, posterize_bits(magnitude))
    if op == "Solarize":
        return F.solarize(img, solarize_threshold(magnitude))
    if op == "Rotate":
        return F.rotate(img, rotate_degrees(magnitude, sign), fill=[float(fill)])
    if op in ("ShearX", "ShearY"):
        degrees = shear_degrees(magnitude, sign)
        shear = (degrees, 0.0) if op == "ShearX" else (0.0, degrees)
        return _affine(img, fill, shear=shear)
    if op == "TranslateX":
        return _affine(img, fill, translate=(translate_pixels(magnitude, sign, width), 0.0))
    if op == "TranslateY":
        return _affine(img, fill, translate=(0.0, translate_pixels(magnitude, sign, height)))
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
