"""Mixed precision of the network's forward pass: bf16, or fp16 with loss scaling.

Only the network runs under autocast; its outputs are cast to float32 before the CoMatch
arithmetic (softmax of pseudo-labels, graphs, losses), which therefore always runs in float32.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX-512 BF16 or AMX), where PyTorch's
    oneDNN kernels run a bf16 convolution faster than a float32 one. Elsewhere (older x86,
    ARM, macOS) bf16 on the CPU is emulated or unmeasured, and float32 stays."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def resolve_amp(mode: str, device: torch.device, numerics: str = "fast") -> str:
    """``auto``: bf16 on a CUDA device that supports it, and on a CPU that computes bf16
    natively (:func:`native_cpu_bf16`) unless ``numerics`` is ``portable`` (whose float32
    kernels compute the same bits on every x86-64 CPU); else none. Other modes as given."""
    if mode != "auto":
        return mode
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    if device.type == "cpu" and numerics != "portable" and native_cpu_bf16():
        return "bf16"
    return "none"


def resolve_channels_last(requested: bool | None, device: torch.device) -> bool:
    """``None``: channels-last on CUDA (faster convolutions with tensor cores), not on the CPU."""
    return device.type == "cuda" if requested is None else requested


class Precision:
    """Autocast for the forward pass and the matching backward and optimizer step.

    With ``fp16`` the loss is scaled before backward and the gradients unscaled before the
    step (``torch.amp.GradScaler``); a step whose scaled gradients overflow is skipped by the
    scaler and the scale lowered, as usual. ``bf16`` and ``none`` need no scaling.

    Args:
        mode: ``"none"``, ``"bf16"`` or ``"fp16"``.
        device: the training device.

    Raises:
        ValueError: unknown mode.
    """

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in DTYPES:
            raise ValueError(f"unknown precision {mode!r}; choose one of {', '.join(DTYPES)}")
        self.mode, self.device_type, self.dtype = mode, device.type, DTYPES[mode]
        self.scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")

    @property
    def scales_loss(self) -> bool:
        """Whether gradients may overflow harmlessly (fp16: the scaler skips such steps)."""
        return self.scaler.is_enabled()

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of the network's forward pass."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of the (scaled) loss."""
        self.scaler.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true scale (before checking or clipping them)."""
        if self.scales_loss:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply the gradients (the scaler skips a step whose gradients overflowed)."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def skip(self) -> None:
        """Finish a step that is not applied (keeps the scaler's bookkeeping consistent)."""
        if self.scales_loss:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The loss scale and its growth tracker (empty without fp16)."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (ignored when this run does not scale the loss)."""
        if self.scales_loss and state:
            self.scaler.load_state_dict(state)
