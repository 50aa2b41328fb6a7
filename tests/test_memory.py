"""Distribution aligner and memory bank: ring buffer, written slots, state round trips."""

import torch

from comatch import DistributionAligner, MemoryBank


def test_bank_fills_then_wraps_remainder_to_start():
    bank = MemoryBank(size=5, feature_dim=1, num_classes=1)
    assert len(bank) == 0 and bank.contents()[0].shape == (0, 1)
    bank.push(torch.tensor([[1.0], [2.0], [3.0]]), torch.zeros(3, 1))
    feats, _ = bank.contents()
    assert feats.flatten().tolist() == [1.0, 2.0, 3.0], "reads only written slots"
    bank.push(torch.tensor([[4.0], [5.0], [6.0]]), torch.zeros(3, 1))
    # 4, 5 fill slots 3, 4; 6 wraps to slot 0
    assert bank.feats.flatten().tolist() == [6.0, 2.0, 3.0, 4.0, 5.0]
    assert len(bank) == 5 and int(bank.ptr) == 1


def test_bank_push_larger_than_bank_keeps_last_entries():
    bank = MemoryBank(size=3, feature_dim=1, num_classes=2)
    bank.push(torch.arange(7.0).view(7, 1), torch.zeros(7, 2))
    assert sorted(bank.feats.flatten().tolist()) == [4.0, 5.0, 6.0]


def test_bank_state_dict_round_trip_restores_pointer_and_fill():
    bank = MemoryBank(size=4, feature_dim=2, num_classes=3)
    bank.push(torch.randn(3, 2), torch.rand(3, 3))
    restored = MemoryBank(size=4, feature_dim=2, num_classes=3)
    restored.load_state_dict(bank.state_dict())
    assert len(restored) == 3
    assert torch.equal(restored.feats, bank.feats) and torch.equal(restored.probs, bank.probs)
    # The next push continues at the same slot in both.
    new = torch.randn(2, 2), torch.rand(2, 3)
    bank.push(*new)
    restored.push(*new)
    assert torch.equal(restored.feats, bank.feats) and int(restored.ptr) == int(bank.ptr) == 1


def test_aligner_averages_last_window_batch_means():
    aligner = DistributionAligner(num_classes=2, window=2)
    assert torch.allclose(aligner.mean_probs, torch.tensor([0.5, 0.5]))
    aligner.update(torch.tensor([[1.0, 0.0]]))
    aligner.update(torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    aligner.update(torch.tensor([[0.5, 0.5]]))  # overwrites the first entry
    assert torch.allclose(aligner.mean_probs, torch.tensor([0.25, 0.75]))


def test_aligner_forward_updates_then_aligns():
    aligner = DistributionAligner(num_classes=2, window=4)
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3]])
    out = aligner(probs)
    # the mean of this batch is [0.8, 0.2]; aligned rows: [0.9/0.8, 0.1/0.2] normalised, ...
    row0 = torch.tensor([0.9 / 0.8, 0.1 / 0.2])
    assert torch.allclose(out[0], row0 / row0.sum())
    assert torch.allclose(out.sum(1), torch.ones(2))


def test_aligner_state_round_trip():
    aligner = DistributionAligner(num_classes=3, window=3)
    for _ in range(4):
        aligner.update(torch.softmax(torch.randn(5, 3), 1))
    restored = DistributionAligner(num_classes=3, window=3)
    restored.load_state_dict(aligner.state_dict())
    assert torch.allclose(restored.mean_probs, aligner.mean_probs)
    batch = torch.softmax(torch.randn(5, 3), 1)
    assert torch.allclose(restored(batch), aligner(batch))
