"""The unknown-class screen shared by ``predict``, ``suggest`` and ``comatch label``.

An image is scored by how far its projection embedding ``z`` (unit length) lies from the
nearest class prototype:

    score(x) = 1 - max_c cos(z(x), m_c),   m_c = normalise(mean of z over class c's reference images)

The reference images of a class are its labelled images and the unlabelled images the model
gives that class with calibrated probability at least ``CONFIDENT`` (its confident
pseudo-labels: CoMatch's embeddings cluster by class, and the pool shows far more of each
class than the few labels). The operating point: an image is flagged as "not one of my
classes" when its score exceeds the ``KEEP`` quantile of the reference images' own scores, so
about 5 % of images like the reference are flagged. ``RUN/screen.json`` keeps the prototypes
and the threshold, so ``predict`` can screen files that are not in the pool.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

SCREEN_FILE = "screen.json"
CONFIDENT = 0.95
"""Calibrated probability from which an unlabelled image joins its class's reference."""
KEEP = 0.95
"""Share of the reference images under the threshold (the operating point)."""


@dataclass
class Screen:
    """Class prototypes ``[C, D]`` (unit rows), class names and the flagging threshold."""

    prototypes: torch.Tensor
    class_names: list[str]
    threshold: float
    reference: int = 0

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """``1 - max_c cos(z, m_c)`` per row of ``z [N, D]``: 0 on a prototype, up to 2."""
        return 1 - (F.normalize(z.float(), dim=1) @ self.prototypes.T).max(dim=1).values

    def flags(self, z: torch.Tensor) -> torch.Tensor:
        """Whether each row of ``z`` scores above the threshold ``[N]`` (bool)."""
        return self.scores(z) > self.threshold

    def to_json(self) -> dict:
        """What ``screen.json`` holds."""
        return {"score": "1 - cosine similarity of z to the nearest class prototype", "threshold": self.threshold,
                "operating_point": f"{KEEP:.0%} of the reference images pass", "confident": CONFIDENT,
                "reference_images": self.reference, "class_names": self.class_names,
                "prototypes": [[round(float(v), 7) for v in row] for row in self.prototypes]}

    @classmethod
    def from_json(cls, record: dict) -> "Screen":
        """The screen in ``record`` (see :meth:`to_json`)."""
        return cls(torch.tensor(record["prototypes"], dtype=torch.float32), list(record["class_names"]),
                   float(record["threshold"]), int(record.get("reference_images", 0)))


def fit_screen(labelled_z: torch.Tensor, labelled_targets: torch.Tensor, pool_z: torch.Tensor,
               pool_probs: torch.Tensor, class_names: list[str]) -> Screen:
    """Prototypes from the labelled and confidently pseudo-labelled images, and the threshold.

    Args:
        labelled_z: unit embeddings of the labelled images ``[L, D]``; labelled_targets: ``[L]``.
        pool_z: unit embeddings of the unlabelled images ``[N, D]``; pool_probs: their
            calibrated probabilities ``[N, C]``.
        class_names: the classes, in label order.
    """
    confidence, predicted = pool_probs.max(dim=1)
    sure = confidence >= CONFIDENT
    z = torch.cat([labelled_z, pool_z[sure]]).float()
    targets = torch.cat([labelled_targets.long(), predicted[sure].long()])
    prototypes = torch.stack([
        F.normalize(z[targets == c].mean(dim=0), dim=0) if (targets == c).any() else torch.zeros(z.shape[1])
        for c in range(len(class_names))])
    screen = Screen(prototypes, list(class_names), 0.0, int(z.shape[0]))
    screen.threshold = float(torch.quantile(screen.scores(z).double(), KEEP))
    return screen


@dataclass
class PoolScreen:
    """A run's screen with what it was fitted on: the candidate rows of the unlabelled pool,
    their scores, predicted classes and calibrated probabilities, and the run's data."""

    screen: Screen
    rows: list[int]
    scores: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor
    data: Any


def screen_pool(run_dir: Path, device: str = "cpu") -> PoolScreen:
    """Fit the run's screen on its pool with the EMA model and score the pool."""
    from torch.utils.data import Subset

    from comatch.tools.inference.checkpoint import load_model
    from comatch.tools.trust.pool import candidate_rows, labelled_targets, outputs_on, saved_run_data

    loaded = load_model(run_dir, "ema", device)
    data = saved_run_data(loaded.config, run_dir)
    view, preprocess = loaded.eval_view(), loaded.preprocess()
    rows = candidate_rows(data)
    pool = outputs_on(loaded.model, Subset(data.unlabelled, rows.tolist()), view, preprocess)
    labelled = outputs_on(loaded.model, data.labelled, view, preprocess)
    probs = torch.softmax(pool.logits.double() / loaded.temperature, dim=1).float()
    screen = fit_screen(labelled.z, labelled_targets(data), pool.z, probs, data.class_names)
    confidence, predicted = probs.max(dim=1)
    return PoolScreen(screen, rows.tolist(), screen.scores(pool.z), predicted, confidence, data)


def save_screen(screen: Screen, run_dir: Path) -> None:
    """Write ``RUN/screen.json``."""
    from comatch.training.runtime import atomic_write_text

    atomic_write_text(Path(run_dir) / SCREEN_FILE, json.dumps(screen.to_json()) + "\n")


def run_screen(run_dir: Path, device: str = "cpu") -> Screen:
    """The screen of a run: ``RUN/screen.json``, fitted (with the EMA model) and saved when missing."""
    path = Path(run_dir) / SCREEN_FILE
    if path.is_file():
        return Screen.from_json(json.loads(path.read_text()))
    screen = screen_pool(run_dir, device).screen
    save_screen(screen, run_dir)
    return screen
