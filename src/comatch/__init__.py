"""CoMatch: semi-supervised image classification with contrastive graph regularization.

The five equations are pure functions (:mod:`comatch.methods.losses`); the state they need lives in
:class:`DistributionAligner` and :class:`MemoryBank`; :class:`CoMatchCriterion` puts them
together for one training step. The large-scale (ImageNet) variant adds
:class:`MomentumEncoder`, :func:`shuffled_forward`, :class:`EmbeddingQueue` and
:class:`MomentumCoMatchCriterion` (see :mod:`comatch.methods.momentum`).
"""

import os as _os
import sys as _sys


def _busy_cores(cores: set[int], window: float = 0.1) -> float | None:
    """How many of ``cores`` other processes keep busy now: their busy time (user, nice, system,
    interrupts; not idle, I/O wait or time stolen by a hypervisor) over ``window`` seconds while
    this process sleeps, from ``/proc/stat``. None where that cannot be read (not Linux)."""
    import time

    def busy_ticks() -> int:
        total = 0
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                    total += sum(int(values[i]) for i in (0, 1, 2, 5, 6))
        return total

    try:
        start = busy_ticks()
        time.sleep(window)
        busy = busy_ticks() - start
        ticks_per_second = _os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return min(busy / (ticks_per_second * window), float(len(cores)))  # ticks fall unevenly in the window


def _why_not_idle() -> str:
    """Why OpenMP threads should not spin here ("" if this process looks alone on the machine:
    one training process, at least 2 usable cores, other processes keeping under a quarter of
    them busy right now). The machine is looked at over the 0.1 s before the choice, not through
    the load average, which still counts a job that ended a minute ago (an install, the previous
    run): a run started right after one chose sleeping threads and took 1.6x as long per step."""
    if int(_os.environ.get("LOCAL_WORLD_SIZE", "1") or 1) > 1:
        return "several training processes share the machine"
    try:
        usable = _os.sched_getaffinity(0)
    except (AttributeError, OSError):  # not on Linux
        return "the machine's load is unknown"
    if len(usable) < 2:
        return "one core"
    busy = _busy_cores(usable)
    if busy is None:
        return "the machine's load is unknown"
    if busy < len(usable) / 4:
        return ""
    return f"the machine was busy at the start, {busy:.1f} of {len(usable)} cores in use"


# How idle OpenMP threads of PyTorch wait, unless the environment already says. Spinning pays
# only on an idle machine: there a default digits step took 0.74x as long with 10,000 spins as
# with threads that sleep at once (PASSIVE, which pays a wake-up for every parallel region),
# but beside one busy process 2.1x as long, beside two 1.3x (libgomp's own default, 300,000
# spins, is as bad or worse; benchmarks/LOG.md has the measurements). So threads spin briefly
# when the machine is idle as the run starts, and sleep at once otherwise. GOMP_SPINCOUNT is
# libgomp's (PyTorch's OpenMP on Linux) and overrides the policy there; other OpenMP runtimes
# see PASSIVE. Both are read when torch is first loaded, so this must run before any torch
# import; neither changes a number computed.
# A process started by one that made this choice (torchrun's workers, subprocesses) inherits the
# variables; the marker tells it that they were chosen here, and it chooses again for itself.
_CHOSEN = "COMATCH_OPENMP_CHOSEN"
if _os.environ.pop(_CHOSEN, None) == "1":
    _os.environ.pop("OMP_WAIT_POLICY", None)
    _os.environ.pop("GOMP_SPINCOUNT", None)
OPENMP_WAIT = "as the environment sets: " + ", ".join(
    f"{key}={_os.environ[key]}" for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if key in _os.environ)
"""How idle OpenMP threads wait in this process, and why (shown when a run starts)."""
if "torch" in _sys.modules:  # OpenMP has read its settings already: choosing now would change nothing
    OPENMP_WAIT = "as when torch was loaded, before comatch"
elif "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _os.environ[_CHOSEN] = "1"
    _reason = _why_not_idle()
    if _reason:
        OPENMP_WAIT = f"idle threads sleep: {_reason}"
    else:
        _os.environ["GOMP_SPINCOUNT"] = "10000"
        OPENMP_WAIT = "idle threads spin briefly: the machine was idle at the start"
    del _reason
elif "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from typing import TYPE_CHECKING, Any

# The public names, imported on first use (PEP 562): importing ``comatch`` (and so starting the
# command line) does not load torch until something needs it.
_EXPORTS = {
    "CoMatchCriterion": "comatch.methods.criterion",
    "CriterionOutput": "comatch.methods.criterion",
    "SupervisedCriterion": "comatch.methods.criterion",
    "build_criterion": "comatch.methods.criterion",
    "contrastive_graph_loss": "comatch.methods.losses",
    "distribution_alignment": "comatch.methods.losses",
    "memory_smoothed_labels": "comatch.methods.losses",
    "pseudo_label_graph": "comatch.methods.losses",
    "pseudo_label_loss": "comatch.methods.losses",
    "DistributionAligner": "comatch.methods.memory",
    "MemoryBank": "comatch.methods.memory",
    "EmbeddingQueue": "comatch.methods.momentum",
    "MomentumCoMatchCriterion": "comatch.methods.momentum",
    "MomentumEncoder": "comatch.methods.momentum",
    "shuffled_forward": "comatch.methods.momentum",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'comatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from comatch.methods.criterion import CoMatchCriterion, CriterionOutput, SupervisedCriterion, build_criterion
    from comatch.methods.losses import (
        contrastive_graph_loss,
        distribution_alignment,
        memory_smoothed_labels,
        pseudo_label_graph,
        pseudo_label_loss,
    )
    from comatch.methods.memory import DistributionAligner, MemoryBank
    from comatch.methods.momentum import EmbeddingQueue, MomentumCoMatchCriterion, MomentumEncoder, shuffled_forward

__version__ = "0.1.0"

__all__ = [
    "CoMatchCriterion",
    "CriterionOutput",
    "DistributionAligner",
    "EmbeddingQueue",
    "MemoryBank",
    "MomentumCoMatchCriterion",
    "MomentumEncoder",
    "SupervisedCriterion",
    "build_criterion",
    "contrastive_graph_loss",
    "distribution_alignment",
    "memory_smoothed_labels",
    "pseudo_label_graph",
    "pseudo_label_loss",
    "shuffled_forward",
]
