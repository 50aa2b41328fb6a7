"""Tests for the per-image augmented views (tests/oracle_views.py), the oracle of the batched views."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

from comatch.data.batch_views import ViewSettings
from comatch.data.randaugment import FIXMATCH_OPS
from oracle_views import Cutout, FixMatchRandAugment, apply_op, build_views

VIEW_NAMES = ("weak", "strong", "contrastive", "eval")


def _image(channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A random uint8 image (almost surely not mirror-symmetric)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, height, width), generator=gen, dtype=torch.uint8)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("in_size", [(16, 16), (23, 11)])
def test_every_view_keeps_dtype_and_output_shape(channels: int, in_size: tuple[int, int]) -> None:
    views = build_views(ViewSettings(image_size=16, fill=0))
    img = _image(channels, *in_size)
    for seed in range(5):
        torch.manual_seed(seed)
        for name in VIEW_NAMES:
            out = views[name](img)
            assert out.dtype == torch.uint8, name
            assert out.shape == (channels, 16, 16), name


def test_view_keys() -> None:
    assert set(build_views(ViewSettings(image_size=8))) == set(VIEW_NAMES)


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        ViewSettings(image_size=0)
    with pytest.raises(ValueError):
        ViewSettings(image_size=8, cutout=1.5)
    with pytest.raises(ValueError):
        ViewSettings(image_size=8, crop_scale_min=0.0)


def test_eval_view_is_identity_or_resize() -> None:
    view = build_views(ViewSettings(image_size=12))["eval"]
    img = _image(3, 12, 12)
    assert torch.equal(view(img), img)
    const = torch.full((1, 20, 30), 77, dtype=torch.uint8)
    out = view(const)
    assert out.shape == (1, 12, 12)
    assert torch.all(out == 77)


def test_weak_view_without_flip_and_padding_is_identity() -> None:
    view = build_views(ViewSettings(image_size=10, crop_padding=0, flip=False))["weak"]
    img = _image(3, 10, 10)
    for seed in range(50):
        torch.manual_seed(seed)
        assert torch.equal(view(img), img)


def test_weak_view_flips_about_half_the_time() -> None:
    view = build_views(ViewSettings(image_size=10, crop_padding=0, flip=True))["weak"]
    img = _image(1, 10, 10)
    mirrored = img.flip(-1)
    torch.manual_seed(0)
    n_flip = 0
    for _ in range(400):
        out = view(img)
        is_flip = torch.equal(out, mirrored)
        assert is_flip or torch.equal(out, img)
        n_flip += int(is_flip)
    # Binomial(400, 0.5): mean 200, sd 10; +-5 sd.
    assert 150 <= n_flip <= 250


def test_weak_view_is_a_bounded_translation() -> None:
    pad, size = 3, 12
    view = build_views(ViewSettings(image_size=size, crop_padding=pad, flip=False))["weak"]
    img = _image(3, size, size)
    padded = nnf.pad(img.float().unsqueeze(0), (pad,) * 4, mode="reflect")[0].to(torch.uint8)
    crops = {
        (dy - pad, dx - pad): padded[:, dy:dy + size, dx:dx + size]
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
    }
    torch.manual_seed(1)
    seen = set()
    for _ in range(60):
        out = view(img)
        matches = [shift for shift, crop in crops.items() if torch.equal(out, crop)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 10  # the offset really is random


def test_randaugment_parameter_distribution() -> None:
    aug = FixMatchRandAugment(num_ops=2, max_magnitude=10, prob=0.5)
    torch.manual_seed(0)
    draws = [d for _ in range(7000) for d in aug.sample_params()]
    n = len(draws)
    assert n == 14000
    counts = {op: 0 for op in FIXMATCH_OPS}
    for d in draws:
        counts[d.op] += 1
    expected = n / len(FIXMATCH_OPS)  # 1000, sd ~ 31
    for op, count in counts.items():
        assert abs(count - expected) < 5 * expected ** 0.5, op
    apply_rate = sum(d.apply for d in draws) / n  # sd ~ 0.0042
    assert abs(apply_rate - 0.5) < 0.025
    mags = torch.tensor([d.magnitude for d in draws], dtype=torch.float64)
    assert mags.min() == 1 and mags.max() == 10
    assert abs(mags.mean().item() - 5.5) < 0.12  # sd of mean ~ 0.024
    per_value = torch.bincount(mags.long(), minlength=11)[1:]
    assert torch.all((per_value - n / 10).abs() < 5 * (n / 10) ** 0.5)
    signs = {d.sign for d in draws}
    assert signs == {-1, 1}


def test_randaugment_zero_prob_is_identity() -> None:
    aug = FixMatchRandAugment(prob=0.0)
    img = _image(3, 8, 8)
    torch.manual_seed(0)
    assert torch.equal(aug(img), img)


@pytest.mark.parametrize("channels", [1, 3])
def test_every_op_runs_on_1_and_3_channels(channels: int) -> None:
    img = _image(channels, 8, 8)
    for op in FIXMATCH_OPS:
        for magnitude in (1, 10):
            for sign in (-1, 1):
                out = apply_op(img, op, magnitude, sign, fill=0)
                assert out.dtype == torch.uint8 and out.shape == img.shape, op


def test_posterize_worked_case() -> None:
    img = torch.tensor([[[255, 55, 15, 128]]], dtype=torch.uint8)
    out = apply_op(img, "Posterize", magnitude=10, sign=1, fill=0)  # 4 bits
    assert out.tolist() == [[[240, 48, 0, 128]]]
    # magnitude 1 -> 8 bits: unchanged
    assert torch.equal(apply_op(img, "Posterize", 1, 1, fill=0), img)


def test_solarize_worked_case() -> None:
    img = torch.tensor([[[200, 100, 128, 127]]], dtype=torch.uint8)
    out = apply_op(img, "Solarize", magnitude=5, sign=1, fill=0)  # threshold 128
    assert out.tolist() == [[[55, 100, 127, 127]]]
    # magnitude 10 -> threshold 0: everything inverted
    assert torch.equal(apply_op(img, "Solarize", 10, 1, fill=0), 255 - img)


def test_equalize_worked_case() -> None:
    img = torch.full((1, 32, 32), 10, dtype=torch.uint8)
    img[..., 16:] = 20
    out = apply_op(img, "Equalize", magnitude=5, sign=1, fill=0)
    assert torch.all(out[..., :16] == 0) and torch.all(out[..., 16:] == 255)


def test_autocontrast_worked_case() -> None:
    img = torch.tensor([[[50, 60, 101, 70]]], dtype=torch.uint8)
    out = apply_op(img, "AutoContrast", magnitude=5, sign=1, fill=0).int()
    # (x - 50) * 255 / 51 = 5 * (x - 50), up to one level of float truncation
    assert (out - torch.tensor([[[0, 50, 255, 100]]])).abs().max() <= 1


def test_rotate_worked_case() -> None:
    img = torch.arange(1, 26, dtype=torch.uint8).reshape(1, 5, 5)
    out = apply_op(img, "Rotate", magnitude=10, sign=1, fill=0)  # 30 degrees
    assert out[0, 2, 2] == img[0, 2, 2]
    assert out[0, 0, 0] == out[0, 0, 4] == out[0, 4, 0] == out[0, 4, 4] == 0
    assert not torch.equal(out, img)
    assert not torch.equal(out, apply_op(img, "Rotate", 10, -1, fill=0))


def test_translate_and_brightness_worked_cases() -> None:
    img = torch.arange(10, dtype=torch.uint8).repeat(1, 2, 1) + 1
    out = apply_op(img, "TranslateX", magnitude=10, sign=1, fill=99)  # 0.3 * 10 = 3 px
    assert torch.equal(out[..., 3:], img[..., :-3])
    assert torch.all(out[..., :3] == 99)
    dark = apply_op(torch.full((1, 2, 2), 200, dtype=torch.uint8), "Brightness", 10, -1, 0)
    assert torch.all(dark == 20)  # factor 0.1
    gray = _image(1, 6, 6)
    assert torch.equal(apply_op(gray, "Color", 10, 1, fill=0), gray)


def test_cutout_square_side() -> None:
    cutout = Cutout(0.25, fill=0)
    img = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    torch.manual_seed(0)
    inside = 0
    for _ in range(40):
        out = cutout(img)
        mask = (out == 0).all(dim=0)
        assert torch.all(out[:, ~mask] == 200)
        rows = mask.any(dim=1).nonzero().flatten()
        cols = mask.any(dim=0).nonzero().flatten()
        height = rows.max() - rows.min() + 1
        width = cols.max() - cols.min() + 1
        assert mask.sum() == height * width  # a filled rectangle
        assert height <= 8 and width <= 8
        if 0 < rows.min() and rows.max() < 31 and 0 < cols.min() and cols.max() < 31:
            assert height == 8 and width == 8
            inside += 1
    assert inside > 10
    assert torch.equal(Cutout(0.0)(img), img)


def test_strong_view_is_reproducible_under_manual_seed() -> None:
    views = build_views(ViewSettings(image_size=16))
    img = _image(3, 16, 16)
    outs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        outs.append((views["strong"](img), views["contrastive"](img)))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert not torch.equal(outs[0][0], outs[2][0])


def test_contrastive_view_degenerates_to_resize() -> None:
    settings = ViewSettings(image_size=16, crop_scale_min=1.0, flip=False,
                            jitter_prob=0.0, grayscale_prob=0.0)
    view = build_views(settings)["contrastive"]
    img = _image(3, 16, 16)
    const = torch.full((1, 24, 20), 33, dtype=torch.uint8)
    for seed in range(10):
        torch.manual_seed(seed)
        assert torch.equal(view(img), img)
        out = view(const)
        assert out.shape == (1, 16, 16) and torch.all(out == 33)


def test_contrastive_view_keeps_single_channel() -> None:
    settings = ViewSettings(image_size=8, jitter_prob=1.0, grayscale_prob=1.0)
    view = build_views(settings)["contrastive"]
    torch.manual_seed(0)
    assert view(_image(1, 8, 8)).shape == (1, 8, 8)
    gray = view(_image(3, 8, 8))
    assert gray.shape == (3, 8, 8)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
