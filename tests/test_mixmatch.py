"""MixMatch through the method interface: hand-worked guesses, mixing, loss and ramp; a real run."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comatch.cli import main
from comatch.config import build_config
from comatch.methods import METHODS, Batch, MixMatch
from comatch.methods.mixmatch import mix, sharpen, unlabelled_weight


def test_sharpen_by_hand():
    p = torch.tensor([[0.6, 0.4], [0.5, 0.5]])
    # T = 0.5: squares renormalised: 0.36 / (0.36 + 0.16), 0.16 / 0.52
    assert torch.allclose(sharpen(p, 0.5), torch.tensor([[0.36 / 0.52, 0.16 / 0.52], [0.5, 0.5]]))
    assert torch.allclose(sharpen(p, 1.0), p)
    assert sharpen(p, 0.01)[0].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_mix_by_hand():
    inputs = torch.tensor([[0.0], [10.0], [20.0]])
    targets = torch.eye(3)
    order = torch.tensor([2, 0, 1])
    mixed, mixed_targets = mix(inputs, targets, order, 0.75)
    assert mixed.flatten().tolist() == [5.0, 7.5, 17.5]  # 0.75 * a + 0.25 * b
    assert mixed_targets[0].tolist() == [0.75, 0.0, 0.25]


def test_unlabelled_weight_ramps_linearly():
    assert [unlabelled_weight(k, 75.0, 4) for k in (0, 1, 2, 4, 100)] == [0.0, 18.75, 37.5, 75.0, 75.0]
    assert unlabelled_weight(0, 75.0, 0) == 75.0


def test_mixmatch_loss_equals_the_hand_computed_one():
    """A linear 'network' on 1-pixel images: every quantity can be written out."""
    C, B, N = 2, 2, 2
    method = MixMatch(C, augmentations=2, temperature=0.5, alpha=0.75, lambda_u=10.0, rampup_steps=4)
    weight = torch.tensor([[0.02], [-0.01]])

    def encode(images, network=None):
        logits = images.float().flatten(1) @ weight.T  # [n, C]
        return logits, torch.zeros(images.shape[0], 1)

    x = torch.tensor([[[[10]]], [[[200]]]], dtype=torch.uint8)
    u0 = torch.tensor([[[[50]]], [[[100]]]], dtype=torch.uint8)
    u1 = torch.tensor([[[[60]]], [[[90]]]], dtype=torch.uint8)
    batch = Batch({"weak": x}, torch.tensor([0, 1]), {"weak_0": u0, "weak_1": u1}, step=2, seed=7)
    out = method(batch, encode)

    def probs(v):
        return torch.softmax(torch.tensor(v, dtype=torch.float32).view(-1, 1) @ weight.T, dim=1)

    q = sharpen((probs([50, 100]) + probs([60, 90])) / 2, 0.5)
    assert torch.allclose(out.pseudo_labels, q)
    lam = np.random.default_rng(7).beta(0.75, 0.75)
    lam = max(lam, 1 - lam)
    order = torch.randperm(B + 2 * N, generator=torch.Generator().manual_seed(7))
    inputs = torch.tensor([10.0, 200.0, 50.0, 100.0, 60.0, 90.0]).view(-1, 1)
    targets = torch.cat([torch.eye(2), q, q])
    mixed = lam * inputs + (1 - lam) * inputs[order]
    mixed_t = lam * targets + (1 - lam) * targets[order]
    log_p = F.log_softmax(mixed @ weight.T, dim=1)
    loss_x = -(mixed_t[:B] * log_p[:B]).sum(1).mean()
    loss_u = ((log_p[B:].exp() - mixed_t[B:]) ** 2).mean()
    assert out.loss_x.item() == pytest.approx(loss_x.item(), rel=1e-5)
    assert out.loss_u.item() == pytest.approx(loss_u.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx((loss_x + 5.0 * loss_u).item(), rel=1e-5), "w(2) = 10 * 2 / 4"


def test_mixmatch_is_in_the_mapping_with_its_views_and_settings():
    assert METHODS["mixmatch"] is MixMatch
    config = build_config(overrides=["method=mixmatch", "mixmatch.augmentations=3", "mixmatch.lambda_u=50"])
    assert config.mixmatch.augmentations == 3 and config.mixmatch.temperature == 0.5
    method = MixMatch.from_config(config, type("Ctx", (), {"num_classes": 10})())
    assert method.unlabelled_views == {"weak_0": "weak", "weak_1": "weak", "weak_2": "weak"}
    assert method.rampup_steps == pytest.approx(config.optim.iterations / 64)


def test_mixmatch_trains_through_the_cli(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--method", "mixmatch", "--out", str(out), "--iterations", "3", "data.num_workers=0",
                 "optim.batch_size=4", "optim.mu=2", "run.tensorboard=false", "run.report=false",
                 "run.log_every=1", "run.eval_every=3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "mixmatch" and summary["iterations"] == 3 and summary["skipped_steps"] == 0
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["kind"] == "train"]
    assert len(train) == 3 and all(r["loss_u"] >= 0 and r["loss_c"] == 0 for r in train)
    assert "mask_rate" not in train[0], "MixMatch has no confidence threshold"
