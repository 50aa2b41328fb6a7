import torch

from comatch.tools.report.representation import knn_accuracy


def test_knn_hand_case_and_vote_weighting():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    test = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert knn_accuracy(train, labels, test, torch.tensor([0, 1]), k=1) == 1.0
    # with k=3 the first query still wins class 0 (two close neighbours), the second
    # has one strong class-1 neighbour against two weak class-0 ones: similarity weighting decides
    assert knn_accuracy(train, labels, test, torch.tensor([0, 1]), k=3) == 1.0
    assert knn_accuracy(train, labels, test, torch.tensor([1, 0]), k=1) == 0.0


def test_knn_separable_clusters_score_one_and_random_labels_near_chance():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 5
    labels = torch.arange(4).repeat_interleave(50)
    feats = centres[labels] + torch.randn(200, 16, generator=g) * 0.1
    assert knn_accuracy(feats[::2], labels[::2], feats[1::2], labels[1::2]) == 1.0
    noise = torch.randn(2000, 16, generator=g)
    random_labels = torch.randint(0, 10, (2000,), generator=g)
    chance = knn_accuracy(noise[:1000], random_labels[:1000], noise[1000:], random_labels[1000:])
    assert 0.05 < chance < 0.16, "structure-free features score near 1/10"
