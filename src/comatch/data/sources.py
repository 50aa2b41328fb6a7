"""Resolve a run's data: labelled, unlabelled, validation and test datasets.

Every dataset here yields ``(uint8 image [C, H, W], label)``; unlabelled datasets keep their
ground truth where it is known (benchmarks), for logging pseudo-label accuracy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from comatch.data.datasets import TensorImages
from comatch.data.digits import load_digits_split
from comatch.data.sampling import labels_per_class, select_labelled
from comatch.errors import UserError

DATASETS = ("digits",)


@dataclass
class RunData:
    """The datasets of one run.

    Attributes:
        num_classes: number of classes.
        class_names: their names, in label order.
        labelled: the labelled subset.
        unlabelled: the unlabelled pool (labels are ground truth or -1, never trained on).
        val: the validation part (for tuning), or None.
        test: the test part.
        labelled_ids: which training-pool items were labelled (saved in the run directory).
        mean, std: per-channel normalisation statistics in [0, 1].
    """

    num_classes: int
    class_names: list[str]
    labelled: Dataset
    unlabelled: Dataset
    val: Dataset | None
    test: Dataset
    labelled_ids: list[int] = field(default_factory=list)
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of uint8 images ``[N, C, H, W]``."""
    pixels = images.float().div(255).transpose(0, 1).reshape(images.shape[1], -1)  # [C, N*H*W]
    return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).clamp_min(1e-3).tolist())


def _labels_wanted(num_labels: int | None, per_class: int | None, num_classes: int) -> int:
    if num_labels is not None:
        return labels_per_class(num_labels, num_classes)
    if per_class is None:
        raise UserError("set data.labels_per_class or data.num_labels")
    return per_class


def build_data(
    dataset: str,
    *,
    seed: int,
    labels_per_class: int | None,
    num_labels: int | None = None,
    val_per_class: int = 0,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> RunData:
    """Load ``dataset`` and draw the run's labelled subset with ``seed``.

    Raises:
        UserError: unknown dataset or an impossible label request.
    """
    if dataset != "digits":
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    split = load_digits_split(val_per_class)
    per_class = _labels_wanted(num_labels, labels_per_class, 10)
    labelled_ids = select_labelled(split.train_labels.numpy(), per_class, seed)
    pool = TensorImages(split.train_images, split.train_labels)
    stats_mean, stats_std = channel_stats(split.train_images)
    return RunData(
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        labelled=Subset(pool, labelled_ids.tolist()),
        unlabelled=pool,
        val=TensorImages(split.val_images, split.val_labels) if len(split.val_labels) else None,
        test=TensorImages(split.test_images, split.test_labels),
        labelled_ids=labelled_ids.tolist(),
        mean=tuple(mean) if mean else stats_mean,
        std=tuple(std) if std else stats_std,
    )
