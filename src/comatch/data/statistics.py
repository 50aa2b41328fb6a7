"""What a run learns from its data before training: image size, channels, normalisation.

Each is taken from the configuration when given there, else computed from a fixed sample of
at most :data:`SAMPLE` training images (the same sample for every seed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from comatch.data.images import FileCheck, check_files, decode_image, fit_square

SAMPLE = 2048
"""Largest number of images statistics are computed from."""
MAX_AUTO_SIZE = 128
"""Largest image size chosen automatically (larger images are scaled down to it)."""
STATS_SEED = 20211013


def sample_indices(n: int, k: int = SAMPLE) -> np.ndarray:
    """A fixed, sorted sample of at most ``k`` of ``range(n)``."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(STATS_SEED).choice(n, size=k, replace=False))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of uint8 images ``[N, C, H, W]`` (a sample of them)."""
    images = images[torch.from_numpy(sample_indices(len(images)))]
    pixels = images.float().div(255).transpose(0, 1).reshape(images.shape[1], -1)  # [C, n*H*W]
    return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).clamp_min(1e-3).tolist())


def file_stats(paths: Sequence[str], size: int, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of a sample of image files, decoded as in training."""
    chosen = [paths[i] for i in sample_indices(len(paths))]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)

    def moments(path: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        try:
            pixels = decode_image(path, size, channels).double().div(255).reshape(channels, -1)  # [C, S*S]
        except Exception:  # noqa: BLE001 -- unreadable files are skipped elsewhere
            return None
        return pixels.mean(1), pixels.pow(2).mean(1)

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        results = [r for r in pool.map(moments, chosen) if r is not None]
    for mean, square in results:
        total += mean
        squares += square
    count = max(len(results), 1)
    mean = total / count
    std = (squares / count - mean.pow(2)).clamp_min(1e-6).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def image_properties(paths: Sequence[str], checks: Sequence[FileCheck]) -> tuple[int, int]:
    """``(size, channels)`` suited to a set of files: median shorter side and colour.

    The size is the median shorter side of the sample, rounded to a multiple of 4 and kept
    within [8, :data:`MAX_AUTO_SIZE`]; channels is 1 when every sampled file is grayscale.

    Args:
        paths: the files.
        checks: their checks (may be empty); the headers of sampled files whose check did not
            read them (a large folder's files outside its check sample) are read now.
    """
    index = sample_indices(len(paths))
    known = [checks[i] if checks and checks[i].short_side else None for i in index]
    headers = iter(check_files([paths[i] for i, c in zip(index, known) if c is None], decode=False))
    found = [c or next(headers) for c in known]
    found = [c for c in found if c.ok] or [FileCheck(True, 32, False)]
    side = int(np.median([c.short_side for c in found]))
    size = int(min(MAX_AUTO_SIZE, max(8, 4 * round(side / 4))))
    return size, 1 if all(c.gray for c in found) else 3


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` with ``channels`` channels (luma for gray, repeats for RGB)."""
    if images.shape[1] == channels:
        return images
    if channels == 1:
        return torch.cat([F.rgb_to_grayscale(chunk) for chunk in images.split(4096)])
    return images.expand(-1, 3, -1, -1).contiguous()


def to_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` fitted to ``size x size`` as files are, in chunks.

    :func:`~comatch.data.images.fit_square` (shorter side to ``size``, centre crop); for the
    square benchmark images that is a plain antialiased resize.
    """
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return torch.cat([fit_square(chunk, size) for chunk in images.split(4096)])
