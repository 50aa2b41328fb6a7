"""Start the encoder from pretrained weights (MoCo v2, SimCLR, torchvision or timm state_dicts).

Checkpoints of self-supervised methods name the same ResNet tensors with different
prefixes: ``module.encoder_q.conv1.weight`` (MoCo), ``module.``/``encoder.``/``backbone.``/
``model.`` (SimCLR and others), or none at all (a torchvision ``state_dict``). Each key is
stripped of such prefixes until it names a tensor of our encoder (for
:class:`~comatch.models.ResNetEncoder`, which wraps torchvision's ResNet as ``.net``, the
torchvision names are tried under ``net.`` too). Keys of other parts (MoCo's key encoder
``encoder_k`` and queue, classifier ``fc`` and projection heads) match nothing and are
reported as skipped. A timm backbone (:class:`~comatch.models.timm_backbone.TimmEncoder`)
keeps its model as ``.net`` too, so timm's own ``state_dict`` files (``.pth`` or
``.safetensors``) load the same way. A first convolution stored for 3 channels loads into a
1-channel network as the sum over its input channels (and the reverse as a third of the
weights on each), which keeps the response to gray images unchanged.
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from comatch.errors import UserError

PREFIXES = ("module.", "encoder_q.", "encoder.", "backbone.", "model.", "net.", "base_encoder.")
"""Key prefixes stripped, in any order, until a key names an encoder tensor."""
CONTAINERS = ("state_dict", "ema", "model", "network", "encoder", "backbone")
"""Checkpoint entries that may hold the state dict itself (a comatch checkpoint: its EMA weights)."""


@dataclass
class InitReport:
    """What :func:`load_encoder_weights` did.

    Attributes:
        loaded: encoder tensor names that were set from the checkpoint.
        skipped: checkpoint keys that were not used, each with the reason.
        missing: encoder tensor names the checkpoint did not provide (left as initialised).
    """

    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def summary(self, path: Path) -> str:
        """One line for the user."""
        examples = ", ".join(list(self.skipped)[:3])
        text = f"init: loaded {len(self.loaded)} encoder tensors from {path}"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} checkpoint keys (e.g. {examples})"
        if self.missing:
            text += f"; {len(self.missing)} encoder tensors not in the checkpoint keep their random init"
        return text


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, from wherever the file keeps them.

    Raises:
        UserError: the file is missing, unreadable, or holds no tensors.
    """
    try:
        raw = _load_safetensors(path) if path.suffix == ".safetensors" else _load_tensors(path)
    except FileNotFoundError:
        raise UserError(f"model.init: {path} does not exist; check the path") from None
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"model.init: cannot read {path} as a PyTorch checkpoint ({first[:120]}); "
                        "save the encoder's state_dict with torch.save") from None
    for _ in range(3):  # unwrap {"state_dict": {...}} and the like
        if isinstance(raw, dict) and not _is_state_dict(raw):
            inner = next((raw[k] for k in CONTAINERS if isinstance(raw.get(k), dict)), None)
            if inner is None:
                break
            raw = inner
    if not isinstance(raw, dict) or not _is_state_dict(raw):
        raise UserError(f"model.init: {path} holds no state_dict of tensors; save the encoder's "
                        "state_dict with torch.save")
    return {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def _load_tensors(path: Path) -> object:
    """``torch.load(path, weights_only=True)``; a file that also holds NumPy arrays (a comatch
    run's checkpoint keeps its random states so) loads with just those NumPy types allowed.

    Raises:
        pickle.UnpicklingError: the file needs other types; OSError and the like: unreadable.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        if not needed or not all(name.startswith("numpy.") for name in needed):
            raise
        allowed = []
        for name in needed:
            module, _, attribute = name.rpartition(".")
            allowed.append(getattr(importlib.import_module(module), attribute))
        import numpy as np

        # the dtype classes of the arrays (numpy.dtypes.UInt32DType and the like) are not listed above
        allowed += [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"]
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (timm's and the Hugging Face Hub's format).

    Raises:
        FileNotFoundError: no such file.
        OSError: the file is not a safetensors file, or the safetensors package is missing.
    """
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise OSError("reading .safetensors needs the safetensors package (pip install safetensors)") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # noqa: BLE001 -- safetensors raises its own error types
        raise OSError(str(err)) from None


def adapt_input_channels(tensor: torch.Tensor, target: torch.Size) -> torch.Tensor | None:
    """A first-layer conv weight ``[O, C, k, k]`` converted to ``target``'s channel count.

    3 -> 1 channels: the sum over input channels (a gray image replicated to RGB gives the
    same response); 1 -> 3: the weight divided by 3 on each channel.

    Returns:
        The converted tensor, or None when the shapes differ in more than 1 vs 3 input channels.
    """
    if tensor.ndim != 4 or len(target) != 4 or tensor.shape[0] != target[0] or tensor.shape[2:] != target[2:]:
        return None
    source_ch, target_ch = tensor.shape[1], target[1]
    if (source_ch, target_ch) == (3, 1):
        return tensor.sum(dim=1, keepdim=True)  # [O, 3, k, k] -> [O, 1, k, k]
    if (source_ch, target_ch) == (1, 3):
        return tensor.expand(-1, 3, -1, -1) / 3.0  # [O, 1, k, k] -> [O, 3, k, k]
    return None


def _is_state_dict(mapping: dict) -> bool:
    return bool(mapping) and any(isinstance(v, torch.Tensor) for v in mapping.values())


def target_name(key: str, targets: dict[str, torch.Tensor]) -> str | None:
    """The encoder tensor a checkpoint key names, after stripping known prefixes, or None."""
    candidate = key
    while True:
        for name in (candidate, f"net.{candidate}"):
            if name in targets:
                return name
        prefix = next((p for p in PREFIXES if candidate.startswith(p)), None)
        if prefix is None:
            return None
        candidate = candidate[len(prefix) :]


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> InitReport:
    """Load the tensors of ``path`` that fit ``encoder``; report loaded and skipped keys.

    Args:
        encoder: the network's encoder (``model.encoder``).
        path: a MoCo v2 / SimCLR checkpoint, a plain (torchvision) ResNet state_dict, or a
            timm model's state_dict (``.pth`` or ``.safetensors``) for a timm backbone.

    Returns:
        The :class:`InitReport`.

    Raises:
        UserError: the file cannot be read, or not one of its tensors fits the encoder.
    """
    path = Path(path)
    source = read_state_dict(path)
    targets = encoder.state_dict()
    report, update = InitReport(), {}
    for key, tensor in source.items():
        name = target_name(key, targets)
        if name is None:
            report.skipped[key] = "no encoder tensor of that name (head, key encoder or other part)"
        elif tensor.shape != targets[name].shape and adapt_input_channels(tensor, targets[name].shape) is None:
            report.skipped[key] = f"shape {tuple(tensor.shape)} != {tuple(targets[name].shape)}"
        elif name in update:
            report.skipped[key] = f"{name} already set from another key"
        else:
            update[name] = tensor if tensor.shape == targets[name].shape else \
                adapt_input_channels(tensor, targets[name].shape)
    if not update:
        examples = ", ".join(list(source)[:3])
        raise UserError(f"model.init: no tensor of {path} fits the encoder ({len(source)} keys such "
                        f"as {examples}); give a MoCo v2, SimCLR or torchvision checkpoint of the same architecture")
    encoder.load_state_dict(update, strict=False)
    report.loaded = sorted(update)
    report.missing = sorted(set(targets) - set(update))
    return report
