"""Tests for comatch.models: architectures, heads, EMA and weight-decay groups."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from comatch.models import (
    ARCHITECTURES,
    CoMatchNet,
    ModelEMA,
    build_model,
    param_groups_for_weight_decay,
)
from comatch.models.ema import ema_decay
from comatch.models.wideresnet import WideResNetEncoder, blocks_per_group

# (in_channels, image size, expected feature dim) for a tiny forward pass per architecture.
_INPUTS = {
    "digits_cnn": (1, 8, 64),
    "wrn28_2": (3, 32, 128),
    "wrn28_8": (3, 32, 512),
    "wrn37_2": (3, 32, 256),
    "wrn10_1": (3, 32, 64),
    "resnet18": (3, 32, 512),
    "resnet50": (3, 64, 2048),
}


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tiny_net(num_classes: int = 3) -> CoMatchNet:
    """A very small CoMatchNet (conv + BN encoder) for EMA / optimizer tests."""
    encoder = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return CoMatchNet(encoder, feature_dim=4, num_classes=num_classes, proj_dim=2)


def test_architecture_names_are_complete() -> None:
    assert set(ARCHITECTURES) == set(_INPUTS)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_build_and_forward_shapes(arch: str) -> None:
    torch.manual_seed(0)
    in_ch, size, feat_dim = _INPUTS[arch]
    model = build_model(arch, num_classes=7, in_channels=in_ch, proj_dim=16)
    assert (model.num_classes, model.feature_dim, model.proj_dim) == (7, feat_dim, 16)
    x = torch.randn(2, in_ch, size, size)
    with torch.no_grad():
        feats = model.features(x)
        logits, z = model(x)
    assert feats.shape == (2, feat_dim)
    assert logits.shape == (2, 7)
    assert z.shape == (2, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    assert torch.isfinite(logits).all()


def test_unknown_arch_raises() -> None:
    with pytest.raises(ValueError, match="unknown model architecture 'vgg'"):
        build_model("vgg", num_classes=10)


@pytest.mark.parametrize(
    ("arch", "expected"),
    [("wrn28_2", 1_467_610), ("wrn28_8", 23_354_842), ("wrn37_2", 5_929_434)],
)
def test_wrn_parameter_counts(arch: str, expected: int) -> None:
    # FixMatch counts encoder + 10-class linear classifier (no projection head):
    # WRN-28-2 ~1.47M, WRN-28-8 ~23.4M, WRN-37-2 ~5.9M.
    model = build_model(arch, num_classes=10)
    count = _num_params(model.encoder) + _num_params(model.classifier)
    assert abs(count - expected) <= 0.02 * expected
    if arch == "wrn28_2":
        assert abs(count - 1.47e6) <= 0.02 * 1.47e6
        # projector: fc(128->128) + fc(128->64)
        assert _num_params(model.projector) == 128 * 128 + 128 + 128 * 64 + 64
    if arch == "wrn28_8":
        assert abs(count - 23.4e6) <= 0.02 * 23.4e6


def test_wrn_structure_bn_momentum_and_slope() -> None:
    model = build_model("wrn28_2", num_classes=10)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    lrelus = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert bns and all(m.momentum == 0.001 for m in bns)
    assert lrelus and all(m.negative_slope == 0.1 for m in lrelus)
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert blocks_per_group(28, 3) == 4 and blocks_per_group(37, 4) == 4
    assert blocks_per_group(10, 3) == 1
    # 4 groups x 4 blocks for WRN-37-2; first block of first group activates before residual.
    enc = WideResNetEncoder(depth=37, widen_factor=2, num_groups=4)
    assert [len(g) for g in enc.groups] == [4, 4, 4, 4]
    assert enc.groups[0][0].activate_before_residual
    assert not enc.groups[1][0].activate_before_residual
    with pytest.raises(ValueError):
        WideResNetEncoder(depth=27)


def test_bn_momentum_override() -> None:
    model = build_model("digits_cnn", num_classes=10, in_channels=1)
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {0.01}
    model = build_model("wrn10_1", num_classes=10, bn_momentum=0.05)
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {0.05}


def test_encoders_accept_other_resolutions() -> None:
    digits = build_model("digits_cnn", num_classes=10, in_channels=1)
    wrn = build_model("wrn10_1", num_classes=10)
    with torch.no_grad():
        assert digits(torch.randn(2, 1, 16, 16))[0].shape == (2, 10)
        assert digits(torch.randn(2, 1, 32, 32))[0].shape == (2, 10)
        assert wrn(torch.randn(2, 3, 24, 24))[0].shape == (2, 10)


def test_resnet_stems() -> None:
    small = build_model("resnet18", num_classes=10, in_channels=1)
    assert small.encoder.net.conv1.kernel_size == (3, 3)
    assert small.encoder.net.conv1.stride == (1, 1)
    assert small.encoder.net.conv1.in_channels == 1
    assert isinstance(small.encoder.net.maxpool, nn.Identity)
    assert isinstance(small.encoder.net.fc, nn.Identity)
    big = build_model("resnet50", num_classes=10)
    assert big.encoder.net.conv1.kernel_size == (7, 7)
    assert isinstance(big.encoder.net.maxpool, nn.MaxPool2d)


def test_weight_decay_groups() -> None:
    model = build_model("wrn10_1", num_classes=10)
    model.classifier.bias.requires_grad_(False)
    groups = param_groups_for_weight_decay(model, 5e-4)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    decay_ids = {id(p) for p in groups[0]["params"]}
    no_decay_ids = {id(p) for p in groups[1]["params"]}
    assert len(decay_ids) == len(groups[0]["params"])
    assert len(no_decay_ids) == len(groups[1]["params"])
    assert not decay_ids & no_decay_ids
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert decay_ids | no_decay_ids == trainable
    assert id(model.classifier.bias) not in trainable
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert id(m.weight) in no_decay_ids and id(m.bias) in no_decay_ids
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            assert id(m.weight) in decay_ids
            if m.bias is not None and m.bias.requires_grad:
                assert id(m.bias) in no_decay_ids
    # usable by a torch optimizer
    torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)


def test_ema_decay_schedule() -> None:
    assert ema_decay(0, 0.999, warmup=True) == pytest.approx(1 / 10)
    assert ema_decay(1, 0.999, warmup=True) == pytest.approx(2 / 11)
    assert ema_decay(10, 0.999, warmup=True) == pytest.approx(11 / 20)
    assert ema_decay(10**6, 0.999, warmup=True) == pytest.approx(0.999)
    assert ema_decay(100, 0.9, warmup=True) == pytest.approx(0.9)
    assert ema_decay(0, 0.999, warmup=False) == pytest.approx(0.999)
    assert ModelEMA.ema_decay(1, 0.5, True) == pytest.approx(2 / 11)
    with pytest.raises(ValueError):
        ema_decay(0, 1.5)


def _fill(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_ema_update_values() -> None:
    model = _tiny_net()
    _fill(model, 1.0)
    ema = ModelEMA(model, decay=0.999)
    assert not any(p.requires_grad for p in ema.parameters())
    assert not ema.module.training
    _fill(model, 3.0)
    bn = model.encoder[1]
    bn.running_mean.fill_(2.0)  # EMA copy still has 0
    bn.num_batches_tracked.fill_(7)

    used = ema.update(model, step=0)  # decay 1/10
    assert used == pytest.approx(0.1)
    expected = 0.1 * 1.0 + 0.9 * 3.0
    torch.testing.assert_close(ema.module.classifier.weight, torch.full((3, 4), expected))
    torch.testing.assert_close(ema.module.encoder[0].bias, torch.full((4,), expected))
    ema_bn = ema.module.encoder[1]
    torch.testing.assert_close(ema_bn.running_mean, torch.full((4,), 0.9 * 2.0))
    assert ema_bn.num_batches_tracked.dtype == torch.long
    assert ema_bn.num_batches_tracked.item() == 7

    ema.update(model, step=1)  # decay 2/11 towards 3.0
    d = 2 / 11
    torch.testing.assert_close(
        ema.module.classifier.weight, torch.full((3, 4), d * expected + (1 - d) * 3.0)
    )
    # the trained model is untouched
    torch.testing.assert_close(model.classifier.weight, torch.full((3, 4), 3.0))


def test_ema_follows_tensors_the_model_replaced_between_updates() -> None:
    """The update finds the model's tensors where they are now: a buffer or parameter replaced
    after an earlier update (``Module.to`` and ``load_state_dict(assign=True)`` do that) is
    the one averaged, not the tensor it replaced."""
    model = _tiny_net()
    _fill(model, 1.0)
    ema = ModelEMA(model, decay=0.5, warmup=False)
    ema.update(model, step=0)
    bn = model.encoder[1]
    bn.running_mean = torch.full((4,), 8.0)  # a new tensor object in the module's buffers
    model.classifier.weight = nn.Parameter(torch.full((3, 4), 5.0))
    ema.update(model, step=1)
    torch.testing.assert_close(ema.module.encoder[1].running_mean, torch.full((4,), 4.0))  # 0.5 * 0 + 0.5 * 8
    torch.testing.assert_close(ema.module.classifier.weight, torch.full((3, 4), 3.0))  # 0.5 * 1 + 0.5 * 5


def test_ema_updates_its_own_tensors_after_it_was_moved() -> None:
    """``ema.to(dtype)`` (or ``.half()``, ``.cuda()``) gives the EMA copy new tensors after an
    update; the next update averages into those, not into the ones they replaced."""
    model = _tiny_net()
    _fill(model, 1.0)
    ema = ModelEMA(model, decay=0.5, warmup=False)
    ema.update(model, step=0)
    ema.to(torch.float64)
    model.double()
    model.encoder[1].running_mean.fill_(8.0)
    ema.update(model, step=1)
    torch.testing.assert_close(ema.module.encoder[1].running_mean, torch.full((4,), 4.0, dtype=torch.float64))
    torch.testing.assert_close(ema.module.classifier.weight, torch.full((3, 4), 1.0, dtype=torch.float64))


def test_ema_constant_decay_and_eval_mode() -> None:
    model = _tiny_net()
    _fill(model, 0.0)
    ema = ModelEMA(model, decay=0.5, warmup=False)
    _fill(model, 4.0)
    assert ema.update(model, step=0) == pytest.approx(0.5)
    torch.testing.assert_close(ema.module.classifier.weight, torch.full((3, 4), 2.0))
    ema.train()
    assert not ema.module.training  # EMA BN stats never update from forward passes
    logits, z = ema(torch.randn(2, 1, 5, 5))
    assert logits.shape == (2, 3) and z.shape == (2, 2)


def test_ema_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = _tiny_net()
    ema = ModelEMA(model, decay=0.99)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.encoder[1].running_var.fill_(5.0)
    ema.update(model, step=3)
    state = ema.state_dict()
    restored = ModelEMA(_tiny_net(), decay=0.99)
    restored.load_state_dict(state)
    for key, value in restored.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert any(k.startswith("module.") for k in state)


def test_ema_copies_leave_the_trained_model_behind() -> None:
    model = _tiny_net()
    ema = ModelEMA(model, decay=0.5)
    ema.update(model, step=0)
    twin = copy.deepcopy(ema)
    assert "_slots" not in twin.__dict__  # the trained model is not copied along
    _fill(model, 2.0)
    twin.update(model, step=0)
    torch.testing.assert_close(twin.module.classifier.weight, 0.1 * ema.module.classifier.weight + 0.9 * 2.0)
