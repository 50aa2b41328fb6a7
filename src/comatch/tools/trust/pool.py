"""A network's view of a run's data: outputs on the labelled images and the unlabelled pool.

Shared by ``comatch suggest``, the out-of-distribution scores of the report and
``data.exclude_outliers``. Every image goes through the trainer's evaluation view (the
deterministic one; for the weak view without its random crop).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from comatch.data import RunData
from comatch.data.images import ImageFiles
from comatch.data.labels import labels_of
from comatch.data.loaders import eval_loader
from comatch.data.images import View
from comatch.training.evaluation import Preprocess, network_outputs


@dataclass
class Outputs:
    """A network's outputs on some images (CPU tensors).

    Attributes:
        logits: ``[N, C]``. feats: encoder features ``[N, F]`` (unit length).
        z: projection embeddings ``[N, D]`` (unit length). labels: ``[N]`` (-1 unknown).
    """

    logits: torch.Tensor
    feats: torch.Tensor
    z: torch.Tensor
    labels: torch.Tensor


def outputs_on(model: nn.Module, dataset: Dataset, view: View, preprocess: Preprocess,
               batch_size: int = 256) -> Outputs:
    """Run ``model`` (eval mode) over ``dataset`` in order."""
    feats, logits, z, labels = network_outputs(model, eval_loader(dataset, view, batch_size), preprocess)
    return Outputs(logits, F.normalize(feats.flatten(1), dim=1), F.normalize(z, dim=1), labels)


def centred(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``normalise(x - mean)`` row by row: the features of an untrained network all point the
    same way (ReLU outputs), so their cosine similarities are near 1 until centred."""
    return F.normalize(x - mean, dim=1)


def candidate_rows(data: RunData) -> np.ndarray:
    """Rows of ``data.unlabelled`` that are not labelled images (sorted).

    In-memory data: the labelled images are rows of the same pool (``labelled_ids``). Files:
    unlabelled files whose path is a labelled file's.
    """
    size = len(data.unlabelled)
    if isinstance(data.labelled, Subset) and data.labelled.dataset is _root(data.unlabelled):
        taken = set(int(i) for i in data.labelled_ids)  # type: ignore[arg-type]
        return np.array([i for i in range(size) if root_index(data.unlabelled, i) not in taken], dtype=np.int64)
    if isinstance(data.labelled, ImageFiles) and isinstance(_root(data.unlabelled), ImageFiles):
        labelled = set(data.labelled.paths)
        root = _root(data.unlabelled)
        return np.array([i for i in range(size) if root.paths[root_index(data.unlabelled, i)] not in labelled],
                        dtype=np.int64)
    return np.arange(size, dtype=np.int64)


def _root(dataset: Dataset) -> Dataset:
    """The underlying (non-Subset) dataset."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def root_index(dataset: Dataset, index: int) -> int:
    """The index in the underlying (non-Subset) dataset of row ``index``."""
    while isinstance(dataset, Subset):
        index = int(dataset.indices[index])
        dataset = dataset.dataset
    return index


def path_of(dataset: Dataset, index: int) -> str | None:
    """The file of row ``index`` of ``dataset``, or None for in-memory images."""
    root = _root(dataset)
    return root.paths[root_index(dataset, index)] if isinstance(root, ImageFiles) else None


def labelled_targets(data: RunData) -> torch.Tensor:
    """The labelled images' classes ``[L]``."""
    return labels_of(data.labelled)


def saved_run_data(config: Any, run_dir: Path) -> RunData:
    """The run's data, with its saved labelled subset when it has one (``labelled.json``)."""
    from comatch.data.preprocessing import run_data

    saved = Path(run_dir) / "labelled.json"
    if saved.is_file() and not config.data.labeled_list:
        config = config.model_copy(deep=True)
        config.data.labeled_list = str(saved)
    return run_data(config)
