"""Classification metrics of a test set, computed by scikit-learn.

Every function here takes the confusion matrix (rows: true class, columns: predicted; counts),
the form the evaluation stores in its JSON, and hands scikit-learn the labels it stands for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

Confusion = Sequence[Sequence[int]] | torch.Tensor | np.ndarray


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> np.ndarray:
    """``[C, C]`` counts of ``labels`` (rows) against ``predicted`` (columns), every class listed."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    return sk_confusion(np.asarray(labels), np.asarray(predicted), labels=list(range(num_classes)))


def labels_of(confusion: Confusion) -> tuple[np.ndarray, np.ndarray]:
    """The ``(true, predicted)`` class arrays whose confusion matrix is ``confusion``."""
    counts = np.asarray(confusion, dtype=np.int64)
    cells = np.repeat(np.arange(counts.size), counts.reshape(-1))
    return cells // counts.shape[1], cells % counts.shape[1]


def balanced_accuracy(confusion: Confusion) -> float | None:
    """Mean per-class recall over the classes that have images (None: no images at all)."""
    from sklearn.metrics import recall_score

    true, predicted = labels_of(confusion)
    if not true.size:
        return None
    present = sorted(set(true.tolist()))  # sklearn's balanced_accuracy_score also leaves absent classes out
    return float(recall_score(true, predicted, labels=present, average="macro", zero_division=0))


def macro_f1(confusion: Confusion) -> float | None:
    """Unweighted mean of the per-class F1 over the classes that have images or predictions."""
    from sklearn.metrics import f1_score

    true, predicted = labels_of(confusion)
    if not true.size:
        return None
    return float(f1_score(true, predicted, average="macro", zero_division=0))


def per_class_scores(confusion: Confusion, class_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Precision, recall, F1 and the number of test images of every class, by class name.

    A class with no predictions has precision None; one with no images has recall and F1 None.
    """
    from sklearn.metrics import precision_recall_fscore_support

    true, predicted = labels_of(confusion)
    classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=classes, average=None, zero_division=np.nan)
    predicted_counts = np.bincount(predicted, minlength=len(classes))
    return {name: {"precision": None if not predicted_counts[i] else float(precision[i]),
                   "recall": None if not support[i] else float(recall[i]),
                   "f1": None if not support[i] else float(np.nan_to_num(f1[i])),
                   "images": int(support[i])}
            for i, name in enumerate(class_names)}
