"""The five public functions: hand-worked cases, an independent loop reference, invariants."""

import math

import pytest
import torch

from comatch import (
    contrastive_graph_loss,
    distribution_alignment,
    memory_smoothed_labels,
    pseudo_label_graph,
    pseudo_label_loss,
)


def random_probs(n: int, c: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, c, generator=g) * 2, dim=1)


def random_unit(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)


# ------------------------------------------------------------- references written from the paper
def ref_smoothing(p, z, bank_z, bank_p, alpha, T):
    out = []
    for b in range(len(p)):
        weights = [math.exp(float(z[b] @ bank_z[k]) / T) for k in range(len(bank_z))]
        total = sum(weights)
        row = [alpha * float(p[b, c]) + (1 - alpha) * sum(w / total * float(bank_p[k, c]) for k, w in enumerate(weights))
               for c in range(p.shape[1])]
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


def ref_graph(q, t):
    n = len(q)
    w = [[1.0 if b == j else (float(q[b] @ q[j]) if float(q[b] @ q[j]) >= t else 0.0) for j in range(n)] for b in range(n)]
    return torch.tensor([[x / sum(row) for x in row] for row in w], dtype=torch.float64)


def ref_contrastive(z0, z1, graph, T):
    total = 0.0
    for b in range(len(z0)):
        sims = [math.exp(float(z0[b] @ z1[j]) / T) for j in range(len(z1))]
        s = sum(sims)
        total += -sum(float(graph[b, j]) * math.log(sims[j] / s) for j in range(len(z1)))
    return total / len(z0)


# ------------------------------------------------------------- distribution_alignment
def test_alignment_hand_case():
    probs = torch.tensor([[0.5, 0.5], [0.8, 0.2]])
    mean = torch.tensor([0.8, 0.2])
    # [0.5/0.8, 0.5/0.2] = [0.625, 2.5] -> [0.2, 0.8]; [1, 1] -> [0.5, 0.5]
    expected = torch.tensor([[0.2, 0.8], [0.5, 0.5]])
    assert torch.allclose(distribution_alignment(probs, mean), expected)


def test_alignment_rows_sum_to_one_and_uniform_mean_is_identity():
    probs = random_probs(16, 7)
    aligned = distribution_alignment(probs, torch.rand(7) + 0.05)
    assert torch.allclose(aligned.sum(1), torch.ones(16), atol=1e-6)
    assert torch.allclose(distribution_alignment(probs, torch.full((7,), 1 / 7)), probs, atol=1e-6)


# ------------------------------------------------------------- memory_smoothed_labels
def test_smoothing_hand_case():
    probs = torch.tensor([[1.0, 0.0]])
    feats = torch.tensor([[1.0, 0.0]])
    bank_feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank_probs = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # a = softmax([1/T, 0]) with T = 1 -> [e/(e+1), 1/(e+1)]
    a0 = math.e / (math.e + 1)
    expected = torch.tensor([[0.5 * 1 + 0.5 * (1 - a0), 0.5 * a0]])
    out = memory_smoothed_labels(probs, feats, bank_feats, bank_probs, 0.5, 1.0)
    assert torch.allclose(out, expected, atol=1e-6)


def test_smoothing_matches_loop_reference():
    p, z = random_probs(5, 4, 1), random_unit(5, 6, 2)
    bz, bp = random_unit(9, 6, 3), random_probs(9, 4, 4)
    out = memory_smoothed_labels(p.double(), z.double(), bz.double(), bp.double(), 0.9, 0.2)
    assert torch.allclose(out, ref_smoothing(p, z, bz, bp, 0.9, 0.2), atol=1e-10)
    assert torch.allclose(out.sum(1), torch.ones(5, dtype=torch.float64))


def test_smoothing_alpha_one_and_empty_bank_leave_probs_unchanged():
    p, z = random_probs(5, 4), random_unit(5, 6)
    assert torch.allclose(memory_smoothed_labels(p, z, random_unit(3, 6), random_probs(3, 4), 1.0, 0.2), p)
    assert torch.equal(memory_smoothed_labels(p, z, torch.empty(0, 6), torch.empty(0, 4), 0.9, 0.2), p)


# ------------------------------------------------------------- pseudo_label_graph
def test_graph_hand_case():
    q = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    # q.q^T = [[1, .9, 0], [.9, .82, .1], [0, .1, 1]]; t = 0.5 keeps (0,1), (1,0); diag = 1
    expected = torch.tensor([[1 / 1.9, 0.9 / 1.9, 0.0], [0.9 / 1.9, 1 / 1.9, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(pseudo_label_graph(q, 0.5), expected, atol=1e-6)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.8, 1.0])
def test_graph_matches_loop_reference(t):
    q = random_probs(7, 3, 5)
    assert torch.allclose(pseudo_label_graph(q.double(), t), ref_graph(q, t), atol=1e-10)


def test_graph_threshold_limits():
    q = random_probs(6, 3)
    full = pseudo_label_graph(q, 0.0)
    assert (full > 0).all(), "threshold 0 connects every pair"
    assert torch.allclose(full.sum(1), torch.ones(6))
    assert torch.equal(pseudo_label_graph(q, 1.01), torch.eye(6)), "t > 1 leaves only self-loops"


def test_graph_is_symmetric_before_normalisation():
    q = random_probs(8, 4)
    g = pseudo_label_graph(q, 0.2)
    unnormalised = g * (g > 0).float()
    row_sums = (q @ q.T * ((q @ q.T) >= 0.2)).fill_diagonal_(1).sum(1, keepdim=True)
    assert torch.allclose(unnormalised * row_sums, (unnormalised * row_sums).T, atol=1e-6)


# ------------------------------------------------------------- contrastive_graph_loss
def test_contrastive_hand_case_identity_graph():
    z = torch.eye(2)
    # W^z rows: softmax([1/T, 0]); identity target -> loss = -log(e^(1/T) / (e^(1/T) + 1))
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 1))
    assert contrastive_graph_loss(z, z, torch.eye(2), 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_matches_loop_reference_and_rectangular_graph():
    z0, z1 = random_unit(4, 5, 1), random_unit(6, 5, 2)
    graph = torch.rand(4, 6)
    graph = graph / graph.sum(1, keepdim=True)
    out = contrastive_graph_loss(z0.double(), z1.double(), graph.double(), 0.2)
    assert out.item() == pytest.approx(ref_contrastive(z0.double(), z1.double(), graph.double(), 0.2), rel=1e-9)


def test_contrastive_gradients_reach_both_views_not_the_graph():
    z0 = random_unit(4, 5, 1).requires_grad_()
    z1 = random_unit(4, 5, 2).requires_grad_()
    q = random_probs(4, 3).requires_grad_()
    graph = pseudo_label_graph(q, 0.1)
    assert not graph.requires_grad
    contrastive_graph_loss(z0, z1, graph, 0.2).backward()
    assert z0.grad.abs().sum() > 0 and z1.grad.abs().sum() > 0
    assert q.grad is None


# ------------------------------------------------------------- pseudo_label_loss
def test_pseudo_label_loss_hand_case():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = torch.tensor([[0.96, 0.04], [0.6, 0.4]])
    # row 0 passes tau = 0.95: H = log 2; row 1 is masked; mean over N = 2
    expected = math.log(2.0) / 2
    assert pseudo_label_loss(logits, targets, 0.95).item() == pytest.approx(expected, rel=1e-6)


def test_pseudo_label_loss_threshold_limits_and_gradients():
    logits = torch.randn(5, 3, requires_grad=True)
    targets = random_probs(5, 3).requires_grad_()
    assert pseudo_label_loss(logits, targets, 1.01).item() == 0.0
    full = pseudo_label_loss(logits, targets, 0.0)
    manual = -(targets * torch.log_softmax(logits, 1)).sum(1).mean()
    assert full.item() == pytest.approx(manual.item(), rel=1e-6)
    full.backward()
    assert logits.grad.abs().sum() > 0 and targets.grad is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_functions_accept_other_dtypes(dtype):
    p, z = random_probs(4, 3).to(dtype), random_unit(4, 5).to(dtype)
    assert distribution_alignment(p, p.mean(0)).dtype == dtype
    assert memory_smoothed_labels(p, z, z, p, 0.9, 0.2).dtype == dtype
    assert pseudo_label_graph(p, 0.5).dtype == dtype
    assert torch.isfinite(contrastive_graph_loss(z, z, torch.eye(4, dtype=dtype), 0.1))
    assert torch.isfinite(pseudo_label_loss(torch.randn(4, 3, dtype=dtype), p, 0.5))
