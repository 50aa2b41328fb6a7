"""What does not belong: out-of-distribution scores of the unlabelled pool, and leaving the
most suspicious images out of training (``data.exclude_outliers``).

The score is :func:`comatch.tools.trust.scores.ood_scores`: the distance of an image's embedding to
its nearest labelled embeddings, mixed with the model's doubt about it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from comatch.data import RunData
from comatch.data.images import View
from comatch.errors import UserError
from comatch.training.evaluation import Preprocess
from comatch.tools.trust.pool import candidate_rows, centred, outputs_on, path_of
from comatch.tools.trust.scores import ood_scores
from comatch.training.runtime import atomic_write_text

OUTLIERS_FILE = "outliers.json"  # the rows a run left out, so that a resume leaves out the same
NEIGHBOURS = 5


MAX_SCORED = 2000
"""Unlabelled images the report scores (a seeded sample of larger pools), so that its cost is
bounded whatever the pool's size."""


@dataclass
class PoolScores:
    """OOD scores of the unlabelled candidates (rows of ``data.unlabelled``)."""

    rows: np.ndarray
    scores: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor
    truth: torch.Tensor


def score_pool(model: nn.Module, data: RunData, view: View, preprocess: Preprocess, temperature: float = 1.0,
               use_features: bool = False, max_images: int | None = None, seed: int = 0) -> PoolScores:
    """Score the unlabelled images that are not labelled.

    Args:
        model: the network (a trained EMA model, or the initial network).
        data: the run's data.
        view: the evaluation view; preprocess: normalisation.
        temperature: ``T`` of the probabilities.
        use_features: compare encoder features, centred on the pool's mean, instead of
            projection embeddings (for an untrained network, whose projection head is random).
        max_images: score a random subset of at most this many (large pools).
        seed: of that subset.
    """
    rows = candidate_rows(data)
    if max_images is not None and len(rows) > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_images, replace=False))
    pool = outputs_on(model, Subset(data.unlabelled, rows.tolist()), view, preprocess)
    labelled = outputs_on(model, data.labelled, view, preprocess)
    probs = torch.softmax(pool.logits.double() / temperature, dim=1).float()
    if use_features:
        mean = pool.feats.mean(dim=0)
        emb, ref = centred(pool.feats, mean), centred(labelled.feats, mean)
    else:
        emb, ref = pool.z, labelled.z
    scores = ood_scores(emb, probs, ref, k=NEIGHBOURS)
    confidence, predicted = probs.max(dim=1)
    return PoolScores(rows, scores, predicted, confidence, pool.labels)


def read_outliers(path: Path, pool_size: int) -> np.ndarray:
    """The sorted rows of the unlabelled pool that ``outliers.json`` leaves out.

    Raises:
        UserError: the file is unreadable, not JSON, or its ``rows`` are not distinct row
            numbers of a pool of ``pool_size`` images; the message says how to fix it.
    """
    fix = ("restore it from a backup, or delete it to score the unlabelled images again (the run may then "
           "leave out other images than before)")
    try:
        rows = json.loads(Path(path).read_text())["rows"]
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror}); {fix}") from None
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is damaged (not a JSON object with a list of rows); {fix}") from None
    if not isinstance(rows, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in rows):
        raise UserError(f"{path} is damaged (its rows are not whole numbers); {fix}")
    if len(set(rows)) != len(rows) or any(not 0 <= r < pool_size for r in rows):
        raise UserError(f"{path} does not fit the data: it names rows outside the {pool_size} unlabelled "
                        f"images or names one twice (the folder changed?); {fix}")
    return np.array(sorted(rows), dtype=np.int64)


def exclude_outliers(config: Any, data: RunData, model: nn.Module, view: View, preprocess: Preprocess,
                     out_dir: Path, write: bool, say: Callable[[str], None] = print) -> RunData:
    """``data`` with ``data.exclude_outliers`` of its unlabelled candidates left out.

    Scored with ``model`` as it is before training (random or ``model.init`` weights), on its
    encoder features; a resume reads the rows left out from ``RUN_DIR/outliers.json``. The
    labelled images are never left out.

    Args:
        config: the run's configuration.
        data: the run's data.
        model: the initial network.
        view, preprocess: the evaluation view and normalisation.
        out_dir: the run directory.
        write: write ``outliers.json`` (the main process).
        say: where the one-line note goes.
    """
    fraction = float(config.data.exclude_outliers)
    saved = Path(out_dir) / OUTLIERS_FILE
    if saved.exists():
        dropped = read_outliers(saved, len(data.unlabelled))
    else:
        scored = score_pool(model, data, view, preprocess, use_features=True)
        count = int(round(fraction * len(scored.rows)))
        dropped = np.sort(scored.rows[scored.scores.argsort(descending=True)[:count].numpy()])
        if write:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            record = {"fraction": fraction, "scored_with": "initial network, encoder features",
                      "rows": dropped.tolist(),
                      "paths": [path_of(data.unlabelled, int(r)) for r in dropped][:1000]}
            atomic_write_text(saved, json.dumps(record) + "\n")
    kept = np.setdiff1d(np.arange(len(data.unlabelled)), dropped)
    say(f"data: left out {len(dropped)} of {len(data.unlabelled)} unlabelled images as likely outliers "
        f"(data.exclude_outliers={fraction}; listed in {OUTLIERS_FILE})")
    data.unlabelled = Subset(data.unlabelled, kept.tolist())
    data.notes.append(f"left out {len(dropped)} likely outliers of the unlabelled images (data.exclude_outliers)")
    return data
