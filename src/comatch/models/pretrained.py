"""Start the encoder from self-supervised weights (MoCo v2, SimCLR, torchvision ResNet).

Checkpoints of self-supervised methods name the same ResNet tensors with different
prefixes: ``module.encoder_q.conv1.weight`` (MoCo), ``module.``/``encoder.``/``backbone.``/
``model.`` (SimCLR and others), or none at all (a torchvision ``state_dict``). Each key is
stripped of such prefixes until it names a tensor of our encoder (for
:class:`~comatch.models.ResNetEncoder`, which wraps torchvision's ResNet as ``.net``, the
torchvision names are tried under ``net.`` too). Keys of other parts (MoCo's key encoder
``encoder_k`` and queue, classifier ``fc`` and projection heads) match nothing and are
reported as skipped.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from comatch.errors import UserError

PREFIXES = ("module.", "encoder_q.", "encoder.", "backbone.", "model.", "net.", "base_encoder.")
"""Key prefixes stripped, in any order, until a key names an encoder tensor."""
CONTAINERS = ("state_dict", "model", "network", "encoder", "backbone")
"""Checkpoint entries that may hold the state dict itself."""


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
        raw = torch.load(path, map_location="cpu", weights_only=True)
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
        path: a MoCo v2 / SimCLR checkpoint or a plain (torchvision) ResNet state_dict.

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
        elif tensor.shape != targets[name].shape:
            report.skipped[key] = f"shape {tuple(tensor.shape)} != {tuple(targets[name].shape)}"
        elif name in update:
            report.skipped[key] = f"{name} already set from another key"
        else:
            update[name] = tensor
    if not update:
        examples = ", ".join(list(source)[:3])
        raise UserError(f"model.init: no tensor of {path} fits the encoder ({len(source)} keys such "
                        f"as {examples}); give a MoCo v2, SimCLR or torchvision checkpoint of the same architecture")
    encoder.load_state_dict(update, strict=False)
    report.loaded = sorted(update)
    report.missing = sorted(set(targets) - set(update))
    return report
