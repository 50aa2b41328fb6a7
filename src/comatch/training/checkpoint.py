"""Checkpoint files: atomic rotation, loading with fallback, and resume compatibility.

A run directory keeps its two newest checkpoints, ``checkpoints/last.pt`` and
``checkpoints/previous.pt``. A new one is written to a temporary file (flushed and fsynced),
then ``last.pt`` becomes ``previous.pt`` and the new file becomes ``last.pt``; a crash at any
moment leaves at least one complete checkpoint.

``previous.pt`` is always an older, different, loadable state when it exists: ``last.pt`` is
rotated into it only when ``last.pt`` loads and holds an earlier step. A state at the step
``last.pt`` already holds (a finished run resumed, a stop right after a periodic checkpoint)
is not written again, and a damaged ``last.pt`` is replaced without rotation.
"""

from __future__ import annotations

import errno
import io
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from comatch.config import resumable_fields, validate
from comatch.errors import UserError
from comatch.training.runtime import atomic_write_bytes

LAST, PREVIOUS = "last.pt", "previous.pt"

def rng_state() -> dict[str, Any]:
    """Every random-number state the process has (Python, NumPy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def saved_step(path: Path) -> int | None:
    """The step of the checkpoint at ``path``, or None if it is missing or does not load.

    Memory-maps the file, so only the small parts are read.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        return int(state["step"])
    except Exception:  # noqa: BLE001 - missing, truncated or foreign files all mean "no step"
        return None


def save_rotating(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the newest checkpoint of ``folder``; the one before is kept.

    Args:
        folder: the checkpoint folder (created if missing).
        state: a checkpoint with an integer ``"step"``.

    Returns:
        The path of the newest checkpoint (``last.pt``).

    Raises:
        UserError: the disk is full or the file too large for the limits (the earlier
            checkpoints are left as they were).
    """
    folder.mkdir(parents=True, exist_ok=True)
    last, staged = folder / LAST, folder / ".staged.pt"
    newest = saved_step(last)
    if newest is not None and newest == state["step"]:
        return last  # this very state is saved already; re-saving would push the fallback out
    try:
        buffer = io.BytesIO()  # serialised in memory: torch's file writer turns OSErrors into RuntimeErrors
        torch.save(state, buffer)
        atomic_write_bytes(staged, lambda handle: handle.write(buffer.getbuffer()))
    except OSError as err:
        if err.errno in DISK_FULL:
            then = ("the previous checkpoint is intact: free some space and continue with --resume"
                    if newest is not None else "no checkpoint was saved yet: free some space and run the same command again")
            raise UserError(f"no space left for a checkpoint in {folder} ({err.strerror}: the disk is full "
                            f"or a file-size limit is reached); {then}") from None
        raise
    if newest is not None and newest < state["step"]:
        os.replace(last, folder / PREVIOUS)
    os.replace(staged, last)
    return last


def load_newest(
    folder: Path, map_location: str | torch.device = "cpu", purpose: str = "resume"
) -> tuple[dict[str, Any], Path]:
    """The newest checkpoint in ``folder`` that loads, falling back to the previous one.

    Args:
        folder: a checkpoint folder.
        map_location: where tensors are loaded.
        purpose: ``"resume"`` (training continues) or ``"use"`` (evaluate, predict, export,
            report); it words the error.

    Raises:
        UserError: no checkpoint in ``folder`` loads.
    """
    candidates = [folder / LAST, folder / PREVIOUS]
    if not any(path.exists() for path in candidates):
        what = "nothing to resume" if purpose == "resume" else "give a run directory or a .pt file"
        raise UserError(f"{folder} holds no checkpoint (last.pt or previous.pt); {what}")
    for path in candidates:
        if not path.exists():
            continue
        try:
            return load_file(path, map_location), path
        except UserError as err:
            then = "; trying the previous checkpoint" if path.name == LAST and (folder / PREVIOUS).exists() else ""
            print(f"comatch: warning: {err}{then}", file=sys.stderr)
    if purpose == "resume":
        raise UserError(f"no checkpoint in {folder} could be read; the run cannot be resumed")
    raise UserError(f"no checkpoint in {folder} could be read (each is damaged); there is no model "
                    f"to load: train again, or give another checkpoint")


def load_file(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint file. Raises UserError if it is missing, truncated or not ours."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist; check the path") from None
    except Exception as err:  # truncated or corrupt files raise many different errors
        raise UserError(f"checkpoint {path} is damaged or not a checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise UserError(f"{path} is not a comatch checkpoint")
    return state


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted names whose values differ between two config mappings, with (old, new)."""
    a, b = _flatten(old), _flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def as_current_schema(old: dict[str, Any]) -> dict[str, Any]:
    """A saved config mapping as this version reads it: a section or field added since the run
    was made takes the value the run computed with (its default, or for FixMatch's section the
    tau and lambda_u older configs kept under ``comatch``), so it is not a change.

    Raises:
        UserError: the saved config is not valid any more.
    """
    return validate(old).model_dump(mode="json")


def check_resume_compatible(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The harmless changes a resume makes; refuses changes to the run's meaning.

    Raises:
        UserError: naming every field whose change would make it a different run.
    """
    changes = changed_fields(as_current_schema(old), new)
    harmful = [k for k in changes if k not in resumable_fields()]
    if harmful:
        listed = ", ".join(f"{k} ({changes[k][0]!r} -> {changes[k][1]!r})" for k in harmful)
        raise UserError(f"cannot resume with a different {listed}; start a new run with --out instead")
    if new["optim"]["iterations"] < old["optim"]["iterations"]:
        raise UserError("a resume cannot lower optim.iterations; start a new run instead")
    return changes
