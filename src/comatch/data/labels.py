"""The class labels of a dataset without decoding its images."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset


def labels_of(dataset: Dataset) -> torch.Tensor:
    """The label of every item ``[N]`` (-1 where unknown).

    In-memory and file datasets keep their labels in a ``labels`` tensor; a ``Subset`` takes
    its rows. Other datasets are read item by item.
    """
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, torch.Tensor):
        return labels.long()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)  # type: ignore[arg-type]


def class_counts(dataset: Dataset, num_classes: int) -> tuple[int, ...]:
    """Images per class ``[C]`` (unknown labels are not counted)."""
    labels = labels_of(dataset)
    return tuple(torch.bincount(labels[labels >= 0], minlength=num_classes).tolist())
