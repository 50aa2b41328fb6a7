"""Which CPU kernels compute a run: ``run.numerics``.

PyTorch picks its CPU kernels by the instruction set of the machine: ATen's vectorised kernels
(reductions, element-wise maths, random numbers) by ``ATEN_CPU_CAPABILITY`` (SSE4.1 / AVX2 /
AVX-512), oneDNN's convolutions by the ISA and cache sizes it detects, MKL's matrix products by
its own dispatch. Each choice changes the order of floating-point additions, and one rounding
difference early in training changes a whole run: the same command gives other numbers on a
machine with another CPU model.

``fast`` (the default) lets every library choose the fastest kernels for this CPU: runs are
bit-reproducible on one machine (same code, torch build, thread count), not across CPU models.

``portable`` pins every choice to code every x86-64 CPU runs the same way, so that a CPU run
computes the same bits on any x86-64 machine at the same thread count, torch build and code:

- ATen's kernels at the ``default`` capability (the baseline x86-64 build, no AVX);
- oneDNN off (``torch.backends.mkldnn``): convolutions go through im2col and the BLAS, whose
  blocking would otherwise follow the detected cache sizes; its ISA is pinned too, in case a
  kernel still reaches it;
- MKL's conditional numerical reproducibility at its ``COMPATIBLE`` code path, in strict mode
  (results independent of the memory alignment of the operands).

The environment variables must be set before torch is loaded (ATen, oneDNN and MKL read them
once): the command line does it first thing (:func:`pin`), before any heavy import. Settings the
user's environment already holds for these libraries are overridden in portable mode. The cost
(steps are slower) is measured by ``benchmarks/numerics_cost.py``.

Only the standard library is imported here.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Literal

from comatch.errors import UserError

Numerics = Literal["fast", "portable"]
MODES: tuple[str, ...] = ("fast", "portable")

PORTABLE_ENVIRONMENT: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "DNNL_MAX_CPU_ISA": "SSE41",
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
}
"""What portable mode sets before torch loads (overriding the environment's own values)."""

_PINNED = "COMATCH_NUMERICS"  # which mode this process (and its children) was started in


class NumericsError(UserError):
    """Portable numerics were asked for after torch chose its kernels."""


def pin(mode: str) -> None:
    """Set the environment for ``mode`` before torch loads (does nothing for ``fast``).

    Subprocesses (data-loader workers, torchrun's workers) inherit the settings.

    Raises:
        NumericsError: ``mode`` is portable and torch is already loaded with other kernels.
    """
    if mode != "portable":
        return
    if "torch" in sys.modules and os.environ.get(_PINNED) != "portable":
        raise NumericsError(
            "run.numerics=portable must be chosen before torch is imported: run `comatch train ... "
            "run.numerics=portable`, or call comatch.numerics.pin('portable') before importing torch")
    os.environ.update(PORTABLE_ENVIRONMENT)
    os.environ[_PINNED] = "portable"


def apply(mode: str) -> None:
    """Apply what can be set once torch is loaded, and check the pinned kernels (training start).

    Raises:
        NumericsError: portable numerics without the environment :func:`pin` sets (torch was
            imported before the mode was pinned).
    """
    import torch

    if mode != "portable":
        return
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "DEFAULT" or any(os.environ.get(k) != v for k, v in PORTABLE_ENVIRONMENT.items()):
        raise NumericsError(
            f"run.numerics=portable needs its CPU kernels chosen before torch loads (ATen uses {capability} "
            f"here): start the run with `comatch train ... run.numerics=portable` (or call "
            f"comatch.numerics.pin('portable') before importing torch)")
    torch.backends.mkldnn.enabled = False


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; the platform's own name elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe(mode: str) -> dict[str, str]:
    """What a provenance record or summary.json says about the numerics of a run."""
    import torch

    return {"numerics": mode, "cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
