"""Turning configuration into the pieces a run's data path needs: views, normalisation,
worker count, deterministic kernels. Shared by training, evaluation, prediction and export."""

from __future__ import annotations

import os

import torch

from comatch import config as cfg
from comatch.data import RunData, build_data
from comatch.data.batch_views import ViewSettings
from comatch.data.images import ResizeIfNeeded, View

# DataConfig fields about loading speed, not about which data a run sees.
LOADING_FIELDS = {"num_workers", "augment_on"}
# DataConfig fields applied by the trainer after loading (not by build_data).
TRAINING_FIELDS = {"exclude_outliers"}


def run_data(config: cfg.Config, root: str | None = None) -> RunData:
    """The datasets ``config`` describes (``root``: read the benchmark files from there instead).

    A timm backbone's input size and normalisation fill the data fields left unset
    (:func:`~comatch.models.timm_backbone.backbone_data_defaults`)."""
    from comatch.models.timm_backbone import backbone_data_defaults

    config, notes = backbone_data_defaults(config)
    fields = config.data.model_dump(exclude=LOADING_FIELDS | TRAINING_FIELDS)
    if root is not None:
        fields["root"] = root
    data = build_data(**fields, seed=config.seed)
    data.notes.extend(notes)
    return data


def view_settings(config: cfg.Config, image_size: int | None = None) -> ViewSettings:
    """The view settings of a configuration (``image_size``: the data's, when the config has none)."""
    return ViewSettings(image_size=image_size or config.data.image_size, **config.views.model_dump())


def eval_view(config: cfg.Config, image_size: int | None = None) -> View:
    """The evaluation view of a configuration: resize to its image size if needed
    (``image_size``: the data's, when the config has none)."""
    return ResizeIfNeeded(image_size or config.data.image_size)


def use_deterministic_kernels() -> None:
    """Make CUDA runs bit-reproducible: deterministic kernels, no cuDNN autotuning."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)


class Normalizer:
    """Moves a uint8 batch to the device, matches the channel count and normalises it."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], channels: int, device: torch.device) -> None:
        if len(mean) != channels:  # grayscale statistics for an RGB network: repeat them
            mean, std = mean * channels, std * channels
        self.mean = torch.tensor(mean[:channels], device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std[:channels], device=device).view(1, -1, 1, 1) * 255
        self.channels, self.device = channels, device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if images.shape[1] != self.channels:
            images = images.expand(-1, self.channels, -1, -1)
        return (images.float() - self.mean) / self.std
