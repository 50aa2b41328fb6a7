"""The benchmark kinds keep their parts apart: a test image shows nothing a training image shows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import kinds  # noqa: E402


@pytest.fixture
def ramps(monkeypatch: pytest.MonkeyPatch) -> int:
    """Stand-in photographs of different sizes whose every pixel is its column's share of the
    width (0-255), so a crop's values say where it was cut; returns the widest's width."""
    sizes = [(300, 451), (512, 512), (1411, 1411), (427, 640), (500, 741)]
    photos = tuple(np.repeat(np.round(np.linspace(0, 255, w))[None, :, None].repeat(h, 0), 3, 2).astype(np.uint8)
                   for h, w in (sizes[c % len(sizes)] for c in range(len(kinds.PHOTOS))))
    monkeypatch.setattr(kinds, "colour_photographs", lambda: photos)
    return max(w for _, w in sizes)


def test_photo_crops_stay_inside_their_parts_band(ramps):
    rng = np.random.default_rng(0)
    labels = np.arange(60) % len(kinds.PHOTOS)
    for part, (left, right) in kinds.PHOTO_BANDS.items():
        crops = kinds.photo_crops(labels, part, rng)
        assert crops.shape == (60, 32, 32, 3) and crops.dtype == np.uint8
        # bicubic resizing of a ramp stays within a level or two of the ramp's values
        assert crops.min() >= left * 255 - 2, part
        assert crops.max() <= right * 255 + 2, part


def test_the_photos_parts_are_balanced_and_sized(ramps):
    parts, extra = kinds.draw_photos(unlabelled=50, test=40, per_class=3, seed=1)
    images, labels = parts["labeled"]
    assert images.shape == (30, 32, 32, 3)
    assert np.bincount(labels).tolist() == [3] * 10
    images, labels = parts["test"]
    assert images.shape == (40, 32, 32, 3)
    assert np.bincount(labels).tolist() == [4] * 10
    assert parts["unlabeled"][0].shape == (50, 32, 32, 3) and parts["unlabeled"][1] is None
    assert extra["photographs"] == list(kinds.PHOTOS)
    assert kinds.KINDS["photos"].classes == list(kinds.PHOTOS.values())
    # the test crops come from the right quarter of each photograph, the labelled ones from the left
    assert parts["test"][0].min() >= 0.75 * 255 - 2 and parts["labeled"][0].max() <= 0.25 * 255 + 2
