"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes).

Split once, with a fixed seed that does not depend on the run: 30% test, then
``val_per_class`` images per class of the rest as a validation part for tuning. The remaining
training pool is the unlabelled set; each run's labelled images are drawn from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SPLIT_SEED = 20211011  # fixed: the test part is the same for every run and every seed
TEST_FRACTION = 0.3


@dataclass
class DigitsSplit:
    """uint8 images ``[N, 1, 8, 8]`` (0-255) and labels ``[N]`` of the fixed parts."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_digits_split(val_per_class: int) -> DigitsSplit:
    """The fixed train / validation / test parts of the digits data.

    Args:
        val_per_class: training images per class moved to the validation part.
    """
    from sklearn.datasets import load_digits  # imported here: scikit-learn costs ~70 MB in every process
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # Pixel values are 0..16; scale to the 0..255 range every other dataset uses.
    images = np.clip(bunch.images * 16.0, 0, 255).round().astype(np.uint8)[:, None]  # [N, 1, 8, 8]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    rng = np.random.default_rng(SPLIT_SEED)
    val_idx = np.concatenate(
        [rng.choice(train_idx[labels[train_idx] == c], val_per_class, replace=False) for c in range(10)]
    ) if val_per_class else np.array([], dtype=np.int64)
    pool_idx = np.setdiff1d(train_idx, val_idx)

    def part(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.sort(idx)
        return torch.from_numpy(images[idx]), torch.from_numpy(labels[idx])

    return DigitsSplit(*part(pool_idx), *part(val_idx), *part(test_idx))
