"""How idle OpenMP threads of PyTorch wait: chosen by the command line before torch loads.

Spinning pays only on an idle machine: there a default digits step took 0.74x as long with
10,000 spins as with threads that sleep at once (PASSIVE, which pays a wake-up for every
parallel region), but beside one busy process 2.1x as long, beside two 1.3x (libgomp's own
default, 300,000 spins, is as bad or worse; docs/performance.md has the measurements). So
threads spin briefly when the machine is idle as the run starts, and sleep at once otherwise.
``GOMP_SPINCOUNT`` is libgomp's (PyTorch's OpenMP on Linux) and overrides the policy there;
other OpenMP runtimes see ``PASSIVE``. Both are read when torch is first loaded, so
:func:`choose` must run before any torch import; neither changes a number computed.

Importing this module changes nothing: only :func:`choose`, called by the ``comatch`` command
before its heavy imports, sets the environment of the process (the program's own choice, not a
library's). A process started by one that made this choice (torchrun's workers, subprocesses)
inherits the variables; a marker tells it that they were chosen, and it chooses again for itself.

Only the standard library is imported here.
"""

from __future__ import annotations

import os
import sys
import time

CHOSEN = "COMATCH_OPENMP_CHOSEN"
"""Marks the variables as comatch's choice (not the user's)."""

wait = "as the environment sets"
"""How idle OpenMP threads wait in this process, and why (shown when a run starts)."""


def busy_cores(cores: set[int], window: float = 0.1) -> float | None:
    """How many of ``cores`` other processes keep busy now: their busy time (user, nice, system,
    interrupts; not idle, I/O wait or time stolen by a hypervisor) over ``window`` seconds while
    this process sleeps, from ``/proc/stat``. None where that cannot be read (not Linux)."""

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
        ticks_per_second = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return min(busy / (ticks_per_second * window), float(len(cores)))  # ticks fall unevenly in the window


def usable_cores() -> set[int] | None:
    """The cores this process may run on (None where the OS does not say: macOS, Windows)."""
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None


def why_not_idle() -> str:
    """Why OpenMP threads should not spin here ("" if this process looks alone on the machine:
    one training process, at least 2 usable cores, other processes keeping under a quarter of
    them busy right now). The machine is looked at over the 0.1 s before the choice, not through
    the load average, which still counts a job that ended a minute ago (an install, the previous
    run): a run started right after one chose sleeping threads and took 1.6x as long per step."""
    if int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1) > 1:
        return "several training processes share the machine"
    usable = usable_cores()
    if usable is None:
        return "the machine's load is unknown"
    if len(usable) < 2:
        return "one core"
    busy = busy_cores(usable)
    if busy is None:
        return "the machine's load is unknown"
    if busy < len(usable) / 4:
        return ""
    return f"the machine was busy at the start, {busy:.1f} of {len(usable)} cores in use"


def choose() -> str:
    """Set how idle OpenMP threads wait in this process, unless the environment already says.

    Returns:
        What was chosen and why (also kept in :data:`wait`).
    """
    global wait
    env = os.environ
    if env.pop(CHOSEN, None) == "1":  # inherited from a process that chose for itself
        env.pop("OMP_WAIT_POLICY", None)
        env.pop("GOMP_SPINCOUNT", None)
    wait = "as the environment sets: " + ", ".join(
        f"{key}={env[key]}" for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if key in env)
    if "torch" in sys.modules:  # OpenMP has read its settings already: choosing now would change nothing
        wait = "as when torch was loaded, before the choice"
    elif "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        env[CHOSEN] = "1"
        reason = why_not_idle()
        if reason:
            wait = f"idle threads sleep: {reason}"
        else:
            env["GOMP_SPINCOUNT"] = "10000"
            wait = "idle threads spin briefly: the machine was idle at the start"
    elif "OMP_WAIT_POLICY" not in env:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return wait
