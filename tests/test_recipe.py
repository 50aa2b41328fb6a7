"""The released code's recipe, switch by switch, against hand-worked values.

Every expected number below is worked out by hand from the released CoMatch code's behaviour
(its CIFAR RandAugment at level 10, its EMA, its weight-decay groups, its ImageNet schedule and
projection head); the comments show the arithmetic.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from comatch.data import build_data
from comatch.data.batch_views import (
    BatchViews,
    ViewSettings,
    apply_strong,
    apply_weak,
    sample_strong_params,
    sample_weak_params,
)
from comatch.data.randaugment import COMATCH_OPS, comatch_op_param_table, sample_comatch_randaugment_params
from oracle_views import CoMatchRandAugment, ReleasedPadCrop, apply_comatch_op, build_views
from comatch.models.ema import ModelEMA
from comatch.models.heads import CoMatchNet
from comatch.models.optim import param_groups_for_weight_decay
from comatch.training.schedule import cosine_lr_factor, epoch_half_cosine_lr_factor, lr_factor

FILL = 128


def _gray(rows: list[list[int]]) -> torch.Tensor:
    """A 1-channel uint8 image ``[1, H, W]``."""
    return torch.tensor([rows], dtype=torch.uint8)


def _ramp(height: int = 4, width: int = 4) -> torch.Tensor:
    """``I(x, y) = 10 x + 50 y``: linear, so a bilinear sample inside the image is ``10 sx + 50 sy``."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return (10 * xs + 50 * ys).to(torch.uint8).unsqueeze(0)


def _op(img: torch.Tensor, op: str, sign: int = 1) -> list:
    return apply_comatch_op(img, op, sign, FILL).tolist()


# --------------------------------------------------------------------------- pixel ops at level 10
def test_brightness_multiplies_by_1_9_and_truncates():
    # 10 * 1.9 = 19; 100 * 1.9 = 190; 134 * 1.9 = 254.6 -> 254; 135 * 1.9 = 256.5 -> 255
    assert _op(_gray([[0, 10, 100, 134, 135, 200]]), "Brightness") == [[[0, 19, 190, 254, 255, 255]]]
    assert _op(_gray([[0, 10]]), "Brightness", -1) == [[[0, 19]]], "no sign: the factor is always 1.9"


def test_color_blends_with_the_unrounded_rgb_luma():
    # pixel (100, 50, 0): luma = 0.299 * 100 + 0.587 * 50 + 0.114 * 0 = 59.25
    # out = 59.25 + 1.9 * (v - 59.25): R 136.675 -> 136, G 41.675 -> 41, B -53.3 -> 0
    # (the released code's B, G, R weights would give luma 40.75 and R 153)
    # a grey pixel (80, 80, 80) is its own luma and stays
    img = torch.tensor([[[100, 80]], [[50, 80]], [[0, 80]]], dtype=torch.uint8)
    assert _op(img, "Color") == [[[136, 80]], [[41, 80]], [[0, 80]]]
    assert _op(_gray([[7, 200]]), "Color") == [[[7, 200]]], "one channel: nothing to desaturate"


def test_contrast_uses_the_unrounded_luma_weighted_mean():
    # 1 channel [[50, 60], [70, 80]]: mean 65; 65 + 1.9 * (v - 65) = 36.5, 55.5, 74.5, 93.5
    assert _op(_gray([[50, 60], [70, 80]]), "Contrast") == [[[36, 55], [74, 93]]]
    # RGB, channel means (100, 60, 0): m = 0.299 * 100 + 0.587 * 60 = 65.12
    # R 65.12 + 1.9 * 34.88 = 131.392 -> 131; G 65.12 - 1.9 * 5.12 = 55.392 -> 55; B -> 0
    img = torch.tensor([[[100, 100]], [[60, 60]], [[0, 0]]], dtype=torch.uint8)
    assert _op(img, "Contrast") == [[[131, 131]], [[55, 55]], [[0, 0]]]
    # clamped at both ends: mean 100, 0 -> -90 -> 0 and 200 -> 290 -> 255
    assert _op(_gray([[0, 100], [100, 200]]), "Contrast") == [[[0, 100], [100, 255]]]


def test_sharpness_blends_the_interior_with_a_rounded_smoothing_and_clamps():
    # centre 100, ring 0: smooth = round(5 * 100 / 13) = 38; 38 + 1.9 * (100 - 38) = 155.8 -> 155
    img = _gray([[0, 0, 0], [0, 100, 0], [0, 0, 0]])
    assert _op(img, "Sharpness") == [[[0, 0, 0], [0, 155, 0], [0, 0, 0]]]
    # centre 200: smooth round(1000 / 13) = 77; 77 + 1.9 * 123 = 310.7 -> 255 (the released code wraps)
    assert _op(_gray([[0, 0, 0], [0, 200, 0], [0, 0, 0]]), "Sharpness")[0][1][1] == 255
    # centre 0, ring 200: smooth round(1600 / 13) = 123; 123 - 1.9 * 123 = -110.7 -> 0
    assert _op(_gray([[200, 200, 200], [200, 0, 200], [200, 200, 200]]), "Sharpness")[0][1][1] == 0


def test_posterize_keeps_4_bits_and_solarize_changes_nothing():
    values = _gray([[0, 15, 16, 200, 255]])
    assert _op(values, "Posterize") == [[[0, 0, 16, 192, 240]]]  # v & 0xF0
    assert _op(values, "Solarize") == values.tolist()  # threshold int(256 * 10 / 10) = 256


def test_autocontrast_equalize_identity():
    # low 50, high 250: (v - 50) * 255 / 200 = 0, 63.75, 127.5, 255 -> 0, 63, 127, 255
    assert _op(_gray([[50, 100], [150, 250]]), "AutoContrast") == [[[0, 63], [127, 255]]]
    assert _op(_gray([[7, 7]]), "AutoContrast") == [[[7, 7]]], "a constant channel is kept"
    # 255 pixels of 10 and one of 20: step = 255 // 255 = 1, lut[v] = pixels below v: 10 -> 0, 20 -> 255
    img = torch.full((1, 16, 16), 10, dtype=torch.uint8)
    img[0, 3, 5] = 20
    out = apply_comatch_op(img, "Equalize", 1, FILL)
    assert out[0, 3, 5] == 255 and int(out.sum()) == 255
    assert _op(_gray([[1, 2, 3]]), "Identity") == [[[1, 2, 3]]]


# --------------------------------------------------------------------------- geometry at level 10
def test_rotate_turns_30_degrees_about_w2_h2_bilinear():
    img = _ramp()  # 4 x 4, centre (W/2, H/2) = (2, 2)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    plus, minus = apply_comatch_op(img, "Rotate", 1, FILL)[0], apply_comatch_op(img, "Rotate", -1, FILL)[0]
    assert plus[2, 2] == minus[2, 2] == 120, "the centre pixel (2, 2) stays"
    # output (3, 2) samples (2 + cos 30, 2 + sin 30) = (2.866, 2.5) at +30: 28.66 + 125 = 153.66 -> 154
    assert plus[2, 3] == round(10 * (2 + c) + 50 * (2 + s)) == 154
    # ... and (2.866, 1.5) at -30: 28.66 + 75 = 103.66 -> 104
    assert minus[2, 3] == round(10 * (2 + c) + 50 * (2 - s)) == 104
    # output (0, 0) at +30 samples (1.268, -0.732): 0.268 * row 0 (12.68) + 0.732 * fill = 97.09 -> 97
    assert plus[0, 0] == 97


def test_shear_is_0_3_about_the_top_left_pixel():
    img = _ramp()
    shear_x = apply_comatch_op(img, "ShearX", 1, FILL)[0]  # out(x, y) = in(x - 0.3 y, y)
    assert shear_x[0].tolist() == [0, 10, 20, 30], "row 0 stays"
    assert shear_x[2, 3] == 124  # in(2.4, 2) = 24 + 100
    assert shear_x[2, 0] == 117  # in(-0.6, 2) = 0.6 * fill + 0.4 * 100 = 116.8
    shear_y = apply_comatch_op(img, "ShearY", -1, FILL)[0]  # out(x, y) = in(x, y + 0.3 x)
    assert shear_y[:, 0].tolist() == [0, 50, 100, 150], "column 0 stays"
    assert shear_y[1, 2] == 100  # in(2, 1.6) = 20 + 80
    assert shear_y[3, 3] == 133  # in(3, 3.9) = 0.1 * 180 + 0.9 * fill = 133.2


def test_translate_is_10_pixels_whatever_the_size():
    img = (torch.arange(32) * 8).to(torch.uint8).reshape(1, 1, 32).expand(1, 2, 32).contiguous()
    left = apply_comatch_op(img, "TranslateX", 1, FILL)[0]  # out(x) = in(x + 10)
    assert torch.equal(left[:, :22], img[0, :, 10:]) and (left[:, 22:] == FILL).all()
    right = apply_comatch_op(img, "TranslateX", -1, FILL)[0]
    assert torch.equal(right[:, 10:], img[0, :, :22]) and (right[:, :10] == FILL).all()
    column = img.transpose(1, 2).contiguous()  # [1, 32, 2]
    up = apply_comatch_op(column, "TranslateY", 1, FILL)[0]
    assert torch.equal(up[:22], column[0, 10:]) and (up[22:] == FILL).all()


def test_every_op_keeps_shape_dtype_and_runs_on_1_and_3_channels():
    for channels in (1, 3):
        img = torch.randint(0, 256, (channels, 9, 7), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        for op in COMATCH_OPS:
            out = apply_comatch_op(img, op, -1, FILL)
            assert out.dtype == torch.uint8 and out.shape == img.shape, op
    with pytest.raises(ValueError, match="unknown RandAugment op"):
        apply_comatch_op(img, "Invert", 1, FILL)


# --------------------------------------------------------------------------- sampling and batched views
def test_comatch_randaugment_draws_two_ops_at_the_fixed_level():
    n = 7000
    params = sample_comatch_randaugment_params(n, 2, 10, 0.5, torch.Generator().manual_seed(0))
    assert params.op_index.shape == (n, 2) and (params.magnitude == 10).all()
    counts = torch.bincount(params.op_index.flatten(), minlength=len(COMATCH_OPS))
    assert len(counts) == 14 and all(abs(int(c) - 2 * n / 14) < 5 * math.sqrt(2 * n / 14) for c in counts)
    assert abs(float(params.apply.float().mean()) - 0.5) < 0.02 and set(params.sign.unique().tolist()) == {-1, 1}
    torch.manual_seed(0)
    draws = CoMatchRandAugment(2, 10).sample_params()
    assert len(draws) == 2 and all(d.magnitude == 10 and d.op in COMATCH_OPS for d in draws)


def test_batched_strong_view_equals_the_per_image_ops():
    settings = ViewSettings(image_size=12, crop_padding=2, fill=FILL, cutout=0.5, randaugment="comatch",
                            crop_offsets="released")
    n = 80
    imgs = torch.randint(0, 256, (n, 3, 12, 12), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    params = sample_strong_params(n, settings, torch.Generator().manual_seed(2))
    out = apply_strong(imgs, params, comatch_op_param_table(10, 12, 12), FILL, "comatch")
    weak, ra, box = apply_weak(imgs, params.weak), params.randaugment, params.cutout
    assert box is not None and int(ra.apply.sum()) > 40
    for i in range(n):
        img = weak[i]
        for k in range(2):
            if ra.apply[i, k]:
                img = apply_comatch_op(img, COMATCH_OPS[int(ra.op_index[i, k])], int(ra.sign[i, k]), FILL)
        img = img.clone()
        img[:, box.top[i]:box.bottom[i], box.left[i]:box.right[i]] = FILL
        assert torch.equal(out[i], img), i


def test_batch_views_pick_the_variant_from_the_settings():
    imgs = torch.randint(0, 256, (6, 3, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    comatch = BatchViews(ViewSettings(image_size=8, randaugment="comatch"))
    fixmatch = BatchViews(ViewSettings(image_size=8))
    assert comatch.table.shape == (14, 11, 2, 6) and comatch.table[:, 10].equal(comatch.table[:, 3])
    a = comatch("strong", imgs, torch.Generator().manual_seed(4))
    b = fixmatch("strong", imgs, torch.Generator().manual_seed(4))
    assert a.shape == b.shape == imgs.shape and not torch.equal(a, b)
    with pytest.raises(ValueError, match=r"randaugment\s+Input should be 'fixmatch' or 'comatch'"):
        ViewSettings(image_size=8, randaugment="autoaugment")


def test_released_crop_offsets_lie_in_minus_pad_to_pad_minus_1():
    n, pad = 8000, 4
    params = sample_weak_params(n, ViewSettings(image_size=8, crop_padding=pad, crop_offsets="released"),
                                torch.Generator().manual_seed(5))
    for shift in (params.dx, params.dy):
        assert shift.min() == -4 and shift.max() == 3
        assert all(abs(int(c) - n / 8) < 5 * math.sqrt(n / 8) for c in torch.bincount(shift + pad))
    # per image: the centre pixel (5, 5) of a 10 x 10 image of distinct values shows the shift
    img = torch.arange(100, dtype=torch.uint8).reshape(1, 10, 10)
    crop, seen = ReleasedPadCrop(pad), set()
    torch.manual_seed(6)
    for _ in range(400):
        value = int(crop(img)[0, 5, 5])
        seen.add((value // 10 - 5, value % 10 - 5))
    assert seen == {(dy, dx) for dy in range(-4, 4) for dx in range(-4, 4)}
    views = build_views(ViewSettings(image_size=10, crop_padding=pad, flip=False, crop_offsets="released"))
    assert views["weak"](img).shape == img.shape


# --------------------------------------------------------------------------- EMA
def _tiny() -> nn.Module:
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    nn.init.zeros_(model[0].weight)
    return model


def test_ema_without_warmup_is_constant_0_999_and_copies_buffers():
    model = _tiny()
    ema = ModelEMA(model, 0.999, warmup=False, buffers="copy")
    model[0].weight.data.fill_(1.0)
    model[1].running_mean.fill_(5.0)
    model[1].num_batches_tracked.fill_(7)
    expected = [0.001, 0.001999, 0.002997001]  # 1 - 0.999^k
    for step, value in enumerate(expected):
        assert ema.update(model, step) == 0.999
        assert float(ema.module[0].weight) == pytest.approx(value, abs=1e-9)
    assert float(ema.module[1].running_mean) == 5.0 and int(ema.module[1].num_batches_tracked) == 7


def test_ema_with_warmup_and_averaged_buffers_is_this_projects_default():
    model = _tiny()
    ema = ModelEMA(model, 0.999)
    model[0].weight.data.fill_(1.0)
    model[1].running_mean.fill_(5.0)
    assert ema.update(model, 0) == pytest.approx(0.1)  # min(0.999, 1 / 10)
    assert float(ema.module[0].weight) == pytest.approx(0.9)  # 0.1 * 0 + 0.9 * 1
    assert float(ema.module[1].running_mean) == pytest.approx(4.5)  # averaged like the weights
    assert ema.update(model, 1) == pytest.approx(2 / 11)
    assert float(ema.module[0].weight) == pytest.approx((2 / 11) * 0.9 + 9 / 11)
    with pytest.raises(ValueError, match="EMA buffers must be one of"):
        ModelEMA(model, buffers="median")


# --------------------------------------------------------------------------- weight decay, head, schedule
def _net(activation: str = "leaky_relu") -> CoMatchNet:
    encoder = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return CoMatchNet(encoder, feature_dim=2, num_classes=3, proj_dim=2, head_activation=activation)


def _decayed_names(model: nn.Module, exempt: str) -> set[str]:
    groups = param_groups_for_weight_decay(model, 1e-4, exempt)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    return {name for name, p in model.named_parameters() if id(p) in decayed}


def test_weight_decay_groups_of_each_exemption():
    model = _net()
    weights = {"encoder.0.weight", "classifier.weight", "projector.0.weight", "projector.2.weight"}
    biases = {"encoder.0.bias", "classifier.bias", "projector.0.bias", "projector.2.bias"}
    norm = {"encoder.1.weight", "encoder.1.bias"}
    assert _decayed_names(model, "norm_and_bias") == weights
    assert _decayed_names(model, "norm") == weights | biases  # released CIFAR code: only BatchNorm spared
    assert _decayed_names(model, "none") == weights | biases | norm  # released ImageNet code
    assert len(param_groups_for_weight_decay(model, 1e-4, "none")) == 1
    with pytest.raises(ValueError, match="weight-decay exemption must be one of"):
        param_groups_for_weight_decay(model, 1e-4, "bias")


def test_head_activation_relu_or_leaky_relu():
    feats = torch.tensor([[-2.0, 3.0]])
    for activation, expected in (("relu", [0.0, 1.0]), ("leaky_relu", [-0.2 / math.hypot(0.2, 3), 3 / math.hypot(0.2, 3)])):
        net = _net(activation)
        with torch.no_grad():
            for layer in (net.projector[0], net.projector[2]):
                layer.weight.copy_(torch.eye(2))
                layer.bias.zero_()
        _, z = net.heads(feats)
        assert z[0].tolist() == pytest.approx(expected), activation
    assert isinstance(_net("relu").projector[1], nn.ReLU)
    with pytest.raises(ValueError, match="head activation must be one of"):
        _net("gelu")


def test_epoch_half_cosine_is_constant_within_an_epoch():
    # K = 10 steps of 3 per epoch: E = ceil(10 / 3) = 4 epochs
    factors = [epoch_half_cosine_lr_factor(k, 10, 3) for k in range(10)]
    quarter = 0.5 * (1 + math.cos(math.pi / 4))  # 0.853553...
    assert factors == pytest.approx([1, 1, 1, quarter, quarter, quarter, 0.5, 0.5, 0.5, 1 - quarter])
    # imagenet-1pct: 400 epochs of 1982 steps; the rate first drops at step 1982
    assert epoch_half_cosine_lr_factor(1981, 792800, 1982) == 1.0
    assert epoch_half_cosine_lr_factor(1982, 792800, 1982) == pytest.approx(0.999984579, abs=1e-9)
    assert epoch_half_cosine_lr_factor(792799, 792800, 1982) == pytest.approx(1.5421e-5, rel=1e-3)
    assert lr_factor("epoch_half_cosine", 1982, 792800, 1982) == epoch_half_cosine_lr_factor(1982, 792800, 1982)
    assert lr_factor("cosine", 500, 1000) == cosine_lr_factor(500, 1000) == pytest.approx(math.cos(7 * math.pi / 32))
    with pytest.raises(ValueError, match="needs steps_per_epoch"):
        lr_factor("epoch_half_cosine", 0, 10)
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        lr_factor("step", 0, 10)


def test_half_cosine_decays_per_step_to_zero():
    """``(1 + cos(pi k / K)) / 2``: 1 at the start, 1/2 halfway, near 0 at the last step."""
    assert [lr_factor("half_cosine", k, 4) for k in range(5)] == pytest.approx(
        [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 - math.cos(math.pi / 4)), 0.0])
    assert lr_factor("half_cosine", 999, 1000) == pytest.approx(2.467e-6, rel=1e-3)


# --------------------------------------------------------------------------- unlabelled pool
def test_unlabelled_pool_with_or_without_the_labelled_images():
    common = dict(seed=3, labels_per_class=4, val_per_class=20)
    with_labelled = build_data("digits", **common)
    without = build_data("digits", **common, unlabeled_includes_labeled=False)
    assert with_labelled.labelled_ids == without.labelled_ids and len(without.labelled_ids) == 40
    assert len(without.unlabelled) == len(with_labelled.unlabelled) - 40
    assert not set(without.unlabelled.indices) & set(without.labelled_ids)
    assert sorted(set(without.unlabelled.indices) | set(without.labelled_ids)) == list(range(len(with_labelled.unlabelled)))


def test_folder_unlabelled_pool_leaves_the_labelled_files_out(tmp_path):
    from datafiles import write_class_folder

    write_class_folder(tmp_path / "lab", ["a", "b"], per_class=5, size=(12, 12))
    write_class_folder(tmp_path / "unl", ["x"], per_class=3, size=(12, 12), seed=1)
    common = dict(seed=0, labels_per_class=2, labeled=str(tmp_path / "lab"), unlabeled=str(tmp_path / "unl"),
                  test=str(tmp_path / "lab"), image_size=12, channels=3)
    with_labelled = build_data("folder", **common)
    without = build_data("folder", **common, unlabeled_includes_labeled=False)
    assert len(with_labelled.unlabelled) == 10 + 3 and len(without.unlabelled) == 10 - 4 + 3
    labelled = set(without.labelled.paths)
    assert len(labelled) == 4 and not labelled & set(without.unlabelled.paths)


def test_an_empty_unlabelled_pool_is_a_user_error():
    import numpy as np

    from comatch.data.sources import _unlabelled_rest
    from comatch.errors import UserError

    assert _unlabelled_rest(5, np.array([0, 3])) == [1, 2, 4]
    with pytest.raises(UserError, match="set data.unlabeled_includes_labeled=true or label fewer images"):
        _unlabelled_rest(3, np.array([0, 1, 2]))


# --------------------------------------------------------------------------- initialisation
def test_released_init_uses_fan_in_convolutions_and_default_linear_layers():
    from comatch.models import build_model

    torch.manual_seed(0)
    released = build_model("wrn28_2", 10, init_scheme="released")
    project = build_model("wrn28_2", 10)
    checked = 0
    for (name, a), (_, b) in zip(released.encoder.named_modules(), project.encoder.named_modules()):
        if isinstance(a, nn.Conv2d) and a.weight.numel() >= 9000:
            k = a.kernel_size[0] * a.kernel_size[1]
            # Kaiming normal, gain sqrt(2): std sqrt(2 / fan); fan_in = C_in k, fan_out = C_out k
            assert float(a.weight.detach().std()) == pytest.approx(math.sqrt(2 / (a.in_channels * k)), rel=0.05), name
            assert float(b.weight.detach().std()) == pytest.approx(math.sqrt(2 / (b.out_channels * k)), rel=0.05), name
            checked += 1
    assert checked >= 10
    # nn.Linear's default: weights and biases uniform in +-1/sqrt(fan_in) = +-1/8 for 64 features
    head = released.projector[0]
    assert head.bias.abs().max() > 0 and head.weight.abs().max() <= 1 / 8 and head.bias.abs().max() <= 1 / 8
    assert project.projector[0].bias.abs().max() == 0 and project.classifier.bias.abs().max() == 0
    # ResNets keep their fan_out convolutions (as the released ResNet-50)
    torch.manual_seed(1)
    a = build_model("resnet18", 10, init_scheme="released").encoder
    torch.manual_seed(1)
    b = build_model("resnet18", 10).encoder
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="init scheme must be one of"):
        build_model("wrn28_2", 10, init_scheme="xavier")
