"""Exponential moving average (EMA) of model weights, used for evaluation."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["BUFFER_MODES", "ModelEMA", "ema_decay"]

BUFFER_MODES = ("average", "copy")
"""How the EMA treats floating-point buffers (BatchNorm running statistics)."""


def ema_decay(step: int, decay: float, warmup: bool = True) -> float:
    """EMA decay at a given step.

    With warm-up the decay is ``min(decay, (1 + step) / (10 + step))``: it
    starts at 0.1 so that the average quickly forgets the random init, which
    keeps the EMA useful in short runs. Without warm-up it is constant.

    Args:
        step: Number of optimizer steps taken before this update (0-based).
        decay: Target (maximum) decay in ``[0, 1]``.
        warmup: Whether to use the warm-up schedule.

    Returns:
        The decay to use for this update.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    if not warmup:
        return float(decay)
    return float(min(decay, (1.0 + step) / (10.0 + step)))


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip DataParallel / DistributedDataParallel / torch.compile wrappers.

    Args:
        model: A possibly wrapped model.

    Returns:
        The underlying module.
    """
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class ModelEMA(nn.Module):
    """Holds an EMA copy of a model in ``self.module`` (always in eval mode).

    ``ema = d * ema + (1 - d) * model`` for floating-point parameters. With
    ``buffers="average"`` floating-point buffers (BatchNorm running statistics)
    are averaged the same way; with ``buffers="copy"`` (the released CoMatch
    code) every buffer is copied from the model at each update. Integer buffers
    such as ``num_batches_tracked`` are always copied.

    Args:
        model: Model to track; it is deep-copied (wrappers are stripped first).
        decay: Target decay.
        warmup: Use the ``(1 + step) / (10 + step)`` warm-up (see :func:`ema_decay`).
        buffers: ``"average"`` or ``"copy"`` (see above).

    Raises:
        ValueError: If ``decay`` lies outside ``[0, 1]`` or ``buffers`` is unknown.
    """

    ema_decay = staticmethod(ema_decay)

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True,
                 buffers: str = "average") -> None:
        super().__init__()
        ema_decay(0, decay, warmup)  # validates decay
        if buffers not in BUFFER_MODES:
            raise ValueError(f"EMA buffers must be one of {BUFFER_MODES}, got {buffers!r}")
        self.buffers_mode = buffers
        self.module = copy.deepcopy(_unwrap(model))
        self.module.eval()
        self.module.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = bool(warmup)

    def train(self, mode: bool = True) -> ModelEMA:
        """Keep the EMA copy in eval mode whatever ``mode`` is.

        Args:
            mode: Ignored for the wrapped copy (BatchNorm must not update its stats).

        Returns:
            self.
        """
        self.training = False
        self.module.eval()
        return self

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> float:
        """Move the EMA towards ``model``.

        Args:
            model: The model being trained (same architecture).
            step: Number of optimizer steps taken before this update (0-based).

        Returns:
            The decay used.
        """
        d = ema_decay(step, self.decay, self.warmup)
        ema_float: list[torch.Tensor] = []
        new_float: list[torch.Tensor] = []
        for (module, kind, key), (ema_module, ema_kind), averaged in self._slots_of(_unwrap(model)):
            new_t, ema_t = getattr(module, kind)[key].detach(), getattr(ema_module, ema_kind)[key]
            if new_t.device != ema_t.device or (averaged and new_t.dtype != ema_t.dtype):
                new_t = new_t.to(ema_t.device, ema_t.dtype if averaged else new_t.dtype)
            if averaged:
                ema_float.append(ema_t)
                new_float.append(new_t)
            else:
                ema_t.copy_(new_t)
        if ema_float:
            # lerp(ema, new, w) = ema + w * (new - ema) = d * ema + (1 - d) * new
            torch._foreach_lerp_(ema_float, new_float, 1.0 - d)
        return d

    def _slots_of(self, src: nn.Module) -> list[tuple[tuple[nn.Module, str, str], tuple[nn.Module, str], bool]]:
        """``((module, "_parameters" or "_buffers", name), (EMA module, its kind), averaged)`` for
        each tensor of the EMA copy: where the model and the EMA copy keep it, looked up by name
        once per model (walking the module trees every step costs about a millisecond on a small
        network); the tensors themselves are read at each update (``Module.to`` and
        ``load_state_dict(assign=True)`` replace them, on either side)."""
        cached = getattr(self, "_slots", None)
        if cached is not None and cached[0] is src:
            return cached[1]
        modules, ema_modules = dict(src.named_modules()), dict(self.module.named_modules())
        own_buffers = {name for name, _ in self.module.named_buffers()}
        copy_buffers = self.buffers_mode == "copy"
        slots = []
        for name, ema_t in self._named_tensors():
            owner, _, key = name.rpartition(".")
            module, ema_module = modules.get(owner), ema_modules[owner]
            kind = "_parameters" if module is not None and key in module._parameters else "_buffers"
            if module is None or getattr(module, kind).get(key) is None:
                raise KeyError(f"tensor {name!r} of the EMA model is missing from the model")
            ema_kind = "_parameters" if key in ema_module._parameters else "_buffers"
            averaged = ema_t.is_floating_point() and not (copy_buffers and name in own_buffers)
            slots.append(((module, kind, key), (ema_module, ema_kind), averaged))
        self._slots = (src, slots)
        return slots

    def __getstate__(self) -> dict[str, Any]:
        """A copy or pickle leaves out the lookup of the trained model's tensors (it would
        carry the trained model along)."""
        state = super().__getstate__()
        state.pop("_slots", None)
        return state

    def _named_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """All parameters and buffers of the EMA copy.

        Returns:
            ``(name, tensor)`` pairs with names relative to ``self.module``.
        """
        return list(self.module.named_parameters()) + list(self.module.named_buffers())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the EMA model.

        Args:
            *args: Positional inputs of the wrapped model.
            **kwargs: Keyword inputs of the wrapped model.

        Returns:
            Whatever the wrapped model returns.
        """
        return self.module(*args, **kwargs)

    def extra_repr(self) -> str:
        """Short description for ``repr``."""
        return f"decay={self.decay}, warmup={self.warmup}, buffers={self.buffers_mode}"
