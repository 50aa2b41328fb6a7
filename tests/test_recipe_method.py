"""The released recipe's method-side switches: when smoothing starts, the momentum encoder's
first-epoch decay, the queue's initial state (hand-worked from the released code's behaviour);
and the short-run threshold ramp."""

import pytest
import torch
from torch import nn

from comatch.config import build_config
from comatch.errors import UserError
from comatch.methods import Batch, CoMatch, MethodContext, MomentumCoMatch
from comatch.methods.criterion import CoMatchCriterion
from comatch.methods.momentum import MomentumCoMatchCriterion, MomentumEncoder
from comatch.methods.schedule import ramped_threshold

C, D, B, MU = 3, 4, 2, 3
N = B * MU


def comatch(smoothing_from: str, unlabelled_size: int = 1000) -> CoMatch:
    criterion = CoMatchCriterion(C, D, 5 * (B + N), threshold=0.5, defer_updates=True)
    return CoMatch(criterion, lambda_c=1.0, smoothing_from=smoothing_from, unlabelled_batch=N,
                   unlabelled_size=unlabelled_size, step_entries=B + N)


def test_full_bank_smooths_from_step_six_as_it_gt_queue_batch():
    # the released CIFAR code: `if epoch > 0 or it > queue_batch` with queue_batch = 5
    method = comatch("full_bank")
    assert [method.smoothing_paused_at(k) for k in range(8)] == [True] * 6 + [False] * 2
    assert [comatch("start").smoothing_paused_at(k) for k in range(3)] == [False] * 3


def test_full_bank_changes_pseudo_labels_only_from_step_six():
    torch.manual_seed(0)
    method, plain = comatch("full_bank"), comatch("start")
    net = nn.Linear(4, C + D)

    def encode(images, network=None):
        out = net(images.float().flatten(1))
        return out[:, :C], nn.functional.normalize(out[:, C:], dim=1)

    differs = []
    for step in range(8):
        g = torch.Generator().manual_seed(step)
        views = {k: torch.randint(0, 255, (N, 1, 2, 2), generator=g, dtype=torch.uint8) for k in ("weak", "strong", "contrastive")}
        batch = Batch({"weak": torch.randint(0, 255, (B, 1, 2, 2), generator=g, dtype=torch.uint8)},
                      torch.randint(0, C, (B,), generator=g), views, step=step)
        a, b = method(batch, encode), plain(batch, encode)
        differs.append(not torch.allclose(a.pseudo_labels, b.pseudo_labels))
        method.commit(net)
        plain.commit(net)
    # steps 1-5: the plain schedule smooths, full_bank does not; from 6 both smooth with the same bank
    assert differs[0] is False and all(differs[1:6]) and differs[6] is False and differs[7] is False


def test_first_epoch_holds_smoothing_for_one_pass_over_the_unlabelled_set():
    method = comatch("first_epoch", unlabelled_size=20)  # ceil(20 / 6) = 4 steps per epoch
    assert [method.smoothing_paused_at(k) for k in range(6)] == [True] * 4 + [False] * 2


def test_momentum_is_099_in_the_first_epoch_then_0996():
    model = nn.Linear(1, 1, bias=False)
    nn.init.constant_(model.weight, 0.0)
    criterion = MomentumCoMatchCriterion(C, D, 8, queue_size=0, defer_updates=True)
    method = MomentumCoMatch(criterion, MomentumEncoder(model, 0.996), momentum_first_epoch=0.99,
                             lambda_c=1.0, unlabelled_batch=N, unlabelled_size=20)
    assert [method.momentum_at(k) for k in range(6)] == [0.99] * 4 + [0.996] * 2
    with torch.no_grad():
        model.weight.fill_(1.0)
    method._step = 2  # the update after step 2 is the one before step 3: epoch 0, m = 0.99
    method.commit(model)
    assert method.momentum_encoder.module.weight.item() == pytest.approx(0.01)
    method._step = 3  # before step 4: epoch 1, m = 0.996
    method.commit(model)
    assert method.momentum_encoder.module.weight.item() == pytest.approx(0.01 * 0.996 + 0.004)


def test_random_queue_starts_full_of_unit_embeddings_with_no_labels():
    torch.manual_seed(0)
    criterion = MomentumCoMatchCriterion(C, D, 8, queue_size=10, queue_init="random")
    feats, probs = criterion.queue.contents()
    assert feats.shape == (10, D) and torch.allclose(feats.norm(dim=1), torch.ones(10))
    assert probs.abs().sum() == 0 and int(criterion.queue.ptr) == 0
    empty = MomentumCoMatchCriterion(C, D, 8, queue_size=10)
    assert len(empty.queue) == 0
    with pytest.raises(ValueError, match="queue_init"):
        MomentumCoMatchCriterion(C, D, 8, queue_size=10, queue_init="zeros")


def test_paper_presets_select_the_method_switches():
    for preset in ("cifar10-40", "cifar100-400", "stl10-1000", "svhn-40"):
        assert build_config(preset=preset).comatch.smoothing_from == "full_bank", preset
    c = build_config(preset="imagenet-1pct").comatch
    assert (c.smoothing_from, c.momentum_first_epoch, c.queue_init) == ("first_epoch", 0.99, "random")
    d = build_config().comatch
    assert (d.smoothing_from, d.momentum_first_epoch, d.queue_init) == ("start", None, "empty")
    method = CoMatch.from_config(build_config(preset="imagenet-1pct", overrides=["comatch.queue_size=0"]),
                                 MethodContext(10, 128, nn.Linear(1, 1), 1000))
    assert isinstance(method, MomentumCoMatch) and method.momentum_first_epoch == 0.99


# ---------------------------------------------------------------- short runs: the threshold ramp
def test_ramped_threshold_rises_linearly_over_the_ramp_then_holds():
    # 0.8 -> 0.95 over the first half of a 100-step run: +0.003 a step until step 50
    values = [ramped_threshold(0.8, 0.95, k, 100, 0.5) for k in (0, 10, 25, 50, 51, 99)]
    assert values == pytest.approx([0.8, 0.83, 0.875, 0.95, 0.95, 0.95])
    assert ramped_threshold(0.8, 0.95, 0, 100, 1.0) == pytest.approx(0.8)
    assert ramped_threshold(0.8, 0.95, 99, 100, 1.0) == pytest.approx(0.8 + 0.15 * 0.99)
    assert ramped_threshold(0.8, 0.95, 5, 1, 1.0) == pytest.approx(0.95)  # past the end: the final value


def test_threshold_ramp_follows_the_runs_length_and_the_mask():
    context = MethodContext(C, D, None, 1000)
    common = ["comatch.threshold=0.9", "comatch.alignment=false", "comatch.smoothing=false"]  # the raw softmax
    plain = CoMatch.from_config(build_config(overrides=common), context)
    ramped = CoMatch.from_config(build_config(overrides=[*common, "comatch.threshold_start=0.5",
                                                         "comatch.threshold_ramp=0.5"]), context)
    for method in (plain, ramped):
        method.set_length(10)
    net = nn.Linear(4, C + D)
    with torch.no_grad():  # every unlabelled image is predicted class 0 with confidence ~0.71
        net.weight.zero_()
        net.bias.copy_(torch.tensor([2.0, 0.5, 0.5] + [1.0] * D))

    def encode(images, network=None):
        out = net(images.float().flatten(1))
        return out[:, :C], nn.functional.normalize(out[:, C:], dim=1)

    masks = {}
    for name, method in (("plain", plain), ("ramped", ramped)):
        masks[name] = []
        for step in range(10):
            g = torch.Generator().manual_seed(step)
            views = {k: torch.randint(0, 255, (N, 1, 2, 2), generator=g, dtype=torch.uint8)
                     for k in ("weak", "strong", "contrastive")}
            batch = Batch({"weak": torch.randint(0, 255, (B, 1, 2, 2), generator=g, dtype=torch.uint8)},
                          torch.randint(0, C, (B,), generator=g), views, step=step)
            out = method(batch, encode)
            method.discard()
            masks[name].append(round(out.stats["mask_rate"].item()))
    # thresholds 0.5, 0.58, 0.66, 0.74, ... reach 0.9 at step 5: the ~0.71 predictions count for 3 steps
    assert masks["ramped"] == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert masks["plain"] == [0] * 10
    assert plain.criterion.threshold == 0.9 and ramped.criterion.threshold == pytest.approx(0.9)
    ramped.set_length(40)  # a refit of the length stretches the ramp: step 9 is now early in it
    assert ramped.threshold_at(9) == pytest.approx(0.5 + 0.4 * 9 / 20)


def test_threshold_ramp_settings_are_checked():
    assert build_config().comatch.threshold_start is None
    with pytest.raises(UserError, match="threshold_ramp"):
        build_config(overrides=["comatch.threshold_start=0.5", "comatch.threshold_ramp=0"])
    with pytest.raises(UserError, match="threshold_start"):
        build_config(overrides=["comatch.threshold_start=1.5"])
