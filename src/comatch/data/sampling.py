"""Index sampling: per-class labelled subsets and endless, resumable samplers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from comatch.errors import UserError


HOLDOUT_SEED = 20211012  # fixed: a held-out test set is the same for every run and every seed


def select_labelled(labels: np.ndarray, per_class: int, seed: int,
                    class_names: list[str] | None = None) -> np.ndarray:
    """Draw ``per_class`` indices of every class with ``seed`` (same seed, same subset).

    Args:
        labels: class index of every candidate ``[N]``; -1 entries are never drawn.
        per_class: labelled images wanted per class.
        seed: the run's seed.
        class_names: the classes, in label order; every one of them must have candidates.

    Returns:
        Sorted indices into ``labels``.

    Raises:
        UserError: a class has fewer than ``per_class`` images.
    """
    rng = np.random.default_rng(seed)
    classes = range(len(class_names)) if class_names else np.unique(labels[labels >= 0])
    chosen = []
    for cls in classes:
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            name = f"{cls} ({class_names[cls]!r})" if class_names else str(cls)
            raise UserError(
                f"class {name} has only {len(members)} images but {per_class} labels per class "
                f"were asked for; lower data.labels_per_class (or data.num_labels)"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)


def holdout_per_class(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into kept and held-out parts, ``fraction`` of every class held out.

    Each class with at least two images keeps at least one and gives at least one. The draw
    uses a fixed seed, so every run on the same files holds out the same ones.

    Returns:
        ``(kept, held_out)``, both sorted.
    """
    rng = np.random.default_rng(HOLDOUT_SEED)
    held = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = 0
        if len(members) >= 2 and fraction > 0:
            count = min(max(1, round(fraction * len(members))), len(members) - 1)
        held.append(rng.choice(members, size=count, replace=False))
    held_out = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


def read_labelled_list(path: str | Path) -> list[int] | list[str]:
    """The entries of a labelled-subset file: a JSON list (a run's ``labelled.json``) or lines.

    Entries are indices into a benchmark's training pool, or image paths relative to the
    labelled folder (a bare file name also matches, when it is unique).

    Raises:
        UserError: unreadable or empty file.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"cannot read the labelled list {path}: {err.strerror}; check the path") from err
    except UnicodeDecodeError:
        raise UserError(f"the labelled list {path} is not a text file; give a run's labelled.json or one "
                        f"index or path per line") from None
    try:
        entries = json.loads(text)
    except json.JSONDecodeError:
        entries = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(entries, dict):  # also the official CoMatch ImageNet annotation files
        entries = entries.get("labelled", entries.get("paths", entries.get("labeled_samples", [])))
        entries = [e[0] if isinstance(e, list) and e else e for e in entries]  # [path, label] pairs
    if not isinstance(entries, list) or not entries:
        raise UserError(f"the labelled list {path} holds no entries; give a JSON list or one entry per line")
    if all(isinstance(e, int) or (isinstance(e, str) and e.isdigit()) for e in entries):
        return [int(e) for e in entries]
    return [str(e) for e in entries]


def read_saved_labelled(path: str | Path) -> list[int] | list[str]:
    """A run's ``labelled.json`` as written by training: a JSON list of pool indices or relative paths.

    Raises:
        UserError: the file is unreadable, not JSON, or not such a list; the message names it
            and how to fix it.
    """
    path = Path(path)
    fix = "restore it from a backup, or start a new run (its labelled images cannot be known otherwise)"
    try:
        entries = json.loads(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror}); {fix}") from None
    except (UnicodeDecodeError, ValueError):
        raise UserError(f"{path} is damaged (not valid JSON); {fix}") from None
    ints = isinstance(entries, list) and all(isinstance(e, int) and not isinstance(e, bool) for e in entries)
    strings = isinstance(entries, list) and all(isinstance(e, str) for e in entries)
    if not entries or not (ints or strings):
        raise UserError(f"{path} is damaged (not a list of image indices or paths); {fix}")
    return entries


def resolve_labelled_list(entries: list[int] | list[str], keys: list[str] | None, pool_size: int,
                          source: str) -> np.ndarray:
    """Indices into the pool of the entries of a labelled list.

    Args:
        entries: indices, or paths (``keys``) of pool items.
        keys: the pool's relative paths (None for in-memory benchmarks: indices only).
        pool_size: number of labelled candidates.
        source: the list's file name, for messages.

    Raises:
        UserError: an index out of range, an unknown path, or a repeated entry.
    """
    if keys is None and any(not isinstance(e, int) for e in entries):
        raise UserError(f"the labelled list {source} names image paths (such as {entries[0]!r}), but this "
                        f"dataset's images are numbered: is it the list of a run on other data?")
    if keys is not None and all(isinstance(e, int) for e in entries):
        raise UserError(f"the labelled list {source} holds numbers (such as {entries[0]}), but images in "
                        f"folders are named by path: is it the list of a run on a benchmark?")
    if keys is None:
        index = np.asarray(entries, dtype=np.int64)
        bad = index[(index < 0) | (index >= pool_size)]
        if bad.size:
            raise UserError(f"the labelled list {source} names index {bad[0]}, but the training pool "
                            f"has {pool_size} images (0..{pool_size - 1}); is it a list for this dataset?")
    else:
        by_key = {k: i for i, k in enumerate(keys)}
        by_name: dict[str, int] = {}
        for i, k in enumerate(keys):
            by_name[Path(k).name] = -1 if Path(k).name in by_name else i
        found = [by_key.get(str(e), by_name.get(Path(str(e)).name, -1)) for e in entries]
        missing = [e for e, i in zip(entries, found) if i < 0]
        if missing:
            raise UserError(f"the labelled list {source} names {missing[0]!r} ({len(missing)} entries in all) "
                            f"that matches no readable, not held-out image of the labelled folder (or several by name)")
        index = np.asarray(found, dtype=np.int64)
    if len(np.unique(index)) != len(index):
        raise UserError(f"the labelled list {source} names an image twice")
    return np.sort(index)


def labels_per_class(num_labels: int, num_classes: int) -> int:
    """Labels per class for a balanced total of ``num_labels``; it must divide evenly."""
    if num_labels % num_classes:
        raise UserError(
            f"data.num_labels={num_labels} cannot be split evenly over {num_classes} classes; "
            f"use a multiple of {num_classes}"
        )
    return num_labels // num_classes


class IndexStream:
    """Endless shuffled passes over ``range(size)``, cut into batches; never runs dry.

    Pass ``e`` is a permutation drawn from ``(seed, e)``, so batch ``k`` (positions
    ``[k * b, (k + 1) * b)`` of the stream) is a pure function of ``(seed, k)``: a resumed
    run continues exactly where it stopped, whatever the number of workers.

    Args:
        size: number of samples.
        seed: seed of the permutations.
    """

    def __init__(self, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed = size, seed
        self._cached: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of pass ``epoch`` ``[size]``."""
        if self._cached is None or self._cached[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cached = (epoch, torch.randperm(self.size, generator=generator))
        return self._cached[1]

    def batch(self, index: int, batch_size: int) -> torch.Tensor:
        """Sample indices of batch ``index`` ``[batch_size]``."""
        positions = range(index * batch_size, (index + 1) * batch_size)
        epochs = {p // self.size for p in (positions.start, positions.stop - 1)}
        parts = []
        for epoch in sorted(range(min(epochs), max(epochs) + 1)):
            lo = max(positions.start, epoch * self.size) - epoch * self.size
            hi = min(positions.stop, (epoch + 1) * self.size) - epoch * self.size
            parts.append(self.permutation(epoch)[lo:hi])
        return torch.cat(parts)
