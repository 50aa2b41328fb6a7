"""The speed-tuned networks compute the same function as a straightforward reference.

The reference below is written out with functional calls (out-of-place BatchNorm and
LeakyReLU, contiguous NCHW tensors) and reads every parameter and buffer from the network's
``state_dict`` by its name, so that it also pins the checkpoint keys: a renamed or added key
fails here before old checkpoints stop loading.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from comatch.models import build_model

SLOPE, MOMENTUM = 0.1, 0.001


def _bn(x: torch.Tensor, sd: dict, prefix: str, used: set, momentum: float) -> torch.Tensor:
    """Training-mode BatchNorm from ``sd[prefix.*]``; updates the running buffers of ``sd``."""
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        used.add(f"{prefix}.{name}")
    sd[f"{prefix}.num_batches_tracked"] += 1
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"],
                        sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], training=True, momentum=momentum)


def _conv(x: torch.Tensor, sd: dict, key: str, used: set, stride: int = 1) -> torch.Tensor:
    used.add(key)
    w = sd[key]
    return F.conv2d(x, w, stride=stride, padding=w.shape[-1] // 2)


def _heads(feats: torch.Tensor, sd: dict, used: set) -> tuple[torch.Tensor, torch.Tensor]:
    """classifier (linear) and projector fc - LeakyReLU(0.1) - fc, L2-normalised."""
    used.update({"classifier.weight", "classifier.bias", "projector.0.weight", "projector.0.bias",
                 "projector.2.weight", "projector.2.bias"})
    logits = F.linear(feats, sd["classifier.weight"], sd["classifier.bias"])
    h = F.leaky_relu(F.linear(feats, sd["projector.0.weight"], sd["projector.0.bias"]), SLOPE)
    z = F.linear(h, sd["projector.2.weight"], sd["projector.2.bias"])
    return logits, z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)


def reference_wrn(x: torch.Tensor, sd: dict, blocks: int, used: set) -> tuple[torch.Tensor, torch.Tensor]:
    """WRN encoder + heads: stem; per group, pre-activation blocks
    BN-LReLU-conv3x3(stride)-BN-LReLU-conv3x3 plus a shortcut (1x1 conv where the shape
    changes; the activated input in the first block of the first group); BN-LReLU-mean."""
    out = _conv(x, sd, "encoder.stem.weight", used)
    for g in range(3):
        for i in range(blocks):
            p = f"encoder.groups.{g}.{i}"
            stride = 2 if (g > 0 and i == 0) else 1
            pre = F.leaky_relu(_bn(out, sd, f"{p}.bn1", used, MOMENTUM), SLOPE)
            h = _conv(pre, sd, f"{p}.conv1.weight", used, stride)
            h = _conv(F.leaky_relu(_bn(h, sd, f"{p}.bn2", used, MOMENTUM), SLOPE), sd, f"{p}.conv2.weight", used)
            short_in = pre if (g == 0 and i == 0) else out
            if f"{p}.shortcut.weight" in sd:
                short_in = _conv(short_in, sd, f"{p}.shortcut.weight", used, stride)
            out = short_in + h
    out = F.leaky_relu(_bn(out, sd, "encoder.bn", used, MOMENTUM), SLOPE)
    return _heads(out.mean(dim=(2, 3)), sd, used)  # [N, C, H, W] -> [N, C]


def reference_digits(x: torch.Tensor, sd: dict, used: set) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits CNN: (conv3x3-BN-LReLU) x2, max-pool 2, (conv3x3-BN-LReLU) x2, mean, heads."""
    out = x
    for k in (0, 1, 3, 4):
        out = _conv(out, sd, f"encoder.body.{k}.0.weight", used)
        out = F.leaky_relu(_bn(out, sd, f"encoder.body.{k}.1", used, 0.01), SLOPE)
        if k == 1:
            out = F.max_pool2d(out, 2)
    return _heads(out.mean(dim=(2, 3)), sd, used)


CASES = {  # arch -> (in_channels, size, reference)
    "wrn10_1": (3, 32, lambda x, sd, used: reference_wrn(x, sd, 1, used)),
    "wrn28_2": (3, 16, lambda x, sd, used: reference_wrn(x, sd, 4, used)),
    "digits_cnn": (1, 8, reference_digits),
}


@pytest.mark.parametrize("arch", sorted(CASES))
def test_network_matches_reference_outputs_gradients_and_keys(arch: str) -> None:
    in_ch, size, reference = CASES[arch]
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, in_channels=in_ch, proj_dim=64).train()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = {k: v.requires_grad_() for k, v in sd.items() if v.is_floating_point() and "running" not in k}
    x = torch.randn(6, in_ch, size, size, generator=torch.Generator().manual_seed(1))

    used: set[str] = set()
    ref_logits, ref_z = reference(x, sd, used)
    logits, z = model(x)
    # every checkpoint key is read by the reference, under the same name, and nothing else
    assert used == set(model.state_dict())
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(z, ref_z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(6))

    # same gradients for a loss on both outputs
    target = torch.arange(6) % 10
    (F.cross_entropy(ref_logits, target) + ref_z[:, 0].sum()).backward()
    (F.cross_entropy(logits, target) + z[:, 0].sum()).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, params[name].grad, rtol=1e-3, atol=1e-5, msg=name)
    # same running statistics after one training-mode forward (momentum as configured)
    for name, buf in model.named_buffers():
        torch.testing.assert_close(buf, sd[name], rtol=1e-5, atol=1e-6, msg=name)


def test_parameter_counts_are_the_released_ones() -> None:
    # WRN-28-2: 1,467,610 (encoder and 10-class classifier, as released) + 24,768 (projector 128-128-64)
    counts = {a: sum(p.numel() for p in build_model(a, 10, 3, 64).parameters()) for a in ("wrn10_1", "wrn28_2")}
    assert counts == {"wrn10_1": 86170, "wrn28_2": 1492378}


@pytest.mark.parametrize("shape", [(8, 32, 8, 8), (3, 5, 9, 7)])
def test_digits_max_pool_is_bit_for_bit_nn_maxpool_including_ties(shape: tuple[int, ...]) -> None:
    """The channels-last 2x2 max-pool of the digits CNN gives nn.MaxPool2d's output and
    gradient exactly (the sign of zeros included), also where a window holds equal values
    (black background) and on odd sizes (the last row and column dropped)."""
    from comatch.models.small import MaxPool2x2

    torch.manual_seed(0)
    x = torch.randn(shape)
    x[:, :, :4, :] = 0.25  # ties in every window of the top half
    n, c, h, w = shape
    grad = torch.randn(n, c, h // 2, w // 2)
    grad[:, :, -1] = -0.0
    outs = []
    for pool in (torch.nn.MaxPool2d(2), MaxPool2x2()):
        xi = x.clone().requires_grad_(True)
        inner = xi * 1.0  # a non-leaf: a leaf's .grad is always laid out like the leaf
        y = pool(inner)
        (g_inner,) = torch.autograd.grad(y, inner, grad)
        outs.append((y.detach(), g_inner))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert torch.equal(outs[0][1].signbit(), outs[1][1].signbit())
    with torch.no_grad():  # evaluation takes the plain path: the same output
        assert torch.equal(MaxPool2x2()(x), outs[0][0])
    y, g_inner = outs[1]
    # both handed on as NCHW, like the input: a channels-last gradient meeting the NCHW
    # activation in LeakyReLU's backward takes that kernel's slow path (2.0 against 0.08 ms)
    assert y.is_contiguous() and g_inner.is_contiguous()
