"""Checkpoint files: atomic rotation, loading with fallback, and resume compatibility.

A run directory keeps its two newest checkpoints, ``checkpoints/last.pt`` and
``checkpoints/previous.pt``. A new one is written to a temporary file (flushed and fsynced),
then ``last.pt`` becomes ``previous.pt`` and the new file becomes ``last.pt``; a crash at any
moment leaves at least one complete checkpoint.
"""

from __future__ import annotations

import errno
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from comatch.config import resumable_fields
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


def save_rotating(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the newest checkpoint of ``folder``; the one before is kept.

    Raises:
        UserError: the disk is full (the earlier checkpoints are left as they were).
    """
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / ".staged.pt"
    try:
        atomic_write_bytes(staged, lambda handle: torch.save(state, handle))
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(
                f"no space left on the disk of {folder} while checkpointing; the previous "
                f"checkpoint is intact: free some space and continue with --resume"
            ) from err
        raise
    if (folder / LAST).exists():
        os.replace(folder / LAST, folder / PREVIOUS)
    os.replace(staged, folder / LAST)
    return folder / LAST


def load_newest(folder: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path]:
    """The newest checkpoint in ``folder`` that loads, falling back to the previous one.

    Raises:
        UserError: no checkpoint in ``folder`` loads.
    """
    candidates = [folder / LAST, folder / PREVIOUS]
    if not any(path.exists() for path in candidates):
        raise UserError(f"{folder} holds no checkpoint (last.pt or previous.pt); nothing to resume")
    for path in candidates:
        if not path.exists():
            continue
        try:
            return load_file(path, map_location), path
        except UserError as err:
            print(f"comatch: warning: {err}; trying the previous checkpoint", file=sys.stderr)
    raise UserError(f"no checkpoint in {folder} could be read; the run cannot be resumed")


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


def check_resume_compatible(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The harmless changes a resume makes; refuses changes to the run's meaning.

    Raises:
        UserError: naming every field whose change would make it a different run.
    """
    changes = changed_fields(old, new)
    harmful = [k for k in changes if k not in resumable_fields()]
    if harmful:
        listed = ", ".join(f"{k} ({changes[k][0]!r} -> {changes[k][1]!r})" for k in harmful)
        raise UserError(f"cannot resume with a different {listed}; start a new run with --out instead")
    if new["optim"]["iterations"] < old["optim"]["iterations"]:
        raise UserError("a resume cannot lower optim.iterations; start a new run instead")
    return changes
