"""Vectorised image-op kernels behind :mod:`comatch.data.batch_views`.

Every kernel works on a whole batch with per-sample parameters and no
per-image Python loop. Pixel kernels take float32 images ``[M, C, H, W]`` whose
values are integers in ``[0, 255]`` and return the same kind of tensor: each op
quantises its result exactly as torchvision's uint8 kernel does (truncation
after clamping for blends, rounding where torchvision rounds), so a chain of
kernels reproduces a chain of ``torchvision.transforms.v2.functional`` calls on
uint8 images. Blends emulate the fused multiply-add of ``Tensor.add_(other,
alpha=...)`` by accumulating in float64.

Per-sample parameters are 1-D tensors ``[M]`` on the images' device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2 import functional as F

MAX_VALUE = 255.0
"""Largest uint8 value; float images live in ``[0, MAX_VALUE]``."""

LUMA_WEIGHTS = (0.2989, 0.587, 0.114)
"""torchvision's ITU-R 601-2 luma weights (R, G, B)."""

_HSV_SELECT = ((0, 2, 1, 1, 3, 0), (3, 0, 0, 2, 1, 1), (1, 1, 3, 0, 0, 2))
"""For each output channel (R, G, B) and hue sector 0..5, which of (v, p, q, t) it takes."""


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """Reshape ``[M]`` parameters to broadcast against ``[M, C, H, W]`` images."""
    return values.reshape(-1, 1, 1, 1)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clamp to ``[0, 255]`` and truncate, like torchvision's float -> uint8 cast.

    Args:
        x: Float tensor of any shape.

    Returns:
        The integer-valued float tensor.
    """
    return x.clamp(0.0, MAX_VALUE).floor_()


def select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``where(mask, a, b)`` for finite floats, as arithmetic (``torch.where`` is slow on CPU).

    Args:
        mask: Bool or 0/1 float tensor broadcastable to ``a`` and ``b``.
        a: Values where the mask is set.
        b: Values elsewhere.

    Returns:
        The selection; exact since ``a * 1 + b * 0 == a``.
    """
    weight = mask.to(a.dtype)
    return a * weight + b * (1.0 - weight)


def blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision ``_blend``: ``x * f + other * (1 - f)``, clamped and truncated.

    ``Tensor.add_(other, alpha)`` is a fused multiply-add on CPU (and CUDA);
    accumulating in float64 reproduces its single rounding (a product of two
    float32 values is exact in float64).

    Args:
        x: Images ``[M, C, H, W]``.
        other: Tensor broadcastable to ``x`` (grayscale image or mean).
        factor: Per-sample blend factors ``[M]``.

    Returns:
        The blended images ``[M, C, H, W]``.
    """
    f32 = _per_sample(factor.to(torch.float32))
    alpha = _per_sample((1.0 - factor.to(torch.float64)).to(torch.float32))
    scaled = (x * f32).double()  # [M, C, H, W]
    return quantize(scaled.add_(alpha.double() * other.double()).float())


def luma(x: torch.Tensor) -> torch.Tensor:
    """Unquantised luma of RGB images, same arithmetic as torchvision.

    Args:
        x: RGB images ``[M, 3, H, W]``.

    Returns:
        ``[M, 1, H, W]`` float luma.
    """
    r, g, b = x.unbind(dim=1)
    wr, wg, wb = LUMA_WEIGHTS
    return r.mul(wr).add_(g, alpha=wg).add_(b, alpha=wb).unsqueeze(1)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """``rgb_to_grayscale`` keeping the channel count (1 channel: unchanged).

    Args:
        x: Images ``[M, C, H, W]``.

    Returns:
        Images ``[M, C, H, W]`` whose channels all hold the truncated luma.
    """
    if x.shape[1] == 1:
        return x
    return luma(x).floor_().expand_as(x).contiguous()


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply by per-sample factors.

    Args:
        x: Images ``[M, C, H, W]``.
        factor: ``[M]`` brightness factors.

    Returns:
        Adjusted images ``[M, C, H, W]``.
    """
    return quantize(x * _per_sample(factor.to(torch.float32)))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the grayscale image (identity for 1 channel, like PIL).

    Args:
        x: Images ``[M, C, H, W]``.
        factor: ``[M]`` saturation factors.

    Returns:
        Adjusted images ``[M, C, H, W]``.
    """
    if x.shape[1] == 1:
        return x
    return blend(x, luma(x).floor_(), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the per-image mean of the grayscale image.

    Args:
        x: Images ``[M, C, H, W]``.
        factor: ``[M]`` contrast factors.

    Returns:
        Adjusted images ``[M, C, H, W]``.
    """
    gray = luma(x).floor_() if x.shape[1] == 3 else x
    mean = gray.mean(dim=(-3, -2, -1), keepdim=True)  # [M, 1, 1, 1]; sums of integers are exact
    return blend(x, mean, factor)


def adjust_sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend the interior with a rounded 3x3 smoothing (borders kept).

    Args:
        x: Images ``[M, C, H, W]``.
        factor: ``[M]`` sharpness factors.

    Returns:
        Adjusted images ``[M, C, H, W]``.
    """
    channels, height, width = x.shape[-3:]
    if height <= 2 or width <= 2 or x.numel() == 0:
        return x
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=x.dtype, device=x.device)
    blurred = nnf.conv2d(x, kernel.expand(channels, 1, 3, 3), groups=channels).round_()
    inner = x[..., 1:-1, 1:-1]  # [M, C, H-2, W-2]
    alpha = _per_sample((1.0 - factor.to(torch.float64)).to(torch.float32)).double()
    mixed = inner.double().add_(alpha * (blurred - inner).double()).float()
    out = x.clone()
    out[..., 1:-1, 1:-1] = quantize(mixed)
    return out


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the ``bits`` most significant bits of every value.

    Args:
        x: Images ``[M, C, H, W]``.
        bits: ``[M]`` bit counts in ``[0, 8]``.

    Returns:
        Posterized images ``[M, C, H, W]``.
    """
    step = _per_sample(torch.pow(2.0, 8 - bits.to(torch.float32)))  # power of two: exact
    return torch.floor(x / step) * step


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert values at or above the per-sample threshold.

    Args:
        x: Images ``[M, C, H, W]``.
        threshold: ``[M]`` thresholds.

    Returns:
        Solarized images ``[M, C, H, W]``.
    """
    return select(x >= _per_sample(threshold.to(x.dtype)), MAX_VALUE - x, x)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch every channel to ``[0, 255]`` (constant channels kept).

    Args:
        x: Images ``[M, C, H, W]``.

    Returns:
        Stretched images ``[M, C, H, W]``.
    """
    low = x.amin(dim=(-2, -1), keepdim=True)  # [M, C, 1, 1]
    high = x.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    inv_scale = (high - low).mul_(1.0 / MAX_VALUE)
    low = torch.where(flat, torch.zeros_like(low), low)
    inv_scale = torch.where(flat, torch.ones_like(inv_scale), inv_scale)
    return quantize((x - low).div_(inv_scale))


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Per-channel histogram equalisation (torchvision's batched uint8 kernel).

    Args:
        x: Images ``[M, C, H, W]``.

    Returns:
        Equalised images ``[M, C, H, W]``.
    """
    return F.equalize(x.to(torch.uint8)).to(x.dtype)


def rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB in ``[0, 1]`` to HSV with hue in ``[0, 1)`` (torchvision/PIL formula).

    Args:
        x: ``[M, 3, H, W]`` RGB.

    Returns:
        ``(hue, saturation, value)``, each ``[M, H, W]``.
    """
    r, g, b = x.unbind(dim=1)
    high = torch.maximum(torch.maximum(r, g), b)  # [M, H, W]
    low = torch.minimum(torch.minimum(r, g), b)
    span = high - low
    grey = (span == 0).to(x.dtype)
    ones = torch.ones_like(high)
    saturation = span / select(grey, ones, high)
    divisor = select(grey, ones, span)
    rc, gc, bc = (high - r) / divisor, (high - g) / divisor, (high - b) / divisor
    hue_g = select(high == g, (rc + 2.0) - bc, (gc + 4.0) - rc)
    hue = select(high == r, bc - gc, hue_g)
    hue = hue.mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
    return hue, saturation, high


def hsv_to_rgb(hue: torch.Tensor, sat: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv` (torchvision's formula).

    Args:
        hue: ``[M, H, W]`` hue in ``[0, 1)``.
        sat: ``[M, H, W]`` saturation.
        val: ``[M, H, W]`` value.

    Returns:
        ``[M, 3, H, W]`` RGB in ``[0, 1]``.
    """
    hue6 = hue * 6
    sector = torch.floor(hue6)
    frac = hue6 - sector
    sector = sector.remainder_(6)  # [M, H, W] in 0..5
    p = ((1.0 - sat) * val).clamp_(0.0, 1.0)
    q = ((1.0 - sat * frac) * val).clamp_(0.0, 1.0)
    t = ((sat * frac + (1.0 - sat)) * val).clamp_(0.0, 1.0)
    choices = (val, p, q, t)
    in_sector = [(sector == k).to(hue.dtype) for k in range(6)]  # 6 x [M, H, W] 0/1
    channels = []
    for row in _HSV_SELECT:  # select per sector, exact like torchvision's gather
        out = choices[row[5]]
        for choice in set(row) - {row[5]}:
            mask = sum(in_sector[k] for k in range(6) if row[k] == choice)
            out = select(mask, choices[choice], out)
        channels.append(out)
    return torch.stack(channels, dim=1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by per-sample shifts in ``[-0.5, 0.5]`` (identity for 1 channel).

    Args:
        x: Images ``[M, C, H, W]``.
        shift: ``[M]`` hue shifts (fractions of a full turn).

    Returns:
        Adjusted images ``[M, C, H, W]``.
    """
    if x.shape[1] == 1 or x.numel() == 0:
        return x
    hue, sat, val = rgb_to_hsv(x * (1.0 / MAX_VALUE))
    hue = (hue + shift.to(x.dtype).reshape(-1, 1, 1)).remainder_(1.0)
    return torch.floor(hsv_to_rgb(hue, sat, val) * (MAX_VALUE + 1.0 - 1e-3))  # torchvision's float -> uint8


def inverse_affine_matrix(angle: float, translate: tuple[float, float],
                          shear: tuple[float, float]) -> tuple[float, ...]:
    """Inverse 2x3 affine matrix about the image centre, torchvision's convention.

    Output pixel ``p`` (centred coordinates) samples input ``M @ [p, 1]``; the
    forward map is ``T * C * R(angle) * ShY * ShX * C^-1`` with unit scale and
    the centre at the origin.

    Args:
        angle: Clockwise rotation, degrees (``F.affine`` convention).
        translate: ``(tx, ty)`` in pixels.
        shear: ``(sx, sy)`` in degrees.

    Returns:
        The 6 row-major entries of the inverse matrix.
    """
    rot = math.radians(angle)
    sx, sy = math.radians(shear[0]), math.radians(shear[1])
    tx, ty = translate
    cos_sy, tan_sx = math.cos(sy), math.tan(sx)
    a = math.cos(rot - sy) / cos_sy
    b = -(a * tan_sx + math.sin(rot))
    c = math.sin(rot - sy) / cos_sy
    d = math.cos(rot) - c * tan_sx
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += 0.0 - m[0] * (0.0 + tx) - m[1] * (0.0 + ty)
    m[5] += 0.0 - m[3] * (0.0 + tx) - m[4] * (0.0 + ty)
    return tuple(m)


def affine_nearest(x: torch.Tensor, matrices: torch.Tensor, fill: float) -> torch.Tensor:
    """Nearest-neighbour affine warp with per-sample inverse matrices.

    Builds the sampling grid exactly like torchvision's ``_affine_grid`` (pixel
    centres in centred coordinates, normalised after applying the matrix) and
    runs one ``grid_sample``; pixels mapped outside the image get ``fill``.

    Args:
        x: Images ``[M, C, H, W]``.
        matrices: ``[M, 6]`` inverse matrices from :func:`inverse_affine_matrix`.
        fill: Value of uncovered pixels.

    Returns:
        Warped images ``[M, C, H, W]``.
    """
    m, channels, height, width = x.shape
    theta = matrices.to(x.dtype).reshape(m, 2, 3)
    half = torch.tensor([0.5 * width, 0.5 * height], dtype=x.dtype, device=x.device)
    rescaled = theta.transpose(1, 2) / half  # [M, 3, 2]
    base = torch.empty(1, height, width, 3, dtype=x.dtype, device=x.device)
    base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, width, device=x.device))
    base[..., 1].copy_(torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, height,
                                      device=x.device).unsqueeze(-1))
    base[..., 2].fill_(1.0)
    grid = base.reshape(1, height * width, 3).expand(m, -1, -1).bmm(rescaled)  # [M, H*W, 2]
    with_mask = torch.cat((x, torch.ones_like(x[:, :1])), dim=1)  # [M, C+1, H, W]
    warped = nnf.grid_sample(with_mask, grid.reshape(m, height, width, 2), mode="nearest",
                             padding_mode="zeros", align_corners=False)
    image, mask = warped[:, :channels], warped[:, channels:]
    return select(mask < 0.5, torch.full_like(image, float(fill)), image)


def reflect_index(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map integer coordinates into ``[0, size)`` by reflection without edge repeat.

    Args:
        index: Long tensor of coordinates (any range).
        size: Axis length.

    Returns:
        Long tensor of valid coordinates (``-1 -> 1``, ``size -> size - 2``).
    """
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    folded = index.remainder(period)
    return torch.where(folded >= size, period - folded, folded)


def translate_flip(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor,
                   flip: torch.Tensor) -> torch.Tensor:
    """Reflect-padded integer translation then optional horizontal flip, one gather.

    Output ``(y, x)`` reads input ``(reflect(y + dy), reflect(x' + dx))`` with
    ``x' = W - 1 - x`` for flipped samples, i.e. reflect padding, a crop at
    offset ``(pad + dy, pad + dx)`` and a flip.

    Args:
        images: Images ``[N, C, H, W]`` of any dtype.
        dx: ``[N]`` long horizontal offsets.
        dy: ``[N]`` long vertical offsets.
        flip: ``[N]`` bool flip flags.

    Returns:
        Images ``[N, C, H, W]`` of the input dtype.
    """
    n, channels, height, width = images.shape
    ys = torch.arange(height, device=images.device)
    xs = torch.arange(width, device=images.device)
    rows = reflect_index(ys + dy[:, None], height)  # [N, H]
    cols = torch.where(flip[:, None], width - 1 - xs, xs)  # [N, W]
    cols = reflect_index(cols + dx[:, None], width)
    flat = (rows[:, :, None] * width + cols[:, None, :]).reshape(n, 1, height * width)
    out = images.reshape(n, channels, height * width).gather(2, flat.expand(n, channels, -1))
    return out.reshape(n, channels, height, width)


def _bilinear_taps(start: torch.Tensor, length: torch.Tensor, out_size: int,
                   reverse: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source taps of a bilinear resize of ``[start, start + length)`` to ``out_size``.

    Same geometry as ``interpolate(..., 'bilinear', align_corners=False)`` on the
    cropped tensor: sources are clamped inside the crop.

    Args:
        start: ``[N]`` long crop starts.
        length: ``[N]`` long crop lengths.
        out_size: Output length.
        reverse: Optional ``[N]`` bool; reversed outputs (a flip after the resize).

    Returns:
        ``(index0, index1, weight1)``, each ``[N, out_size]``; the output is
        ``(1 - weight1) * in[index0] + weight1 * in[index1]``.
    """
    pos = torch.arange(out_size, device=start.device, dtype=torch.float64)
    if reverse is not None:
        pos = torch.where(reverse[:, None], out_size - 1 - pos, pos)  # [N, S]
    scale = length.to(torch.float64)[:, None] / out_size
    src = ((pos + 0.5) * scale - 0.5).clamp(min=0.0)  # [N, S]
    low = src.floor().long()
    last = length[:, None] - 1
    index0 = torch.minimum(low, last)
    index1 = torch.minimum(index0 + 1, last)
    weight1 = (src - index0).clamp(max=1.0)
    return start[:, None] + index0, start[:, None] + index1, weight1.float()


def _resize_rows(images: torch.Tensor, index0: torch.Tensor, index1: torch.Tensor,
                 weight1: torch.Tensor) -> torch.Tensor:
    """Vertical bilinear pass by selecting whole rows (``[N, C, H, W] -> [N, C, S, W]``)."""
    n, channels, height, width = images.shape
    size = index0.shape[1]
    base = (torch.arange(n * channels, device=images.device) * height).reshape(n, channels, 1)
    rows = images.reshape(n * channels * height, width)

    def pick(index: torch.Tensor) -> torch.Tensor:
        flat = (base + index[:, None, :]).reshape(-1)  # [N * C * S]
        return rows.index_select(0, flat).reshape(n, channels, size, width)

    weight = weight1[:, None, :, None]
    return torch.lerp(pick(index0), pick(index1), weight)


def _resize_cols(images: torch.Tensor, index0: torch.Tensor, index1: torch.Tensor, weight1: torch.Tensor,
                 use_matmul: bool) -> torch.Tensor:
    """Horizontal bilinear pass (``[N, C, H, W] -> [N, C, H, S]``), by matmul or gathers."""
    n, channels, height, width = images.shape
    size = index0.shape[1]
    if use_matmul:
        matrix = torch.zeros(n, width, size, dtype=images.dtype, device=images.device)  # [N, W, S]
        matrix.scatter_add_(1, index0[:, None, :], (1.0 - weight1)[:, None, :])
        matrix.scatter_add_(1, index1[:, None, :], weight1[:, None, :])
        mixed = torch.bmm(images.reshape(n, channels * height, width), matrix)  # [N, C*H, S]
        return mixed.reshape(n, channels, height, size)

    def pick(index: torch.Tensor) -> torch.Tensor:
        return images.gather(3, index[:, None, None, :].expand(n, channels, height, size))

    weight = weight1[:, None, None, :]
    return torch.lerp(pick(index0), pick(index1), weight)


def resized_crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor,
                 width: torch.Tensor, size: int, flip: torch.Tensor,
                 use_matmul: bool | None = None) -> torch.Tensor:
    """Per-sample crop, bilinear resize to ``size`` and optional horizontal flip.

    Separable bilinear interpolation, horizontal pass first with the
    intermediate rounded, like torchvision's uint8 (antialiased) CPU resize; for
    the upscales of a resized crop its triangle filter is exactly bilinear. The
    horizontal pass is a batched matmul with sparse interpolation matrices
    (fast on CPU) or two gathers (used on accelerators, where float32 matmuls
    may run in reduced precision); both give the same result.

    Args:
        images: Float images ``[N, C, H, W]`` with integer values.
        top: ``[N]`` long crop tops.
        left: ``[N]`` long crop lefts.
        height: ``[N]`` long crop heights.
        width: ``[N]`` long crop widths.
        size: Output side.
        flip: ``[N]`` bool flip flags.
        use_matmul: Force the matmul (True) or gather (False) horizontal pass;
            default: matmul on CPU.

    Returns:
        Float images ``[N, C, size, size]`` with integer values.
    """
    if use_matmul is None:
        use_matmul = images.device.type == "cpu"
    x0, x1, wx = _bilinear_taps(left, width, size, reverse=flip)  # [N, S] each
    y0, y1, wy = _bilinear_taps(top, height, size)
    mixed = _resize_cols(images, x0, x1, wx, use_matmul).round_()  # [N, C, H, S]
    return _resize_rows(mixed, y0, y1, wy).round_().clamp_(0.0, MAX_VALUE)  # [N, C, S, S]


def box_fill(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, bottom: torch.Tensor,
             right: torch.Tensor, fill: float) -> torch.Tensor:
    """Fill the half-open box ``[top, bottom) x [left, right)`` of every sample.

    Args:
        x: Images ``[N, C, H, W]`` of any dtype.
        top: ``[N]`` long box tops.
        left: ``[N]`` long box lefts.
        bottom: ``[N]`` long box bottoms.
        right: ``[N]`` long box rights.
        fill: Value written into the box.

    Returns:
        Images ``[N, C, H, W]`` with the boxes filled.
    """
    height, width = x.shape[-2:]
    ys = torch.arange(height, device=x.device)
    xs = torch.arange(width, device=x.device)
    in_rows = (ys >= top[:, None]) & (ys < bottom[:, None])  # [N, H]
    in_cols = (xs >= left[:, None]) & (xs < right[:, None])  # [N, W]
    inside = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)  # [N, 1, H, W]
    return x.masked_fill(inside, fill)


# --------------------------------------------------------------------------- released CoMatch RandAugment
RGB_LUMA_PERMILLE = (299, 587, 114)
"""ITU-R 601-2 luma weights (R, G, B), in thousandths, of the CoMatch colour and contrast ops.

The released code applies them in B, G, R order to RGB images; here they weight the channels
they are meant for (see docs/presets.md). Integer weights keep the luma of a grey pixel exact."""


def _float_luma(x: torch.Tensor) -> torch.Tensor:
    """Unrounded float64 luma ``[M, 1, H, W]`` (a 1-channel image is its own luma).

    ``(299 R + 587 G + 114 B) / 1000``: the sum is an exact integer, so the only rounding is the
    division, and a grey pixel keeps its value exactly.
    """
    x = x.double()
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    wr, wg, wb = RGB_LUMA_PERMILLE
    return ((r * wr + g * wg + b * wb) / 1000.0).unsqueeze(1)


def _enhance(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``degenerate + f * (x - degenerate)`` in float64, clamped to ``[0, 255]`` and truncated.

    Equal to the released ``f * x + (1 - f) * degenerate``; this form leaves ``x`` unchanged
    wherever it equals ``degenerate``.
    """
    f = _per_sample(factor.to(torch.float64))
    return quantize(degenerate + f * (x.double() - degenerate)).to(x.dtype)


def comatch_color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """CoMatch colour: ``f * x + (1 - f) * luma(x)``, clamped to ``[0, 255]`` and truncated.

    Unlike torchvision (and PIL), the grey image is not rounded before the blend.

    Args:
        x: Images ``[M, C, H, W]``; 1-channel images are returned unchanged.
        factor: ``[M]`` factors.

    Returns:
        Adjusted images ``[M, C, H, W]``.
    """
    if x.shape[1] == 1:
        return x
    return _enhance(x, _float_luma(x), factor)


def comatch_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """CoMatch contrast: ``(x - m) * f + m`` with ``m`` the luma-weighted mean of the channel means.

    ``m`` is not rounded (PIL and torchvision round or truncate it); the result is clamped to
    ``[0, 255]`` and truncated.

    Args:
        x: Images ``[M, C, H, W]``.
        factor: ``[M]`` factors.

    Returns:
        Adjusted images ``[M, C, H, W]``.
    """
    mean = _float_luma(x).mean(dim=(-3, -2, -1), keepdim=True)  # [M, 1, 1, 1]
    return _enhance(x, mean, factor)


def comatch_autocontrast(x: torch.Tensor) -> torch.Tensor:
    """CoMatch autocontrast: every channel stretched as ``(v - low) * 255 / (high - low)``, truncated.

    Computed in float64 with the product first, so the result is the exact truncation (the
    channel maximum maps to 255, as in PIL and the released code; torchvision's float32 kernel,
    used by the FixMatch variant, can give 254). Constant channels are kept.

    Args:
        x: Images ``[M, C, H, W]``.

    Returns:
        Stretched images ``[M, C, H, W]``.
    """
    v = x.double()
    low = v.amin(dim=(-2, -1), keepdim=True)  # [M, C, 1, 1]
    span = v.amax(dim=(-2, -1), keepdim=True) - low
    flat = span == 0
    stretched = (v - low) * MAX_VALUE / torch.where(flat, torch.ones_like(span), span)
    return quantize(torch.where(flat, v, stretched)).to(x.dtype)


def affine_bilinear(x: torch.Tensor, matrices: torch.Tensor, fill: float) -> torch.Tensor:
    """Bilinear affine warp in pixel coordinates with a constant border, rounded.

    Output pixel ``(x, y)`` (integer pixel-centre coordinates, origin at the top-left pixel)
    samples the input at ``(a x + b y + c, d x + e y + f)`` with ``matrices[i] = (a, b, c, d,
    e, f)``; the four taps of a bilinear sample that fall outside the image read ``fill``
    (OpenCV's ``warpAffine`` with ``BORDER_CONSTANT``, which the released code uses). The
    result is rounded to the nearest integer (OpenCV additionally quantises sample positions to
    1/32 pixel, so a few pixels may differ from it by 1).

    Args:
        x: Images ``[M, C, H, W]`` with integer values.
        matrices: ``[M, 6]`` inverse maps (output pixel -> input position).
        fill: Value outside the image.

    Returns:
        Warped images ``[M, C, H, W]`` with integer values.
    """
    m, _, height, width = x.shape
    theta = matrices.to(torch.float64).reshape(m, 2, 3)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64, device=x.device),
                            torch.arange(width, dtype=torch.float64, device=x.device), indexing="ij")
    points = torch.stack((xs, ys, torch.ones_like(xs)), dim=-1).reshape(1, height * width, 3)
    source = points.expand(m, -1, -1).bmm(theta.transpose(1, 2))  # [M, H*W, 2]: input (x, y)
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float64, device=x.device)
    grid = ((source + 0.5) * scale - 1.0).to(x.dtype).reshape(m, height, width, 2)  # align_corners=False
    shifted = nnf.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (shifted + fill).round_().clamp_(0.0, MAX_VALUE)


# --------------------------------------------------------------------------- running kernels on groups of samples
Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``kernel(images [M, C, H, W], per-sample values or indices [M, ...]) -> images``."""


def apply_groups(x: torch.Tensor, masks: list[torch.Tensor], kernels: list[Kernel]) -> torch.Tensor:
    """Run ``kernels[g](x[idx_g], idx_g)`` on the samples of each CPU mask, in place.

    The index sets are built on the CPU and moved to the device in one copy, so
    no device synchronisation is needed.

    Args:
        x: Float images ``[N, C, H, W]`` (modified in place).
        masks: CPU bool masks ``[N]``, one per kernel (disjoint).
        kernels: Kernels taking the selected images and their indices (on device).

    Returns:
        ``x``.
    """
    indices = [mask.nonzero().squeeze(1) for mask in masks]
    sizes = [int(i.numel()) for i in indices]
    if sum(sizes) == 0:
        return x
    on_device = torch.cat(indices).to(x.device).split(sizes)
    for idx, size, kernel in zip(on_device, sizes, kernels):
        if size:
            x.index_copy_(0, idx, kernel(x.index_select(0, idx), idx))
    return x


def bind_values(kernel: Kernel, values: torch.Tensor) -> Kernel:
    """Adapt ``kernel(images, params)`` to ``(images, indices)`` using ``values[indices]``."""
    return lambda images, idx: kernel(images, values.index_select(0, idx))
