"""The large-scale variant: queue, extended graphs, ramp, momentum encoder, reduction to plain CoMatch."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from comatch import CoMatchCriterion, pseudo_label_graph
from comatch.config import build_config
from comatch.errors import UserError
from comatch.models import build_model
from comatch.methods.momentum import EmbeddingQueue, MomentumCoMatchCriterion, MomentumEncoder
from comatch.methods.schedule import ramped_lambda_c
from comatch.methods import Batch, CoMatch, MomentumCoMatch

B, N, C, D = 4, 6, 3, 8


def test_queue_wraps_and_reads_only_written_entries():
    queue = EmbeddingQueue(size=5, feature_dim=1, num_classes=2)
    assert queue.contents()[0].shape == (0, 1)
    queue.push(torch.tensor([[1.0], [2.0], [3.0]]), torch.eye(2)[[0, 1, 0]])
    assert queue.contents()[0].flatten().tolist() == [1.0, 2.0, 3.0]
    queue.push(torch.tensor([[4.0], [5.0], [6.0], [7.0]]), torch.eye(2)[[1, 1, 0, 0]])
    # 4, 5 fill slots 3, 4; 6, 7 wrap to slots 0, 1
    assert queue.feats.flatten().tolist() == [6.0, 7.0, 3.0, 4.0, 5.0]
    assert queue.probs[:, 1].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert len(queue) == 5 and int(queue.ptr) == 2
    restored = EmbeddingQueue(size=5, feature_dim=1, num_classes=2)
    restored.load_state_dict(queue.state_dict())
    restored.push(torch.tensor([[8.0]]), torch.eye(2)[[0]])
    queue.push(torch.tensor([[8.0]]), torch.eye(2)[[0]])
    assert torch.equal(restored.feats, queue.feats) and int(restored.ptr) == int(queue.ptr) == 3


def test_extended_pseudo_label_graph_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    queued = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    graph = pseudo_label_graph(q, 0.6, queued)
    # row 0: self-loop 1, q0.q1 = 0 (cut), q0.k0 = 1, q0.k1 = 0.5 (< 0.6, cut), q0.k2 = 0
    assert torch.allclose(graph, torch.tensor([[0.5, 0.0, 0.5, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0, 0.5]]))


def test_extended_graph_shape_rows_and_self_loops():
    g = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(N, C, generator=g) * 3, 1)
    queued = torch.softmax(torch.randn(10, C, generator=g) * 3, 1)
    for t in (0.0, 0.5, 2.0):
        graph = pseudo_label_graph(q, t, queued)
        assert graph.shape == (N, N + 10)
        assert torch.allclose(graph.sum(1), torch.ones(N))
        assert (graph[:, :N].diagonal() > 0).all(), "self-loops are always kept"
    only_self = pseudo_label_graph(q, 2.0, queued)
    assert torch.allclose(only_self[:, :N], torch.eye(N)) and only_self[:, N:].sum() == 0
    assert torch.allclose(pseudo_label_graph(q, 0.5, queued[:0]), pseudo_label_graph(q, 0.5))


def outputs(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    unit = lambda n: F.normalize(torch.randn(n, D, generator=g), dim=1)  # noqa: E731
    return {
        "logits_x": torch.randn(B, C, generator=g), "targets_x": torch.randint(0, C, (B,), generator=g),
        "logits_u_w": torch.randn(N, C, generator=g) * 4, "logits_u_s0": torch.randn(N, C, generator=g),
        "z_x": unit(B), "z_u_w": unit(N), "z_u_s0": unit(N), "z_u_s1": unit(N),
    }


SETTINGS = dict(threshold=0.6, graph_threshold=0.3, da_window=8)


def test_criterion_extends_the_embedding_graph_with_the_queue():
    crit = MomentumCoMatchCriterion(C, D, 64, queue_size=2 * N, **SETTINGS)
    first, second = outputs(1), outputs(2)
    q1 = crit(**first).pseudo_labels
    assert len(crit.queue) == N and torch.allclose(crit.queue.contents()[0], first["z_u_s1"])
    out = crit(**second)
    graph = pseudo_label_graph(out.pseudo_labels, 0.3, q1)  # [N, 2N]
    columns = torch.cat([second["z_u_s1"], first["z_u_s1"]])  # [2N, D]
    log_wz = torch.log_softmax(second["z_u_s0"] @ columns.T / 0.2, 1)
    assert out.loss_c.item() == pytest.approx(-(graph * log_wz).sum(1).mean().item(), rel=1e-5)
    assert len(crit.queue) == 2 * N


def test_empty_queue_equals_plain_criterion_and_state_round_trips():
    plain = CoMatchCriterion(C, D, 64, **SETTINGS)
    momentum = MomentumCoMatchCriterion(C, D, 64, queue_size=0, **SETTINGS)
    for seed in (3, 4):  # the second step smooths with the bank
        a, b = plain(**outputs(seed)), momentum(**outputs(seed))
        for part in ("loss", "loss_x", "loss_u", "loss_c"):
            assert getattr(a, part).item() == pytest.approx(getattr(b, part).item(), rel=1e-6), part
    with_queue = MomentumCoMatchCriterion(C, D, 64, queue_size=N, **SETTINGS)
    with_queue(**outputs(5))
    restored = MomentumCoMatchCriterion(C, D, 64, queue_size=N, **SETTINGS)
    restored.load_state_dict(with_queue.state_dict())
    assert torch.equal(restored.queue.feats, with_queue.queue.feats) and len(restored.queue) == N


def test_lambda_c_ramp_per_epoch_of_the_unlabelled_set():
    # 100 unlabelled images, 30 per step: epoch 0 is steps 0-3, epoch 1 steps 4-7, ...
    weights = [ramped_lambda_c(10.0, k, 30, 100) for k in range(8)]
    assert weights == [1, 1, 1, 1, 2, 2, 2, 2], "ceil(100 / 30) = 4 steps per epoch"
    assert ramped_lambda_c(2.0, 10_000, 30, 100) == 2.0


def test_momentum_encoder_is_an_exponential_average():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    momentum = MomentumEncoder(model, momentum=0.75)
    before = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(4.0)
        model[1].running_mean.fill_(8.0)
    model[1].num_batches_tracked.fill_(5)
    momentum.update(model)
    assert torch.allclose(momentum.module[0].weight, before + 1.0)  # 0.75 * w + 0.25 * (w + 4)
    assert torch.allclose(momentum.module[1].running_mean, torch.full((2,), 2.0))
    assert int(momentum.module[1].num_batches_tracked) == 5
    assert not any(p.requires_grad for p in momentum.parameters())
    with pytest.raises(ValueError, match="momentum must lie in"):
        MomentumEncoder(model, momentum=1.0)


def test_momentum_zero_and_empty_queue_reduce_to_the_plain_variant():
    """With m = 0 the momentum encoder is the network; BatchNorm in eval mode makes the
    forward passes independent of how the views are batched."""
    torch.manual_seed(0)
    model = build_model("digits_cnn", C, in_channels=1, proj_dim=D).eval()
    images_x, views = torch.rand(B, 1, 8, 8), [torch.rand(N, 1, 8, 8) for _ in range(3)]
    targets = torch.randint(0, C, (B,))
    settings = SETTINGS | {"threshold": 0.3}  # every max(q) >= 1/3: L_u counts every sample
    plain = CoMatch(CoMatchCriterion(C, D, 64, defer_updates=True, **settings), lambda_c=1.0)
    variant = MomentumCoMatch(MomentumCoMatchCriterion(C, D, 64, queue_size=0, defer_updates=True, **settings),
                              MomentumEncoder(build_model("digits_cnn", C, in_channels=1, proj_dim=D), 0.0).eval(),
                              lambda_c=1.0)
    variant.momentum_encoder.update(model)  # m = 0: the momentum encoder is the network

    def encode(images, network=None):
        return (model if network is None else network)(images)

    batch = Batch({"weak": images_x}, targets, dict(zip(("weak", "strong", "contrastive"), views)))
    a, b = plain(batch, encode), variant(batch, encode)
    plain.commit(model)
    variant.commit(model)
    assert a.loss_u.item() > 0 and a.loss_c.item() > 0
    for part in ("loss", "loss_x", "loss_u", "loss_c"):
        assert getattr(a, part).item() == pytest.approx(getattr(b, part).item(), rel=1e-5), part
    assert torch.allclose(a.pseudo_labels, b.pseudo_labels, atol=1e-6)
    assert torch.allclose(plain.criterion.bank.feats, variant.criterion.bank.feats, atol=1e-6)


def test_config_of_the_variant_is_validated():
    config = build_config(overrides=["comatch.momentum=0.996", "comatch.queue_size=100", "comatch.lambda_c_ramp=true"])
    assert config.comatch.momentum == 0.996 and config.comatch.queue_size == 100
    with pytest.raises(UserError, match="queue_size needs the momentum encoder"):
        build_config(overrides=["comatch.queue_size=100"])
    with pytest.raises(UserError, match="comatch.momentum"):
        build_config(overrides=["comatch.momentum=1.0"])
