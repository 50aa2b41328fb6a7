"""What a benchmark's numbers depend on and how they were made, recorded beside them.

CPU results are bit-reproducible for the same code, torch build and thread count: on one machine
with ``run.numerics=fast``, on any x86-64 machine with ``run.numerics=portable``. So each results
file says which commit (and whether the source had uncommitted changes), which torch, how many
threads, which numerics, which CPU model, and the exact command.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def git(*argv: str) -> str:
    """Output of a git command run at the root of the repository this file is in."""
    found = subprocess.run(["git", *argv], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return found.stdout.strip()


def provenance(**extra: Any) -> dict[str, Any]:
    """``command``, ``commit``, ``uncommitted_changes``, ``torch``, ``python``, ``cpu``, ``cpu_model``,
    ``cpu_capability`` (the ATen kernels torch chose) and ``extra`` (e.g. ``numerics``, threads)."""
    import torch

    from comatch.numerics import cpu_model

    return {
        "command": f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:]),
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks")),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **extra,
    }
