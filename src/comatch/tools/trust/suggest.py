"""``comatch suggest``: which unlabelled images to label next.

The ranking (docs/trust.md) mixes uncertainty and diversity:

1. The EMA model predicts every unlabelled image (evaluation view): ``p = softmax(logits / T)``
   with the run's fitted temperature.
2. CoMatch's memory smoothing over the pool: ``q = alpha p + (1 - alpha) sum_j a_j p_j``, the
   neighbours being the labelled images (one-hot) and the other pool images
   (:func:`comatch.tools.trust.scores.smoothed_pool_labels`).
3. Uncertainty ``u = (1 - max q) C / (C - 1)``.
4. Uncertainty-weighted k-centre greedy on the embeddings ``z``
   (:func:`comatch.tools.trust.scores.diverse_ranking`): each pick maximises ``(0.05 + u) d``,
   ``d`` being the cosine distance to the labelled images and the earlier picks.

With ``--before-training`` the network is the run's initial one (random, or ``model.init``),
rebuilt from its config and seed; its predictions mean nothing yet, so ``u = 1`` and the
ranking is pure k-centre coverage of its encoder features (centred on the pool's mean).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from comatch import config as cfg
from comatch.data import RunData
from comatch.errors import UserError
from comatch.tools.trust.pool import (candidate_rows, centred, labelled_targets, outputs_on, path_of, root_index,
                                saved_run_data)
from comatch.tools.trust.scores import diverse_ranking, smoothed_pool_labels, uncertainty
from comatch.tools.trust.screen import fit_screen


@dataclass
class Suggestion:
    """One image to label: its row in the unlabelled pool and why."""

    rank: int
    row: int
    index: int
    path: str | None
    score: float
    uncertainty: float
    distance: float
    predicted: str
    probability: float
    unknown_score: float | None = None
    unknown: bool = False


def run_config(run_dir: Path) -> cfg.Config:
    """The configuration in ``RUN_DIR/config.yaml``.

    Raises:
        UserError: there is none.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} has no config.yaml; give a run directory (for a first round before any "
                        "training, write one with `comatch train ... --show-config > DIR/config.yaml`)")
    return cfg.build_config(config_file=path)


def _initial_network(config: cfg.Config, data: RunData, device: torch.device) -> torch.nn.Module:
    """The run's network as its trainer starts it: same seed, ``model.init`` when given."""
    from comatch.models import build_model
    from comatch.models.pretrained import load_encoder_weights
    from comatch.training.runtime import seed_everything

    seed_everything(config.seed)
    m = config.model
    model = build_model(m.arch, data.num_classes, in_channels=m.in_channels or data.channels,
                        proj_dim=m.proj_dim, bn_momentum=m.bn_momentum)
    if m.init:
        load_encoder_weights(model.encoder, m.init)
    return model.to(device).eval()


def suggest(run_dir: Path, k: int, before_training: bool = False, device: str = "cpu",
            batch_size: int = 256) -> tuple[list[Suggestion], RunData]:
    """Rank the run's unlabelled images and return the first ``k``.

    Raises:
        UserError: not a run directory, no checkpoint (without ``before_training``), or no
            unlabelled image left.
    """
    from comatch.data.preprocessing import Normalizer, eval_view
    from comatch.tools.inference.checkpoint import load_model
    from comatch.training.runtime import resolve_device

    run_dir = Path(run_dir)
    if before_training:
        config = run_config(run_dir)
        target = resolve_device(device)
        data = saved_run_data(config, run_dir)
        model, temperature = _initial_network(config, data, target), 1.0
        channels = config.model.in_channels or data.channels
        preprocess = Normalizer(data.mean, data.std, channels, target)
        view = eval_view(config, data.image_size)
    else:
        if run_dir.is_dir() and not any((run_dir / "checkpoints").glob("*.pt")):
            raise UserError(f"{run_dir} holds no checkpoint; train the run first, or rank with the initial "
                            "network: --before-training")
        loaded = load_model(run_dir, "ema", device)
        config, model, temperature = loaded.config, loaded.model, loaded.temperature
        data = saved_run_data(config, run_dir)
        preprocess, view = loaded.preprocess(), loaded.eval_view()
    rows = candidate_rows(data)
    if len(rows) == 0:
        raise UserError("every image of the run is labelled already; there is nothing to suggest")
    pool = outputs_on(model, Subset(data.unlabelled, rows.tolist()), view, preprocess, batch_size)
    labelled = outputs_on(model, data.labelled, view, preprocess, batch_size)
    probs = torch.softmax(pool.logits.double() / temperature, dim=1).float()
    if before_training:
        mean = pool.feats.mean(dim=0)
        emb, ref, u = centred(pool.feats, mean), centred(labelled.feats, mean), torch.ones(len(rows))
    else:
        c = getattr(config, "comatch", None)
        alpha, t = (c.alpha, c.temperature) if c is not None else (0.9, 0.2)
        q = smoothed_pool_labels(probs, pool.z, labelled.z, labelled_targets(data), alpha, t)
        emb, ref, u = pool.z, labelled.z, uncertainty(q)
        screen = fit_screen(labelled.z, labelled_targets(data), pool.z, probs, data.class_names)
        probs = q
    ranking = diverse_ranking(emb, u, k, ref)
    unknown = screen.scores(pool.z) if not before_training else None
    confidence, predicted = probs.max(dim=1)
    result = []
    for rank, (i, score, ui, di) in enumerate(zip(ranking.order.tolist(), ranking.score.tolist(),
                                                   ranking.uncertainty.tolist(), ranking.distance.tolist()), 1):
        row = int(rows[i])
        result.append(Suggestion(rank, row, root_index(data.unlabelled, row), path_of(data.unlabelled, row), score,
                                 ui, di, data.class_names[int(predicted[i])], float(confidence[i])))
        if unknown is not None:
            result[-1].unknown_score = float(unknown[i])
            result[-1].unknown = bool(unknown[i] > screen.threshold)
    return result, data


def write_csv(suggestions: list[Suggestion], handle: Any) -> None:
    """``rank,index,path,score,uncertainty,distance,predicted,probability,unknown_score,unknown`` rows
    (the last two empty with ``--before-training``)."""
    writer = csv.writer(handle)
    writer.writerow(["rank", "index", "path", "score", "uncertainty", "distance", "predicted", "probability",
                     "unknown_score", "unknown"])
    for s in suggestions:
        screened = s.unknown_score is not None
        writer.writerow([s.rank, s.index, s.path or "", f"{s.score:.6f}", f"{s.uncertainty:.6f}",
                         f"{s.distance:.6f}", s.predicted, f"{s.probability:.6f}",
                         f"{s.unknown_score:.6f}" if screened else "", ("yes" if s.unknown else "no") if screened else ""])


LINKS_RECORD = ".comatch-links.json"
"""What the last ``suggest --links`` round wrote in its folder (hidden: never scanned as an image)."""


def _remove_earlier_round(folder: Path) -> int:
    """Remove the links and PNG copies an earlier round wrote in ``folder`` (as its record lists
    them; anything else there is left alone). Returns how many were removed."""
    record = folder / LINKS_RECORD
    try:
        written = json.loads(record.read_text())["written"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    removed = 0
    for name in written if isinstance(written, list) else []:
        path = folder / str(name)
        if path.parent.parent == folder and (path.is_symlink() or path.is_file()):
            path.unlink()
            removed += 1
            if path.parent.is_dir() and not any(path.parent.iterdir()):
                path.parent.rmdir()
    return removed


def write_links(suggestions: list[Suggestion], data: RunData, folder: Path) -> int:
    """``FOLDER/PREDICTED_CLASS/RANK_NAME``: symbolic links to the files, or PNG copies of
    in-memory images. The links of an earlier round in ``FOLDER`` are removed first, so that the
    folder holds this round's suggestions only. Returns the number written."""
    from PIL import Image

    from comatch.data.datasets import gather
    from comatch.training.runtime import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    _remove_earlier_round(folder)
    written = []
    for s in suggestions:
        target = folder / s.predicted
        target.mkdir(parents=True, exist_ok=True)
        if s.path is not None:
            link = target / f"{s.rank:04d}_{Path(s.path).name}"
            link.unlink(missing_ok=True)
            os.symlink(os.path.abspath(s.path), link)
        else:
            link = target / f"{s.rank:04d}_index{s.index}.png"
            image, _ = gather(data.unlabelled, torch.tensor([s.row]))
            pixels = image[0].permute(1, 2, 0).numpy()  # [H, W, C]
            Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(link)
        written.append(link.relative_to(folder).as_posix())
    atomic_write_text(folder / LINKS_RECORD, json.dumps({"written": written}) + "\n")
    return len(suggestions)


def next_labelled_list(data: RunData, suggestions: list[Suggestion]) -> list[Any]:
    """The run's labelled list plus the suggested images (benchmarks: indices into the pool,
    whose labels the dataset knows; for your own folders, move the files instead)."""
    if any(s.path is not None for s in suggestions):
        raise UserError("--next-list works for benchmark data (indices); for your own images move the suggested "
                        "files into their class folders under --labeled and train again")
    return list(data.labelled_ids) + [s.index for s in suggestions]


def cmd_suggest(args: argparse.Namespace) -> int:
    """``comatch suggest RUN_DIR --n K``."""
    import sys

    from comatch.tools.outputs import writable_file

    if args.out is not None:  # checked before the ranking, which can take long
        writable_file(args.out, "--out", "suggestions.csv")
    if args.next_list is not None:
        writable_file(args.next_list, "--next-list", "labelled.json")
    if args.links is not None and args.links.exists() and not args.links.is_dir():
        raise UserError(f"--links {args.links} is a file; give a folder for the links")
    suggestions, data = suggest(args.run_dir, args.n, args.before_training, args.device, args.batch_size)
    if args.out is None:
        write_csv(suggestions, sys.stdout)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as handle:
            write_csv(suggestions, handle)
    if args.links is not None:
        write_links(suggestions, data, args.links)
    if args.next_list is not None:
        args.next_list.parent.mkdir(parents=True, exist_ok=True)
        args.next_list.write_text(json.dumps(next_labelled_list(data, suggestions)) + "\n")
    from comatch.tools.inference.images import data_skipped_line

    if data_skipped_line(data):
        print(data_skipped_line(data), file=sys.stderr)
    where = [f"CSV {args.out}"] if args.out else []
    where += [f"links in {args.links}"] if args.links else []
    where += [f"next labelled list {args.next_list}"] if args.next_list else []
    print(f"suggested {len(suggestions)} image(s) to label" + (f": {', '.join(where)}" if where else ""), file=sys.stderr)
    return 0


