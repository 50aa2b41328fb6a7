"""The class metrics come from scikit-learn and give the values the hand-written versions gave."""

import pytest
import torch

from comatch.tools.inference.checkpoint import classification_metrics
from comatch.tools.inference.metrics import balanced_accuracy, confusion_matrix, labels_of, macro_f1, per_class_scores

# 3 classes; class 2 has no test images but 1 prediction: rows are true classes
WORKED = [[8, 1, 1],
          [1, 1, 0],
          [0, 0, 0]]


def test_labels_of_a_confusion_matrix_give_it_back():
    true, predicted = labels_of(WORKED)
    assert len(true) == 12
    assert confusion_matrix(torch.as_tensor(true), torch.as_tensor(predicted), 3).tolist() == WORKED


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_with_images():
    assert balanced_accuracy(WORKED) == pytest.approx((8 / 10 + 1 / 2) / 2)  # the class without images left out
    assert balanced_accuracy([[0, 0], [0, 0]]) is None


def test_macro_f1_averages_over_the_classes_with_images_or_predictions():
    f1 = [2 * 8 / (2 * 8 + 1 + 2), 2 * 1 / (2 * 1 + 1 + 1), 0.0]  # 2 TP / (2 TP + FP + FN)
    assert macro_f1(WORKED) == pytest.approx(sum(f1) / 3)
    assert macro_f1([[3, 0], [0, 0]]) == pytest.approx(1.0)  # class 1: neither images nor predictions


def test_per_class_scores_name_every_class():
    scores = per_class_scores(WORKED, ["cat", "dog", "emu"])
    assert scores["cat"] == pytest.approx({"precision": 8 / 9, "recall": 0.8, "f1": 16 / 19, "images": 10})
    assert scores["dog"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "images": 2})
    assert scores["emu"] == {"precision": 0.0, "recall": None, "f1": None, "images": 0}


def test_classification_metrics_are_unchanged():
    logits = torch.tensor([[3.0, 1, 0], [0, 2, 1], [0, 1, 2], [2, 0, 1], [1, 0, 2]])
    labels = torch.tensor([0, 1, 1, 2, 2])
    metrics = classification_metrics(logits, labels, ["a", "b", "c"])
    assert metrics["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]
    assert metrics["top1"] == pytest.approx(3 / 5)
    assert metrics["per_class_accuracy"] == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.5})
    assert metrics["top5"] == pytest.approx(1.0)
