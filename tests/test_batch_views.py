"""Tests for comatch.data.batch_views / batch_ops (batched augmented views)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as nnf
from torchvision import transforms as tv1
from torchvision.transforms.v2 import functional as F

from comatch.data import batch_ops as ops
from comatch.data.batch_views import (
    BatchViews,
    CROP_RATIO,
    ContrastiveParams,
    CropParams,
    JitterParams,
    ViewSettings,
    WeakParams,
    apply_contrastive,
    apply_jitter,
    apply_strong,
    apply_weak,
    sample_contrastive_params,
    sample_cutout_params,
    sample_jitter_params,
    sample_resized_crop_params,
    sample_strong_params,
    sample_weak_params,
)
from comatch.data.randaugment import (
    FIXMATCH_OPS,
    RandAugmentParams,
    apply_op_batch,
    apply_randaugment,
    enhance_factor,
    op_param_table,
    posterize_bits,
    rotate_degrees,
    sample_comatch_randaugment_params,
    sample_randaugment_params,
    shear_degrees,
    solarize_threshold,
    translate_pixels,
)
from oracle_views import apply_op

GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}
OFF_BY_ONE = {"AutoContrast", "Sharpness"}
JITTER_FNS = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int, channels: int, height: int, width: int | None = None, seed: int = 0,
            smooth: bool = False) -> torch.Tensor:
    """Random uint8 images, with a few degenerate ones (constant, two-valued, low contrast)."""
    width = height if width is None else width
    imgs = torch.randint(0, 256, (n, channels, height, width), generator=_gen(seed), dtype=torch.uint8)
    if smooth:
        imgs = F.gaussian_blur(imgs, [5, 5], [1.5, 1.5])
    if n >= 3:
        imgs[0] = 100
        imgs[1, :, :, : width // 2] = 30
        imgs[1, :, :, width // 2:] = 200
        imgs[2] = imgs[2] // 8 + 90
    return imgs


def _bounded_count(count: float, n: int, p: float, sigmas: float = 5.0) -> bool:
    """Whether a Binomial(n, p) count lies within ``sigmas`` standard deviations."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# --------------------------------------------------------------------------- op kernels
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("op", FIXMATCH_OPS)
def test_op_kernel_matches_apply_op(op: str, channels: int) -> None:
    n = 20
    imgs = _images(n, channels, 10, 12, seed=channels)
    magnitude = torch.arange(n) % 10 + 1  # every magnitude, per-sample
    sign = (torch.arange(n) // 10) * 2 - 1  # both signs
    out = apply_op_batch(imgs, op, magnitude, sign, fill=127)
    assert out.dtype == torch.uint8 and out.shape == imgs.shape
    ref = torch.stack([apply_op(imgs[i], op, int(magnitude[i]), int(sign[i]), 127) for i in range(n)])
    diff = (out.int() - ref.int()).abs()
    if op in GEOMETRIC:
        assert (diff == 0).float().mean() >= 0.95, op
        assert diff.float().mean() < 5.0, op
    elif op in OFF_BY_ONE:
        assert diff.max() <= 1, op
    else:
        assert diff.max() == 0, op


def test_op_kernels_apply_only_to_selected_samples() -> None:
    imgs = _images(12, 3, 8)
    params = RandAugmentParams(op_index=torch.full((12, 1), FIXMATCH_OPS.index("Solarize")),
                               apply=(torch.arange(12) % 2 == 0).reshape(12, 1),
                               magnitude=torch.full((12, 1), 10), sign=torch.ones(12, 1, dtype=torch.long))
    out = apply_randaugment(imgs.float(), params, op_param_table(10, 8, 8), fill=0).to(torch.uint8)
    assert torch.equal(out[0::2], 255 - imgs[0::2])  # threshold 0: everything inverted
    assert torch.equal(out[1::2], imgs[1::2])


def test_magnitude_helpers_agree_with_apply_op() -> None:
    img = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16)
    for m in range(1, 11):
        assert torch.equal(F.posterize(img, posterize_bits(m)), apply_op(img, "Posterize", m, 1, 0))
        assert torch.equal(F.solarize(img, solarize_threshold(m)), apply_op(img, "Solarize", m, 1, 0))
        for s in (-1, 1):
            fac = enhance_factor(m, s)
            assert torch.equal(F.adjust_brightness(img, fac), apply_op(img, "Brightness", m, s, 0))
            assert torch.equal(F.adjust_contrast(img, fac), apply_op(img, "Contrast", m, s, 0))
            assert torch.equal(F.rotate(img, rotate_degrees(m, s), fill=[9.0]), apply_op(img, "Rotate", m, s, 9))
            deg = shear_degrees(m, s)
            assert torch.equal(F.affine(img, 0.0, [0.0, 0.0], 1.0, [deg, 0.0], fill=[9.0]),
                               apply_op(img, "ShearX", m, s, 9))
            assert torch.equal(F.affine(img, 0.0, [0.0, 0.0], 1.0, [0.0, deg], fill=[9.0]),
                               apply_op(img, "ShearY", m, s, 9))
            tx = translate_pixels(m, s, 16)
            assert torch.equal(F.affine(img, 0.0, [tx, 0.0], 1.0, [0.0, 0.0], fill=[9.0]),
                               apply_op(img, "TranslateX", m, s, 9))
    assert posterize_bits(10) == 4 and solarize_threshold(5) == 128 and enhance_factor(10, -1) == pytest.approx(0.1)


@pytest.mark.parametrize("channels", [1, 3])
def test_jitter_kernels_match_torchvision_sequence(channels: int) -> None:
    n = 24
    imgs = _images(n, channels, 9, seed=5)
    params = sample_jitter_params(n, (0.4, 0.4, 0.4, 0.1), 0.75, _gen(3))
    out = apply_jitter(imgs.float(), params, [True] * 4).to(torch.uint8)
    for i in range(n):
        ref = imgs[i]
        if params.apply[i]:
            for j in params.order[i].tolist():
                ref = JITTER_FNS[j](ref, float(params.factors[i, j]))
        assert torch.equal(out[i], ref), i


def test_grayscale_kernel_matches_torchvision() -> None:
    imgs = _images(6, 3, 7)
    assert torch.equal(ops.to_grayscale(imgs.float()).to(torch.uint8),
                       F.rgb_to_grayscale(imgs, num_output_channels=3))
    gray = _images(6, 1, 7)
    assert torch.equal(ops.to_grayscale(gray.float()), gray.float())


# --------------------------------------------------------------------------- weak view
def test_weak_view_is_reflect_pad_and_crop() -> None:
    pad, size, n = 3, 10, 30
    settings = ViewSettings(image_size=size, crop_padding=pad)
    imgs = _images(n, 3, size)
    params = sample_weak_params(n, settings, _gen(1))
    out = apply_weak(imgs, params)
    padded = nnf.pad(imgs.float(), (pad,) * 4, mode="reflect").to(torch.uint8)
    for i in range(n):
        top, left = pad + int(params.dy[i]), pad + int(params.dx[i])
        ref = padded[i, :, top:top + size, left:left + size]
        ref = ref.flip(-1) if params.flip[i] else ref
        assert torch.equal(out[i], ref), i
    assert params.flip.any() and not params.flip.all()


def test_weak_view_flip_rates() -> None:
    n = 2000
    imgs = _images(n, 1, 4, seed=2)
    imgs[:, 0, 0, 0], imgs[:, 0, 0, 3] = 0, 255  # never mirror-symmetric
    no_flip = BatchViews(ViewSettings(image_size=4, crop_padding=0, flip=False))("weak", imgs, _gen(0))
    assert torch.equal(no_flip, imgs)
    flipped = BatchViews(ViewSettings(image_size=4, crop_padding=0, flip=True))("weak", imgs, _gen(0))
    is_flip = (flipped == imgs.flip(-1)).flatten(1).all(1)
    assert torch.all(is_flip | (flipped == imgs).flatten(1).all(1))
    assert _bounded_count(int(is_flip.sum()), n, 0.5)


def test_weak_translation_distribution() -> None:
    n, pad = 6000, 4
    params = sample_weak_params(n, ViewSettings(image_size=8, crop_padding=pad), _gen(4))
    for shift in (params.dx, params.dy):
        assert shift.min() == -pad and shift.max() == pad
        counts = torch.bincount(shift + pad, minlength=2 * pad + 1)
        assert all(_bounded_count(int(c), n, 1 / (2 * pad + 1)) for c in counts)
    assert abs(float((params.dx * params.dy).float().mean())) < 0.5  # independent


# --------------------------------------------------------------------------- strong view
def test_randaugment_param_distribution() -> None:
    n = 7000
    op_index, apply, magnitude, sign = sample_randaugment_params(n, 2, 10, 0.5, _gen(5))
    assert op_index.shape == apply.shape == magnitude.shape == sign.shape == (n, 2)
    total = 2 * n
    for count in torch.bincount(op_index.flatten(), minlength=len(FIXMATCH_OPS)):
        assert _bounded_count(int(count), total, 1 / len(FIXMATCH_OPS))
    assert apply.dtype == torch.bool and _bounded_count(int(apply.sum()), total, 0.5)
    assert magnitude.min() == 1 and magnitude.max() == 10
    for count in torch.bincount(magnitude.flatten())[1:]:
        assert _bounded_count(int(count), total, 0.1)
    assert set(sign.unique().tolist()) == {-1, 1}
    assert _bounded_count(int((sign > 0).sum()), total, 0.5)


def test_cutout_param_distribution() -> None:
    n, size, fraction = 8000, 32, 0.5
    box = sample_cutout_params(n, size, size, fraction, _gen(6))
    side = round(fraction * size)
    assert torch.all(box.top >= 0) and torch.all(box.bottom <= size)
    assert torch.all(box.bottom - box.top <= side) and torch.all(box.bottom - box.top >= side // 2)
    interior = (box.top > 0) & (box.bottom < size)
    assert torch.all((box.bottom - box.top)[interior] == side)
    for lo, hi in ((box.top, box.bottom), (box.left, box.right)):
        centre = torch.where(lo > 0, lo + side // 2, hi - side + side // 2)
        counts = torch.bincount(centre, minlength=size)
        assert counts.numel() == size
        assert all(_bounded_count(int(c), n, 1 / size) for c in counts)


def test_strong_view_matches_per_image_composition() -> None:
    settings = ViewSettings(image_size=12, crop_padding=2, fill=50, cutout=0.5)
    n = 60
    imgs = _images(n, 3, 12, seed=7)
    params = sample_strong_params(n, settings, _gen(8))
    out = apply_strong(imgs, params, op_param_table(10, 12, 12), settings.fill)
    weak = apply_weak(imgs, params.weak)
    ra, box = params.randaugment, params.cutout
    assert box is not None
    refs = []
    for i in range(n):
        img = weak[i]
        for k in range(settings.randaugment_ops):
            if ra.apply[i, k]:
                img = apply_op(img, FIXMATCH_OPS[int(ra.op_index[i, k])], int(ra.magnitude[i, k]),
                               int(ra.sign[i, k]), settings.fill)
        img = img.clone()
        img[:, box.top[i]:box.bottom[i], box.left[i]:box.right[i]] = settings.fill
        refs.append(img)
    diff = (out.int() - torch.stack(refs).int()).abs()
    assert (diff == 0).float().mean() >= 0.97
    assert diff.float().mean() < 2.0


# --------------------------------------------------------------------------- contrastive view
def test_resized_crop_param_distribution_matches_torchvision() -> None:
    n, size, scale = 2000, 32, (0.2, 1.0)
    crop = sample_resized_crop_params(n, size, size, scale, CROP_RATIO, _gen(9))
    assert torch.all(crop.top >= 0) and torch.all(crop.left >= 0)
    assert torch.all(crop.top + crop.height <= size) and torch.all(crop.left + crop.width <= size)
    ours_area = (crop.height * crop.width).double() / size ** 2
    ours_ratio = (crop.width.double() / crop.height).log()
    assert ours_area.min() >= 0.8 * scale[0] and ours_area.max() <= 1.0
    torch.manual_seed(9)
    tv = torch.tensor([tv1.RandomResizedCrop.get_params(torch.empty(1, size, size), list(scale),
                                                        list(CROP_RATIO)) for _ in range(n)], dtype=torch.float64)
    tv_area = tv[:, 2] * tv[:, 3] / size ** 2
    tv_ratio = (tv[:, 3] / tv[:, 2]).log()
    for ours, theirs in ((ours_area, tv_area), (ours_ratio, tv_ratio), (crop.top.double(), tv[:, 0])):
        se = math.sqrt(ours.var().item() / n + theirs.var().item() / n)
        assert abs(ours.mean().item() - theirs.mean().item()) < 5 * se


def test_resized_crop_fallback_is_central_crop() -> None:
    crop = sample_resized_crop_params(5, 20, 40, (1.5, 2.0), CROP_RATIO, _gen(0))
    i, j, h, w = tv1.RandomResizedCrop.get_params(torch.empty(1, 20, 40), [1.5, 2.0], list(CROP_RATIO))
    assert crop.top.tolist() == [i] * 5 and crop.left.tolist() == [j] * 5
    assert crop.height.tolist() == [h] * 5 and crop.width.tolist() == [w] * 5


def test_jitter_param_distribution() -> None:
    n = 4000
    params = sample_jitter_params(n, (0.4, 0.4, 0.4, 0.1), 0.8, _gen(10))
    assert _bounded_count(int(params.apply.sum()), n, 0.8)
    assert torch.equal(params.order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    for slot in range(4):
        for count in torch.bincount(params.order[:, slot], minlength=4):
            assert _bounded_count(int(count), n, 0.25)
    factors, hue = params.factors[:, :3], params.factors[:, 3]
    assert factors.min() >= 0.6 and factors.max() <= 1.4 and hue.abs().max() <= 0.1
    assert torch.all((factors.mean(0) - 1.0).abs() < 0.02)  # sd of mean ~0.0037
    assert abs(hue.mean().item()) < 0.005
    off = sample_jitter_params(10, (0.0, 0.4, 0.4, 0.0), 1.0, _gen(0)).factors
    assert torch.all(off[:, 0] == 1.0) and torch.all(off[:, 3] == 0.0)


def test_resized_crop_kernel_matches_torchvision() -> None:
    n, size = 60, 16
    imgs = _images(n, 3, size, seed=11, smooth=True)
    crop = sample_resized_crop_params(n, size, size, (0.2, 1.0), CROP_RATIO, _gen(11))
    flip = torch.arange(n) % 2 == 1
    fast = ops.resized_crop(imgs.float(), *crop, size=size, flip=flip, use_matmul=True)
    slow = ops.resized_crop(imgs.float(), *crop, size=size, flip=flip, use_matmul=False)
    assert torch.equal(fast, slow)
    refs = []
    for i in range(n):
        ref = F.resized_crop(imgs[i], int(crop.top[i]), int(crop.left[i]), int(crop.height[i]),
                             int(crop.width[i]), [size, size], antialias=True)
        refs.append(ref.flip(-1) if flip[i] else ref)
    diff = (fast - torch.stack(refs).float()).abs()
    assert diff.max() <= 2 and (diff > 0).float().mean() < 0.1
    whole = [torch.zeros(n, dtype=torch.long)] * 2 + [torch.full((n,), size)] * 2
    assert torch.equal(ops.resized_crop(imgs.float(), *whole, size=size, flip=torch.zeros(n, dtype=torch.bool)),
                       imgs.float())


@pytest.mark.parametrize("channels", [1, 3])
def test_contrastive_view_matches_per_image_composition(channels: int) -> None:
    size, n = 16, 60
    settings = ViewSettings(image_size=size, jitter_prob=0.8, grayscale_prob=0.5)
    imgs = _images(n, channels, size, seed=12, smooth=True)
    params = sample_contrastive_params(n, settings, _gen(12))
    out = apply_contrastive(imgs, params, settings)
    crop, jit = params.crop, params.jitter
    refs = []
    for i in range(n):
        ref = F.resized_crop(imgs[i], int(crop.top[i]), int(crop.left[i]), int(crop.height[i]),
                             int(crop.width[i]), [size, size], antialias=True)
        ref = ref.flip(-1) if params.flip[i] else ref
        if jit.apply[i]:
            for j in jit.order[i].tolist():
                ref = JITTER_FNS[j](ref, float(jit.factors[i, j]))
        if params.grayscale[i]:
            ref = F.rgb_to_grayscale(ref, num_output_channels=channels)
        refs.append(ref)
    diff = (out.int() - torch.stack(refs).int()).abs()
    assert diff.float().mean() < 0.3 and (diff > 0).float().mean() < 0.15
    if channels == 3:
        gray = out[params.grayscale]
        assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 0], gray[:, 2])


# --------------------------------------------------------------------------- BatchViews API
@pytest.mark.parametrize("name", ["weak", "strong", "contrastive", "eval"])
@pytest.mark.parametrize("channels", [1, 3])
def test_batch_views_shapes_determinism_and_edge_sizes(name: str, channels: int) -> None:
    views = BatchViews(ViewSettings(image_size=8))
    imgs = _images(16, channels, 8, seed=13)
    out = views(name, imgs, _gen(1))
    assert out.dtype == torch.uint8 and out.shape == (16, channels, 8, 8)
    assert torch.equal(out, views(name, imgs, _gen(1)))
    if name != "eval":
        assert not torch.equal(out, views(name, imgs, _gen(2)))
    else:
        assert torch.equal(out, imgs)
    one = views(name, imgs[:1], _gen(3))
    assert one.shape == (1, channels, 8, 8) and one.dtype == torch.uint8
    empty = views(name, imgs[:0], _gen(3))
    assert empty.shape == (0, channels, 8, 8) and empty.dtype == torch.uint8
    resized = views(name, _images(4, channels, 11, 13), _gen(3))
    assert resized.shape == (4, channels, 8, 8)


def test_batch_views_uses_the_samplers_in_order() -> None:
    settings = ViewSettings(image_size=10)
    views = BatchViews(settings)
    imgs = _images(8, 3, 10)
    assert torch.equal(views("weak", imgs, _gen(4)), apply_weak(imgs, sample_weak_params(8, settings, _gen(4))))
    assert torch.equal(views("strong", imgs, _gen(4)),
                       apply_strong(imgs, sample_strong_params(8, settings, _gen(4)), views.table, settings.fill))
    assert torch.equal(views("contrastive", imgs, _gen(4)),
                       apply_contrastive(imgs, sample_contrastive_params(8, settings, _gen(4)), settings))


def test_batch_views_rejects_bad_input() -> None:
    views = BatchViews(ViewSettings(image_size=8))
    with pytest.raises(ValueError):
        views("nope", _images(2, 3, 8), _gen())
    with pytest.raises(ValueError):
        views("weak", _images(2, 3, 8).float(), _gen())


def test_param_containers_are_tuples() -> None:
    assert isinstance(sample_weak_params(2, ViewSettings(image_size=8), _gen()), WeakParams)
    crop = sample_resized_crop_params(2, 8, 8, (0.5, 1.0), CROP_RATIO, _gen())
    assert isinstance(crop, CropParams) and len(crop) == 4
    contrastive = sample_contrastive_params(2, ViewSettings(image_size=8), _gen())
    assert isinstance(contrastive, ContrastiveParams) and isinstance(contrastive.jitter, JitterParams)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    views = BatchViews(ViewSettings(image_size=16))
    imgs = _images(64, 3, 16, smooth=True)
    for name in ("weak", "strong", "contrastive"):
        cpu = views(name, imgs, _gen(5))
        gpu = views(name, imgs.cuda(), _gen(5))
        assert gpu.device.type == "cuda"
        diff = (gpu.cpu().int() - cpu.int()).abs()
        if name == "weak":
            assert diff.max() == 0
        else:
            assert (diff == 0).float().mean() > 0.97 and diff.float().mean() < 1.0, name


# ------------------------------------------------------------------ one implementation, one settings type
def test_the_view_settings_are_the_config_section_plus_the_image_size():
    from comatch.config import ViewConfig, build_config
    from comatch.data.preprocessing import view_settings

    assert issubclass(ViewSettings, ViewConfig)
    assert set(ViewSettings.model_fields) - set(ViewConfig.model_fields) == {"image_size", "jitter"}
    config = build_config(overrides=["views.cutout=0.25", "views.randaugment=comatch"])
    settings = view_settings(config, 12)
    assert settings.model_dump(exclude={"image_size", "jitter"}) == config.views.model_dump()
    assert (settings.image_size, settings.jitter) == (12, (0.4, 0.4, 0.4, 0.1))
    with pytest.raises(ValueError, match="cutout"):
        ViewSettings(image_size=8, cutout=1.5)  # the config's own checks


def test_the_package_augments_whole_batches_only():
    """The per-image views are the tests' oracle (tests/oracle_views.py), not part of the package."""
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "comatch"
    assert not (src / "data" / "views.py").exists()
    per_image = [p.name for p in src.rglob("*.py") if "from torchvision.transforms import v2" in p.read_text()]
    assert per_image == []


@pytest.mark.parametrize("randaugment", ["fixmatch", "comatch"])
def test_views_without_colour_operations_keep_every_pixels_channel_order(randaugment):
    """``views.colour=false`` (classes told apart by colour): no view changes a colour's hue. On
    orange images (R > G > B) brightness, contrast, posterize, sharpness, geometry and Cutout
    keep each view's mean colour in that order (grey fill included; sharpening leaves thin
    halos of the opposite hue at edges, not a new colour); Solarize, Equalize, AutoContrast and
    hue jitter turn some images another colour, and they are left out."""
    orange = torch.tensor([200, 100, 50], dtype=torch.uint8).view(1, 3, 1, 1).expand(512, 3, 16, 16).contiguous()

    def ordered(views: torch.Tensor) -> bool:
        r, g, b = views.double().mean(dim=(2, 3)).unbind(1)
        return bool(((r >= g) & (g >= b)).all())

    for colour in (False, True):
        views = BatchViews(ViewSettings(image_size=16, colour=colour, randaugment=randaugment))
        strong, contrastive = views("strong", orange, _gen(1)), views("contrastive", orange, _gen(2))
        assert ordered(strong) == ordered(contrastive) == (not colour), (colour, randaugment)


def test_without_colour_operations_randaugment_draws_the_others_uniformly():
    kept = [i for i, op in enumerate(FIXMATCH_OPS) if op not in ("AutoContrast", "Color", "Equalize", "Solarize")]
    drawn = sample_randaugment_params(20000, 2, 10, 0.5, _gen(0), colour=False).op_index
    counts = torch.bincount(drawn.flatten(), minlength=len(FIXMATCH_OPS))
    assert set(torch.nonzero(counts).flatten().tolist()) == set(kept)
    share = counts[kept].double() / drawn.numel()
    assert torch.allclose(share, torch.full_like(share, 1 / len(kept)), atol=0.01), share
    # with every op kept the draws are those of before (the same stream)
    assert torch.equal(sample_randaugment_params(64, 2, 10, 0.5, _gen(3)).op_index,
                       torch.randint(len(FIXMATCH_OPS), (64, 2), generator=_gen(3)))


@pytest.mark.parametrize("colour", [True, False])
def test_without_rotations_randaugment_never_turns_an_image(colour):
    """``views.rotate=false`` leaves Rotate out of both variants' draws (with or without the colour
    ops), the other ops drawn uniformly; with it on, the draws are the stream of before."""
    left_out = {"Rotate"} | (set() if colour else {"AutoContrast", "Color", "Equalize", "Solarize"})
    kept = [i for i, op in enumerate(FIXMATCH_OPS) if op not in left_out]
    for sampler in (sample_randaugment_params, sample_comatch_randaugment_params):
        drawn = sampler(20000, 2, 10, 0.5, _gen(0), colour=colour, rotate=False).op_index
        counts = torch.bincount(drawn.flatten(), minlength=len(FIXMATCH_OPS))
        assert set(torch.nonzero(counts).flatten().tolist()) == set(kept)
        share = counts[kept].double() / drawn.numel()
        assert torch.allclose(share, torch.full_like(share, 1 / len(kept)), atol=0.01), share
        assert torch.equal(sampler(64, 2, 10, 0.5, _gen(3), colour=colour, rotate=True).op_index,
                           sampler(64, 2, 10, 0.5, _gen(3), colour=colour).op_index)
    drawn = sample_strong_params(4096, ViewSettings(image_size=16, rotate=False), _gen(4)).randaugment.op_index
    assert FIXMATCH_OPS.index("Rotate") not in drawn and FIXMATCH_OPS.index("ShearX") in drawn
