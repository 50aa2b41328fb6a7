"""The criterion: CoMatch against the equations, FixMatch and supervised by definition, ablations."""

import pytest
import torch
import torch.nn.functional as F

from comatch import CoMatchCriterion, build_criterion
from comatch import config as cfg
from comatch.methods.supervised import SupervisedCriterion

B, N, C, D = 4, 12, 3, 8


def step_outputs(seed: int, requires_grad: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    unit = lambda n: F.normalize(torch.randn(n, D, generator=g), dim=1)  # noqa: E731
    out = {
        "logits_x": torch.randn(B, C, generator=g),
        "targets_x": torch.randint(0, C, (B,), generator=g),
        "logits_u_w": torch.randn(N, C, generator=g) * 4,
        "logits_u_s0": torch.randn(N, C, generator=g),
        "z_x": unit(B), "z_u_w": unit(N), "z_u_s0": unit(N), "z_u_s1": unit(N),
    }
    if requires_grad:
        for k in ("logits_x", "logits_u_s0", "z_u_s0", "z_u_s1", "logits_u_w"):
            out[k].requires_grad_()
    return out


def expected_comatch_loss(o, bank_feats, bank_probs, mean_probs, *, alpha=0.9, T=0.2, tau=0.6, t=0.5):
    """CoMatch written out from the equations of docs/method.md, independently of comatch.losses."""
    p = torch.softmax(o["logits_u_w"].detach(), 1)
    p = p / mean_probs
    p = p / p.sum(1, keepdim=True)
    if bank_feats is not None:
        a = torch.softmax(o["z_u_w"] @ bank_feats.T / T, 1)
        q = alpha * p + (1 - alpha) * a @ bank_probs
    else:
        q = p
    mask = (q.max(1).values >= tau).float()
    l_u = (-(q * torch.log_softmax(o["logits_u_s0"], 1)).sum(1) * mask).mean()
    w = q @ q.T
    w = torch.where(w >= t, w, torch.zeros_like(w))
    w.fill_diagonal_(1)
    w = w / w.sum(1, keepdim=True)
    wz = torch.softmax(o["z_u_s0"] @ o["z_u_s1"].T / T, 1)
    l_c = -(w * torch.log(wz)).sum(1).mean()
    l_x = F.cross_entropy(o["logits_x"], o["targets_x"])
    return l_x + l_u + 1.0 * l_c, q, p


def make_comatch(**kw) -> CoMatchCriterion:
    settings = dict(bank_size=64, threshold=0.6, graph_threshold=0.5, da_window=8) | kw
    return CoMatchCriterion(C, D, settings.pop("bank_size"), **settings)


def test_comatch_two_steps_match_the_equations():
    crit = make_comatch()
    o1, o2 = step_outputs(1), step_outputs(2)
    # step 1: the bank is empty, so no smoothing; alignment uses this batch's mean
    p1 = torch.softmax(o1["logits_u_w"], 1)
    expected1, _, aligned1 = expected_comatch_loss(o1, None, None, p1.mean(0))
    out1 = crit(**o1)
    assert out1.loss.item() == pytest.approx(expected1.item(), rel=1e-5)
    # the bank now holds the labelled one-hots and the aligned, unsmoothed probs of step 1
    bank_feats = torch.cat([o1["z_x"], o1["z_u_w"]])
    bank_probs = torch.cat([F.one_hot(o1["targets_x"], C).float(), aligned1])
    assert torch.allclose(crit.bank.contents()[0], bank_feats)
    assert torch.allclose(crit.bank.contents()[1], bank_probs, atol=1e-6)
    # step 2: smoothing with the bank; alignment with the mean of both batch means
    p2 = torch.softmax(o2["logits_u_w"], 1)
    mean = (p1.mean(0) + p2.mean(0)) / 2
    expected2, q2, _ = expected_comatch_loss(o2, bank_feats, bank_probs, mean)
    out2 = crit(**o2)
    assert out2.loss.item() == pytest.approx(expected2.item(), rel=1e-5)
    assert torch.allclose(out2.pseudo_labels, q2, atol=1e-6)
    assert out2.stats["mask_rate"].item() == pytest.approx((q2.max(1).values >= 0.6).float().mean().item())


def test_comatch_gradients_reach_strong_views_only():
    o = step_outputs(3)
    crit = make_comatch()
    crit(**step_outputs(4, requires_grad=False))  # fill the bank
    crit(**o).loss.backward()
    for name in ("logits_x", "logits_u_s0", "z_u_s0", "z_u_s1"):
        assert o[name].grad is not None and o[name].grad.abs().sum() > 0, name
    assert o["logits_u_w"].grad is None, "pseudo-labels must be constants"


def aligned(logit_batches):
    probs = [torch.softmax(o["logits_u_w"].detach(), 1) for o in logit_batches]
    mean = torch.stack([p.mean(0) for p in probs]).mean(0)
    out = probs[-1] / mean
    return out / out.sum(1, keepdim=True)


def test_smoothing_starts_once_bank_holds_one_step():
    crit = make_comatch(bank_size=16)  # one step pushes B + N = 16 entries
    o1, o2 = step_outputs(5), step_outputs(6)
    out1 = crit(**o1)
    assert torch.allclose(out1.pseudo_labels, aligned([o1]), atol=1e-6), "empty bank: no smoothing"
    assert len(crit.bank) == 16
    out2 = crit(**o2)
    assert (out2.pseudo_labels - aligned([o1, o2])).abs().max() > 1e-3, "full step in bank: smoothing"


def test_fixmatch_reduces_to_its_definition():
    crit = build_criterion("fixmatch", C, D, 64, threshold=0.7, lambda_u=1.0)
    assert crit.unlabelled_views == ("weak", "strong") and crit.bank is None and crit.aligner is None
    o = step_outputs(7)
    out = crit(**{k: o[k] for k in ("logits_x", "targets_x", "logits_u_w", "logits_u_s0")})
    p = torch.softmax(o["logits_u_w"].detach(), 1)
    conf, hard = p.max(1)
    mask = (conf >= 0.7).float()
    l_u = (F.cross_entropy(o["logits_u_s0"], hard, reduction="none") * mask).mean()
    expected = F.cross_entropy(o["logits_x"], o["targets_x"]) + l_u
    assert 0 < mask.mean() < 1, "the case must exercise the mask"
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.loss_c.item() == 0.0


def test_supervised_is_cross_entropy_only():
    crit = build_criterion("supervised", C, D, 64)
    assert isinstance(crit, SupervisedCriterion) and crit.unlabelled_views == ()
    o = step_outputs(8)
    out = crit(o["logits_x"], o["targets_x"])
    assert out.loss.item() == pytest.approx(F.cross_entropy(o["logits_x"], o["targets_x"]).item())
    assert out.loss_u.item() == 0.0 and out.loss_c.item() == 0.0


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown method 'nonexistent'; choose one of comatch, fixmatch, supervised, mixmatch"):
        build_criterion("nonexistent", C, D, 64)
    with pytest.raises(ValueError, match="MixMatch has no stand-alone criterion"):
        build_criterion("mixmatch", C, D, 64)


def test_the_public_loss_api_is_the_methods_packages():
    """One registry: ``comatch.build_criterion`` builds through ``comatch.methods.METHODS``, and
    the criteria it returns are the ones the training methods run."""
    import comatch
    from comatch.methods import METHODS, MethodContext, Supervised
    from comatch.methods import build_criterion as registry_build

    assert comatch.build_criterion is registry_build
    assert comatch.SupervisedCriterion is SupervisedCriterion
    assert isinstance(Supervised().criterion, SupervisedCriterion)
    for name in ("comatch", "fixmatch"):
        config = cfg.build_config(method=name)
        method = METHODS[name].from_config(config, MethodContext(num_classes=C, proj_dim=D))
        assert type(method.criterion) is type(build_criterion(name, C, D, 64)) is comatch.CoMatchCriterion


# ----------------------------------------------------------------- ablation switches
def test_contrastive_off_gives_no_graph_loss_and_no_gradient():
    crit = make_comatch(contrastive=False)
    assert crit.unlabelled_views == ("weak", "strong")
    o = step_outputs(9)
    out = crit(**o)
    out.loss.backward()
    assert out.loss_c.item() == 0.0 and o["z_u_s0"].grad is None and o["z_u_s1"].grad is None


def test_smoothing_off_leaves_pseudo_labels_aligned_only():
    crit = make_comatch(smoothing=False)
    assert crit.bank is None
    for seed in (10, 11):
        o = step_outputs(seed)
        out = crit(**o)
    p = torch.softmax(o["logits_u_w"], 1)
    mean = (torch.softmax(step_outputs(10)["logits_u_w"], 1).mean(0) + p.mean(0)) / 2
    aligned = p / mean
    assert torch.allclose(out.pseudo_labels, aligned / aligned.sum(1, keepdim=True), atol=1e-6)


def test_alignment_off_uses_raw_probabilities():
    crit = make_comatch(alignment=False, smoothing=False)
    o = step_outputs(12)
    assert torch.allclose(crit(**o).pseudo_labels, torch.softmax(o["logits_u_w"], 1), atol=1e-6)


def test_self_loop_only_graph_has_no_edges():
    crit = make_comatch(self_loop_only=True, graph_threshold=0.0)
    out = crit(**step_outputs(13))
    assert out.stats["graph_edges"].item() == 0.0
    o = step_outputs(13)
    wz = torch.softmax(o["z_u_s0"] @ o["z_u_s1"].T / 0.2, 1)
    assert out.loss_c.item() == pytest.approx(-torch.log(wz.diagonal()).mean().item(), rel=1e-5)


def test_hard_labels_use_one_hot_targets():
    crit = make_comatch(hard_labels=True, smoothing=False, alignment=False, graph_threshold=0.5)
    o = step_outputs(14)
    out = crit(**o)
    p = torch.softmax(o["logits_u_w"].detach(), 1)
    conf, hard = p.max(1)
    mask = (conf >= 0.6).float()
    l_u = (F.cross_entropy(o["logits_u_s0"], hard, reduction="none") * mask).mean()
    assert out.loss_u.item() == pytest.approx(l_u.item(), rel=1e-6)
    same_class = (hard[:, None] == hard[None, :]).float()
    assert out.stats["graph_edges"].item() == pytest.approx((same_class.sum(1) - 1).mean().item())
