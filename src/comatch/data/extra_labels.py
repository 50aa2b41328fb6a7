"""Labels decided after a run: the ``labels.csv`` that ``comatch label`` writes.

The file has the header ``path,label,time``; ``path`` is an unlabelled file's path as the run
lists it, ``label`` a class name, ``exclude`` ("not one of my classes") or ``undo``, ``time``
an ISO 8601 time. Decisions are only ever appended: an ``undo`` row takes back the latest
remaining decision for its path, and the last decision that stands for a path wins. So a
killed writer loses at most the row it was writing, and the file is a full history.

:func:`read_decisions` gives the decisions that stand; :func:`apply_extra_labels` moves the
labelled files from a folder run's unlabelled-only files into its labelled ones and drops the
excluded ones (``comatch train --extra-labels FILE``).
"""

from __future__ import annotations

import csv
from datetime import datetime, timezone
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from comatch.errors import UserError

if TYPE_CHECKING:
    from comatch.data.folders import FileList, FolderData

HEADER = ("path", "label", "time")
"""The columns of ``labels.csv``."""
EXCLUDE = "exclude"
"""The label of an image that is none of the run's classes: it leaves the unlabelled pool."""
UNDO = "undo"
"""The label of a row that takes back the latest standing decision for its path."""
KEY_PREFIX = "extra-labels:"
"""How ``labelled.json`` names a file labelled through the decisions file (its unlabelled key)."""


def read_rows(path: str | Path) -> list[tuple[str, str, str]]:
    """The ``(path, label, time)`` rows of a decisions file, in order (no file: none).

    Raises:
        UserError: the file lacks the ``path,label,time`` header.
    """
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return []
    if tuple(c.strip() for c in rows[0][:3]) != HEADER:
        raise UserError(f"{path} does not start with the header {','.join(HEADER)}; give the labels.csv that "
                        "`comatch label` writes (or a CSV with the columns path,label,time)")
    return [(r[0], r[1].strip(), r[2] if len(r) > 2 else "") for r in rows[1:] if len(r) >= 2 and r[0]]


def standing(rows: list[tuple[str, str, str]]) -> dict[str, str]:
    """The decision that stands for each path after the ``undo`` rows (insertion order: first decided)."""
    history: dict[str, list[str]] = {}
    for path, label, _ in rows:
        stack = history.setdefault(path, [])
        if label == UNDO:
            if stack:
                stack.pop()
        else:
            stack.append(label)
    return {path: stack[-1] for path, stack in history.items() if stack}


def read_decisions(path: str | Path) -> dict[str, str]:
    """``{file path: class name or "exclude"}`` that stands in a decisions file."""
    return standing(read_rows(path))


def append_decision(path: str | Path, file: str, label: str, time: str) -> None:
    """Append one row (the header first in a new file) and force it to disk."""
    path = Path(path)
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(HEADER)
        writer.writerow([file, label, time])
        handle.flush()
        os.fsync(handle.fileno())


@dataclass
class ExtraLabels:
    """What a decisions file did to a run's files (written to ``data.json``).

    Attributes:
        file: the decisions file.
        labelled: files that joined the labelled set.
        excluded: files that left the unlabelled pool.
        missing: decided paths that are not among the run's unlabelled files (left out).
        per_class: labelled files per class name.
    """

    file: str
    labelled: int = 0
    excluded: int = 0
    missing: list[str] = field(default_factory=list)
    per_class: dict[str, int] = field(default_factory=dict)

    def describe(self) -> dict:
        """The counts for ``data.json``."""
        return {"file": self.file, "labelled": self.labelled, "excluded": self.excluded,
                "missing": len(self.missing), "missing_paths": self.missing[:20], "per_class": self.per_class}

    def note(self) -> str:
        """One line for the run's log."""
        text = (f"extra labels from {self.file}: {self.labelled} image(s) joined the labelled set, "
                f"{self.excluded} left the unlabelled pool as not one of the classes")
        if self.missing:
            text += (f"; warning: {len(self.missing)} decided path(s) are not among the unlabelled files and were "
                     f"left out, e.g. {self.missing[0]}")
        return text


def _normal(path: str) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


def split_by_decisions(paths: list[str], keys: list[str], decisions: dict[str, str], class_names: list[str],
                       source: str) -> tuple[dict[int, int], set[int], ExtraLabels]:
    """Which of an unlabelled file list the decisions label or exclude.

    A decided path matches a file by its absolute path, or by its path relative to the
    unlabelled folder (its key).

    Args:
        paths, keys: the unlabelled files and their relative keys.
        decisions: ``{path: class name or "exclude"}``.
        class_names: the run's classes.
        source: the decisions file (for messages).

    Returns:
        ``({file index: class index}, {excluded file index}, counts)``.

    Raises:
        UserError: a decision names a class the run does not have.
    """
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({label for label in decisions.values() if label != EXCLUDE and label not in index})
    if unknown:
        raise UserError(f"{source} labels images as {unknown[0]!r}, which is not a class of the run (its classes: "
                        f"{', '.join(class_names)}; or '{EXCLUDE}'); correct the label or add a class folder")
    where = {_normal(p): i for i, p in enumerate(paths)}
    where.update({k: i for i, k in enumerate(keys)})
    labelled: dict[int, int] = {}
    excluded: set[int] = set()
    counts = ExtraLabels(str(source))
    for path, label in decisions.items():
        i = where.get(path, where.get(_normal(path)))
        if i is None:
            counts.missing.append(path)
        elif label == EXCLUDE:
            excluded.add(i)
        else:
            labelled[i] = index[label]
    counts.labelled, counts.excluded = len(labelled), len(excluded)
    for c in labelled.values():
        counts.per_class[class_names[c]] = counts.per_class.get(class_names[c], 0) + 1
    return labelled, excluded, counts


def with_extra_labels(data: "FolderData", file: str | Path, include_labelled: bool = True
                      ) -> tuple["FolderData", "FileList", ExtraLabels]:
    """A folder run's files after a decisions file.

    Args:
        data: the scanned folders.
        file: the decisions file.
        include_labelled: whether the unlabelled pool keeps labelled images (then a newly
            labelled file stays in it, with its label as ground truth for logging).

    Returns:
        ``(data with the excluded files out of data.extra, the newly labelled files, counts)``;
        the newly labelled files' keys are ``KEY_PREFIX`` plus their unlabelled key.

    Raises:
        UserError: the file is missing, has no ``path,label,time`` header, or names an unknown class.
    """
    from dataclasses import replace

    file = Path(file).expanduser()
    if not file.is_file():
        raise UserError(f"the extra labels file {file} does not exist; give the labels.csv that `comatch label RUN` "
                        "writes (RUN/labels.csv)")
    decisions = read_decisions(file)
    labelled, excluded, counts = split_by_decisions(data.extra.paths, data.extra.keys, decisions,
                                                    data.class_names, str(file))
    extra = data.extra
    new_labels = list(extra.labels)
    for i, c in labelled.items():
        new_labels[i] = c
    extra = type(extra)(extra.paths, new_labels, extra.keys, extra.checks)
    order = sorted(labelled)
    decided = extra.take(order)
    decided.keys = [KEY_PREFIX + k for k in decided.keys]
    drop = excluded | (set() if include_labelled else set(labelled))
    kept = extra.take([i for i in range(len(extra.paths)) if i not in drop])
    return replace(data, extra=kept), decided, counts


def now() -> str:
    """The time of a decision: ISO 8601, UTC, seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
