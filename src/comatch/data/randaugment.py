"""RandAugment on whole batches: the op lists, the one magnitude table, the samplers and kernels.

Two variants (``views.randaugment``): ``fixmatch`` (FixMatch's: each of ``randaugment_ops`` ops
is drawn uniformly from :data:`FIXMATCH_OPS` and applied with probability
:data:`RANDAUGMENT_PROB` at a magnitude drawn from ``1..randaugment_magnitude`` with a random
sign; the kernels reproduce torchvision's uint8 ops exactly on the CPU) and ``comatch`` (the
released CoMatch CIFAR code: the same 14 ops at a fixed level, its own kernels,
:func:`comatch_kernel`). Parameters are drawn on the CPU from an explicit generator; each op
then runs once per slot on the images that drew it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from comatch.data import batch_ops as ops
from comatch.data.batch_ops import Kernel, apply_groups, bind_values

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

GEOMETRIC_OPS: tuple[str, ...] = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
"""The ops that are affine warps (nearest-neighbour in ``fixmatch``, bilinear in ``comatch``)."""

COLOUR_OPS: tuple[str, ...] = ("AutoContrast", "Color", "Equalize", "Solarize")
"""The ops that change a colour's hue or take it away (``views.colour=false`` leaves them out):
AutoContrast and Equalize stretch each channel apart, Color desaturates, Solarize inverts."""

RANDAUGMENT_PROB = 0.5
"""Probability that a drawn RandAugment op is applied (both variants)."""

_NUM_PARAMS = 6


# --------------------------------------------------------------------------- the magnitude table
def enhance_factor(magnitude: int, sign: int) -> float:
    """Brightness/Color/Contrast/Sharpness factor ``1 + sign * 0.9 * m / 10`` (spans [0.1, 1.9])."""
    return 1.0 + sign * 0.9 * magnitude / MAGNITUDE_SCALE


def posterize_bits(magnitude: int) -> int:
    """Bits kept by Posterize, of the ``fixmatch`` variant."""
    return max(4, 8 - round(4 * (magnitude / MAGNITUDE_SCALE)))


def solarize_threshold(magnitude: int) -> int:
    """Solarize threshold, of the ``fixmatch`` variant."""
    return min(255, max(0, 256 - round(256 * (magnitude / MAGNITUDE_SCALE))))


def rotate_degrees(magnitude: int, sign: int) -> float:
    """Rotation angle (counter-clockwise, ``F.rotate``), of the ``fixmatch`` variant."""
    return sign * 30.0 * (magnitude / MAGNITUDE_SCALE)


def shear_degrees(magnitude: int, sign: int) -> float:
    """Shear angle in degrees, of the ``fixmatch`` variant."""
    return sign * math.degrees(math.atan(0.3 * (magnitude / MAGNITUDE_SCALE)))


def translate_pixels(magnitude: int, sign: int, length: int) -> float:
    """Translation in pixels along an axis of ``length`` pixels, of the ``fixmatch`` variant."""
    return sign * 0.3 * (magnitude / MAGNITUDE_SCALE) * length


def op_parameters(op: str, magnitude: int, sign: int, height: int, width: int) -> tuple[float, ...]:
    """Kernel parameters of one RandAugment draw (zero-padded to 6 floats).

    Scalar ops give ``(value, 0, ...)``; geometric ops give the inverse affine
    matrix torchvision builds for the op.

    Args:
        op: Name from :data:`FIXMATCH_OPS`.
        magnitude: Strength out of :data:`MAGNITUDE_SCALE`.
        sign: +1 or -1.
        height: Image height.
        width: Image width.

    Returns:
        Six floats.
    """
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        values: tuple[float, ...] = (enhance_factor(magnitude, sign),)
    elif op == "Posterize":
        values = (float(posterize_bits(magnitude)),)
    elif op == "Solarize":
        values = (float(solarize_threshold(magnitude)),)
    elif op == "Rotate":  # F.rotate: angle % 360, then the affine matrix of -angle
        values = ops.inverse_affine_matrix(-(rotate_degrees(magnitude, sign) % 360), (0.0, 0.0), (0.0, 0.0))
    elif op in ("ShearX", "ShearY"):
        deg = shear_degrees(magnitude, sign)
        values = ops.inverse_affine_matrix(0.0, (0.0, 0.0), (deg, 0.0) if op == "ShearX" else (0.0, deg))
    elif op == "TranslateX":
        values = ops.inverse_affine_matrix(0.0, (translate_pixels(magnitude, sign, width), 0.0), (0.0, 0.0))
    elif op == "TranslateY":
        values = ops.inverse_affine_matrix(0.0, (0.0, translate_pixels(magnitude, sign, height)), (0.0, 0.0))
    else:
        values = ()
    return tuple(values) + (0.0,) * (_NUM_PARAMS - len(values))


def op_param_table(max_magnitude: int, height: int, width: int) -> torch.Tensor:
    """Parameters of every (op, magnitude, sign) draw.

    Args:
        max_magnitude: Largest magnitude.
        height: Image height.
        width: Image width.

    Returns:
        float64 ``[len(FIXMATCH_OPS), max_magnitude + 1, 2, 6]``; index ``[op,
        magnitude, (sign + 1) // 2]``.
    """
    table = torch.zeros(len(FIXMATCH_OPS), max_magnitude + 1, 2, _NUM_PARAMS, dtype=torch.float64)
    for o, op in enumerate(FIXMATCH_OPS):
        for m in range(1, max_magnitude + 1):
            for s, sign in enumerate((-1, 1)):
                table[o, m, s] = torch.tensor(op_parameters(op, m, sign, height, width), dtype=torch.float64)
    return table


# --------------------------------------------------------------------------- the released CoMatch variant
def comatch_op_parameters(op: str, magnitude: int, sign: int) -> tuple[float, ...]:
    """Kernel parameters of one released-CoMatch RandAugment op (six floats, zero-padded).

    At level ``m`` (of 10), as the released CIFAR code maps levels to arguments:
    Brightness/Color/Contrast/Sharpness factor ``1.8 m / 10 + 0.1`` (1.9 at 10, never below
    1: no sign); Solarize threshold ``int(256 m / 10)`` (256 at 10: a no-op); Posterize keeps
    ``int(4 m / 10)`` bits; Rotate ``30 m / 10`` degrees counter-clockwise about ``(W/2, H/2)``
    (pixel-centre coordinates); ShearX/Y factor ``0.3 m / 10`` about the top-left pixel;
    TranslateX/Y ``10 m / 10`` pixels. The signed ops take ``sign``. Geometric ops give the
    inverse map of :func:`comatch.data.ops.affine_bilinear`; the rotation's ``(c_x,
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


def comatch_op_param_table(magnitude: int, height: int, width: int) -> torch.Tensor:
    """Parameters of every (op, sign) draw of the released-CoMatch RandAugment at a fixed level.

    Laid out like :func:`op_param_table` so that :func:`apply_randaugment` indexes both alike;
    every magnitude row holds the fixed level's parameters.

    Args:
        magnitude: The fixed level (``randaugment_magnitude``; 10 in the released code).
        height: Image height.
        width: Image width.

    Returns:
        float64 ``[len(COMATCH_OPS), magnitude + 1, 2, 6]``; index ``[op, magnitude, (sign + 1) // 2]``.
    """
    table = torch.zeros(len(COMATCH_OPS), magnitude + 1, 2, _NUM_PARAMS, dtype=torch.float64)
    for o, op in enumerate(COMATCH_OPS):
        for s, sign in enumerate((-1, 1)):
            values = comatch_geometry(op, comatch_op_parameters(op, magnitude, sign), height, width)
            table[o, :, s] = torch.tensor(values, dtype=torch.float64)
    return table


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
        "AutoContrast": lambda: ops.comatch_autocontrast(x),
        "Equalize": lambda: ops.equalize(x),
        "Brightness": lambda: ops.adjust_brightness(x, value),
        "Color": lambda: ops.comatch_color(x, value),
        "Contrast": lambda: ops.comatch_contrast(x, value),
        "Sharpness": lambda: ops.adjust_sharpness(x, value),
        "Posterize": lambda: ops.posterize(x, value),
        "Solarize": lambda: ops.solarize(x, value),
    }
    if op in GEOMETRIC_OPS:
        return ops.affine_bilinear(x, params, float(fill))
    if op not in kernels:
        raise ValueError(f"unknown RandAugment op {op!r}")
    return kernels[op]()


# --------------------------------------------------------------------------- sampling and applying
class RandAugmentParams(NamedTuple):
    """RandAugment draws, each ``[N, num_ops]``: op index, apply flag, magnitude, sign (+-1)."""

    op_index: torch.Tensor
    apply: torch.Tensor
    magnitude: torch.Tensor
    sign: torch.Tensor


def _draw_ops(shape: tuple[int, int], colour: bool, generator: torch.Generator | None,
              rotate: bool = True) -> torch.Tensor:
    """Op indices drawn uniformly from the op list, less the :data:`COLOUR_OPS` unless ``colour``
    and less Rotate unless ``rotate`` (the whole list draws as it always has)."""
    if colour and rotate:
        return torch.randint(len(FIXMATCH_OPS), shape, generator=generator)
    left_out = (() if colour else COLOUR_OPS) + (() if rotate else ("Rotate",))
    kept = torch.tensor([i for i, op in enumerate(FIXMATCH_OPS) if op not in left_out])
    return kept[torch.randint(len(kept), shape, generator=generator)]


def sample_randaugment_params(n: int, num_ops: int, max_magnitude: int, prob: float,
                              generator: torch.Generator | None, colour: bool = True,
                              rotate: bool = True) -> RandAugmentParams:
    """Draw FixMatch RandAugment ops, the ``fixmatch`` variant.

    Args:
        n: Batch size.
        num_ops: Ops per image.
        max_magnitude: Largest magnitude.
        prob: Probability that a drawn op is applied.
        generator: CPU generator.
        colour: Whether the :data:`COLOUR_OPS` are drawn too.
        rotate: Whether Rotate is drawn too.

    Returns:
        The :class:`RandAugmentParams`, each ``[n, num_ops]``.
    """
    shape = (n, num_ops)
    op_index = _draw_ops(shape, colour, generator, rotate)
    apply = torch.rand(shape, generator=generator) < prob
    magnitude = torch.randint(1, max_magnitude + 1, shape, generator=generator)
    sign = torch.randint(2, shape, generator=generator) * 2 - 1
    return RandAugmentParams(op_index, apply, magnitude, sign)


def sample_comatch_randaugment_params(n: int, num_ops: int, magnitude: int, prob: float,
                                      generator: torch.Generator | None, colour: bool = True,
                                      rotate: bool = True) -> RandAugmentParams:
    """Draw released-CoMatch RandAugment ops, the ``comatch`` variant.

    Args:
        n: Batch size.
        num_ops: Ops per image.
        magnitude: The fixed level (every draw gets it).
        prob: Probability that a drawn op is applied.
        generator: CPU generator.
        colour: Whether the :data:`COLOUR_OPS` are drawn too.
        rotate: Whether Rotate is drawn too.

    Returns:
        The :class:`RandAugmentParams`, each ``[n, num_ops]``.
    """
    shape = (n, num_ops)
    op_index = _draw_ops(shape, colour, generator, rotate)  # the same op list as FixMatch's
    apply = torch.rand(shape, generator=generator) < prob
    sign = torch.randint(2, shape, generator=generator) * 2 - 1
    return RandAugmentParams(op_index, apply, torch.full(shape, magnitude, dtype=torch.long), sign)


_PIXEL_KERNELS: dict[str, Kernel] = {
    "AutoContrast": lambda x, p: ops.autocontrast(x),
    "Brightness": lambda x, p: ops.adjust_brightness(x, p[:, 0]),
    "Color": lambda x, p: ops.adjust_saturation(x, p[:, 0]),
    "Contrast": lambda x, p: ops.adjust_contrast(x, p[:, 0]),
    "Equalize": lambda x, p: ops.equalize(x),
    "Posterize": lambda x, p: ops.posterize(x, p[:, 0]),
    "Sharpness": lambda x, p: ops.adjust_sharpness(x, p[:, 0]),
    "Solarize": lambda x, p: ops.solarize(x, p[:, 0]),
}


def _comatch_slot(chosen: torch.Tensor, applied: torch.Tensor, slot_values: torch.Tensor,
                  fill: int) -> tuple[list[torch.Tensor], list[Kernel]]:
    """Masks and kernels of one RandAugment slot of the released-CoMatch variant."""
    pixel_ops = [op for op in COMATCH_OPS if op not in GEOMETRIC_OPS and op != "Identity"]
    masks = [applied & (chosen == COMATCH_OPS.index(op)) for op in pixel_ops]
    kernels = [bind_values(lambda img, p, op=op: comatch_kernel(op, img, p, fill), slot_values) for op in pixel_ops]
    geometric = torch.tensor([COMATCH_OPS.index(op) for op in GEOMETRIC_OPS])
    masks.append(applied & torch.isin(chosen, geometric))
    kernels.append(bind_values(lambda img, p: comatch_kernel("Rotate", img, p, fill), slot_values))  # any affine op
    return masks, kernels


def apply_randaugment(x: torch.Tensor, params: RandAugmentParams, table: torch.Tensor,
                      fill: int, variant: str = "fixmatch") -> torch.Tensor:
    """Apply RandAugment slot by slot; each op runs once per slot on its samples.

    Args:
        x: Float images ``[N, C, H, W]`` (modified in place and returned).
        params: CPU :class:`RandAugmentParams`.
        table: :func:`op_param_table` (or, for ``variant="comatch"``,
            :func:`comatch_op_param_table`) for the image size.
        fill: Fill value of geometric ops.
        variant: ``"fixmatch"`` or ``"comatch"`` (``views.randaugment``).

    Returns:
        The augmented float images.
    """
    sign_index = (params.sign > 0).long()
    values = table[params.op_index, params.magnitude, sign_index].to(x.device)  # [N, K, 6]
    if variant == "comatch":
        for slot in range(params.op_index.shape[1]):
            masks, kernels = _comatch_slot(params.op_index[:, slot], params.apply[:, slot], values[:, slot], fill)
            apply_groups(x, masks, kernels)
        return x
    geometric = torch.tensor([FIXMATCH_OPS.index(op) for op in GEOMETRIC_OPS])
    for slot in range(params.op_index.shape[1]):
        chosen, applied, slot_values = params.op_index[:, slot], params.apply[:, slot], values[:, slot]
        masks = [applied & (chosen == FIXMATCH_OPS.index(op)) for op in _PIXEL_KERNELS]
        kernels = [bind_values(kernel, slot_values) for kernel in _PIXEL_KERNELS.values()]
        masks.append(applied & torch.isin(chosen, geometric))
        kernels.append(bind_values(lambda img, p: ops.affine_nearest(img, p, fill), slot_values))
        apply_groups(x, masks, kernels)
    return x


def apply_op_batch(images: torch.Tensor, op: str, magnitude: torch.Tensor, sign: torch.Tensor,
                   fill: int) -> torch.Tensor:
    """Apply one RandAugment op to every image with per-sample magnitude and sign.

    Args:
        images: uint8 ``[N, C, H, W]``.
        op: Name from :data:`FIXMATCH_OPS`.
        magnitude: ``[N]`` long magnitudes.
        sign: ``[N]`` long signs (+-1).
        fill: Fill value of geometric ops.

    Returns:
        uint8 ``[N, C, H, W]``, image ``i`` as the op on that image alone.
    """
    n, _, height, width = images.shape
    table = op_param_table(int(magnitude.max()) if n else 1, height, width)
    params = RandAugmentParams(op_index=torch.full((n, 1), FIXMATCH_OPS.index(op)),
                               apply=torch.ones(n, 1, dtype=torch.bool),
                               magnitude=magnitude.cpu().reshape(n, 1), sign=sign.cpu().reshape(n, 1))
    return apply_randaugment(images.float(), params, table, fill).to(torch.uint8)
