"""Use a trained checkpoint: load it with its preprocessing, evaluate it, predict images.

The preprocessing is the trainer's evaluation path, rebuilt from the checkpoint: every image
file is decoded by :func:`comatch.data.images.decode_image` at the model's channel count and
image size (the function the trainer's datasets use), passed through the trainer's evaluation
view and normalised with the checkpoint's ``normalization`` statistics.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from comatch import config as cfg
from comatch.training.checkpoint import load_file, load_newest
from comatch.data.loaders import eval_loader
from comatch.data.images import UnreadableImage, decode_image
from comatch.data.images import View
from comatch.errors import UserError
from comatch.training.evaluation import predict
from comatch.tools.inference.metrics import confusion_matrix
from comatch.tools.inference.images import LabelledFolder
from comatch.models import build_model
from comatch.training.runtime import resolve_device
from comatch.data.preprocessing import Normalizer, eval_view, run_data

WEIGHTS = ("ema", "raw")
UNKNOWN = "unknown"  # the class of an image below predict's --unknown-threshold


@dataclass
class LoadedModel:
    """A checkpoint's network (in eval mode) with everything needed to feed it.

    Attributes:
        model: the network, ``forward`` returns ``(logits, z)``.
        config: the run's configuration.
        class_names: class names in label order.
        mean, std: per-channel normalisation statistics in [0, 1].
        device: where the model lives.
        weights: ``"ema"`` or ``"raw"``.
        step: the training step of the checkpoint.
        path: the checkpoint file.
        channels, image_size: what the network takes (as the checkpoint records it).
        temperature: ``T`` of the calibrated probabilities ``softmax(logits / T)``, from the
            run's ``calibration.json`` (1.0: not calibrated).
    """

    model: nn.Module
    config: cfg.Config
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    weights: str
    step: int
    path: Path
    channels: int
    image_size: int
    temperature: float = 1.0

    def eval_view(self) -> View:
        """The trainer's per-image evaluation view, built from the checkpoint's settings."""
        return eval_view(self.config, self.image_size)

    def decode(self, path: str | Path) -> torch.Tensor:
        """An image file as the network's uint8 input ``[C, S, S]``, as the trainer decodes it.

        Raises:
            UnreadableImage: the file cannot be decoded (the message says why).
        """
        return decode_image(path, self.image_size, self.channels)

    def preprocess(self) -> Normalizer:
        """Moves a uint8 batch to the device and normalises it, as the trainer does."""
        return Normalizer(self.mean, self.std, self.channels, self.device)


def read_checkpoint(source: str | Path) -> tuple[dict[str, Any], Path]:
    """The checkpoint state of a ``.pt`` file, or the newest one of a run directory.

    Raises:
        UserError: missing, damaged or not a comatch checkpoint.
    """
    source = Path(source)
    if source.is_dir():
        folder = source / "checkpoints" if (source / "checkpoints").is_dir() else source
        return load_newest(folder, purpose="use")
    return load_file(source), source


def _weights_of(state: dict[str, Any], weights: str, path: Path) -> dict[str, torch.Tensor]:
    if weights not in WEIGHTS:
        raise UserError(f"unknown weights {weights!r}; choose ema or raw")
    if weights == "raw":
        return state["model"]
    if "ema" not in state:
        raise UserError(f"{path} holds no EMA weights; use --raw")
    return {k.removeprefix("module."): v for k, v in state["ema"].items()}


def load_model(source: str | Path, weights: str = "ema", device: str = "cpu", calibrated: bool = True) -> LoadedModel:
    """Load a checkpoint's network and preprocessing.

    Args:
        source: a checkpoint file or a run directory (its newest checkpoint).
        weights: ``"ema"`` (the evaluation average, default) or ``"raw"``.
        device: ``auto``, ``cpu`` or ``cuda``.
        calibrated: use the temperature of the run's ``calibration.json`` (EMA weights only;
            it was fitted for them).

    Returns:
        The model in eval mode on ``device`` with its class names and statistics.

    Raises:
        UserError: not a checkpoint, an invalid config, or weights that do not fit the
            network its config describes.
    """
    state, path = read_checkpoint(source)
    config = cfg.validate(state["config"])
    names = state.get("class_names")
    norm = state.get("normalization")
    if not names or not norm:
        raise UserError(f"{path} lacks class names or normalisation statistics; "
                        "it is not a checkpoint of `comatch train`")
    shape = state.get("input") or {"channels": config.data.channels, "image_size": config.data.image_size}
    channels, size = shape["channels"], shape["image_size"]
    try:
        model = build_model(config.model.arch, len(names), in_channels=channels,
                            proj_dim=config.model.proj_dim, bn_momentum=config.model.bn_momentum,
                            head_activation=config.model.head_activation)
        model.load_state_dict(_weights_of(state, weights, path))
    except (ValueError, RuntimeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        detail = lines[1] if len(lines) > 1 else lines[0]  # the first mismatch, not the heading
        raise UserError(
            f"the weights in {path} do not match the model its config describes "
            f"({config.model.arch}, {len(names)} classes, {channels} channels): {detail[:240]}"
        ) from None
    target = resolve_device(device)
    return LoadedModel(model.to(target).eval(), config, list(names), tuple(norm["mean"]), tuple(norm["std"]),
                       target, weights, int(state.get("step", 0)), path, channels, size,
                       run_temperature(path) if calibrated and weights == "ema" else 1.0)


def run_temperature(checkpoint: Path) -> float:
    """The fitted temperature of a checkpoint's run (``calibration.json``), else 1.0."""
    from comatch.tools.inference.calibration import read_calibration, run_dir_of

    calibration = read_calibration(run_dir_of(checkpoint))
    return float(calibration["temperature"]) if calibration else 1.0


def run_test_set(config: cfg.Config, data_root: str | Path | None = None) -> Dataset:
    """The test split of the dataset a run trained on, as its config records it.

    Raises:
        UserError: the data cannot be found (see ``--data-root``).
    """
    return run_data(config, None if data_root is None else str(data_root)).test


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Top-1, top-5, per-class accuracy and confusion matrix of ``logits [N, C]`` vs ``labels [N]``.

    Returns:
        ``top1``, ``top5`` (top-``min(5, C)``), ``per_class_accuracy`` (name -> accuracy, None
        for a class without test images), ``confusion_matrix`` (rows: true class, columns:
        predicted; counts) and ``num_images``.
    """
    num_classes = len(class_names)
    k = min(5, num_classes)
    top = logits.topk(k, dim=1).indices  # [N, k]
    predicted = top[:, 0]
    confusion = torch.from_numpy(confusion_matrix(labels, predicted, num_classes))  # [true, predicted]
    per_class = confusion.diag().float() / confusion.sum(1).clamp_min(1).float()
    counts = confusion.sum(1)
    return {
        "num_images": int(labels.numel()),
        "top1": (predicted == labels).float().mean().item(),
        "top5": (top == labels.unsqueeze(1)).any(1).float().mean().item(),
        "per_class_accuracy": {n: (per_class[i].item() if counts[i] else None) for i, n in enumerate(class_names)},
        "confusion_matrix": confusion.tolist(),
    }


def evaluate(loaded: LoadedModel, dataset: Dataset, batch_size: int = 256) -> dict[str, Any]:
    """Evaluate ``loaded`` on a dataset of ``(uint8 image, label)``.

    Returns:
        The checkpoint's identity (``checkpoint``, ``step``, ``weights``, ``class_names``)
        and :func:`classification_metrics`.
    """
    loader = eval_loader(dataset, loaded.eval_view(), batch_size)
    logits, _, labels = predict(loaded.model, loader, loaded.preprocess())
    metrics = classification_metrics(logits, labels, loaded.class_names)
    return {"checkpoint": str(loaded.path), "step": loaded.step, "weights": loaded.weights,
            "class_names": loaded.class_names, **metrics, **trust_metrics(logits, labels, metrics, loaded.temperature)}


def trust_metrics(logits: torch.Tensor, labels: torch.Tensor, metrics: dict[str, Any], temperature: float) -> dict[str, Any]:
    """Balanced accuracy, macro-F1 and the calibration error (15 bins) before and after ``T``."""
    from comatch.tools.inference.calibration import expected_calibration_error
    from comatch.tools.inference.metrics import balanced_accuracy, macro_f1

    return {
        "balanced_accuracy": balanced_accuracy(metrics["confusion_matrix"]),
        "macro_f1": macro_f1(metrics["confusion_matrix"]),
        "temperature": temperature,
        "ece": expected_calibration_error(torch.softmax(logits.double(), 1), labels),
        "ece_calibrated": expected_calibration_error(torch.softmax(logits.double() / temperature, 1), labels),
    }


def evaluation_data(
    loaded: LoadedModel, data_root: str | Path | None = None, test_dir: str | Path | None = None
) -> Dataset:
    """The data ``comatch evaluate`` uses: a labelled folder, or the run's own test split."""
    if test_dir is not None:
        return LabelledFolder(Path(test_dir), loaded.class_names, loaded.channels, loaded.image_size)
    return run_test_set(loaded.config, data_root)


@dataclass
class Prediction:
    """One image's result: ``top`` holds ``(class name, probability)``, best first; or an error."""

    path: Path
    top: list[tuple[str, float]]
    error: str = ""
    unknown_score: float | None = None
    unknown: bool = False


@torch.no_grad()
def predict_files(loaded: LoadedModel, files: Sequence[Path], batch_size: int = 64, top_k: int = 5,
                  progress: bool = True, screen: Any = None) -> list[Prediction]:
    """Classify image files in batches; unreadable files become error rows.

    Args:
        loaded: the model.
        files: image files (see :func:`comatch.tools.inference.images.find_images`).
        batch_size: images per forward pass.
        top_k: classes kept per image (at most the number of classes).
        progress: show a tqdm bar on stderr (only when stderr is a terminal).
        screen: a :class:`comatch.tools.trust.screen.Screen`: also score each image and flag those of
            none of the run's classes.

    Returns:
        One :class:`Prediction` per file, in order.
    """
    k = max(1, min(top_k, len(loaded.class_names)))
    view, preprocess = loaded.eval_view(), loaded.preprocess()
    results: list[Prediction] = []
    with tqdm(total=len(files), unit="img", disable=not progress or not sys.stderr.isatty(),
              file=sys.stderr, dynamic_ncols=True) as bar:
        for start in range(0, len(files), batch_size):
            rows = [Prediction(path, []) for path in files[start:start + batch_size]]
            images, readable = [], []
            for row in rows:
                try:
                    images.append(view(loaded.decode(row.path)))
                    readable.append(row)
                except UnreadableImage as err:
                    row.error = str(err)
            if images:
                logits, z = loaded.model(preprocess(torch.stack(images)))  # [n, C], [n, D]
                probs, idx = torch.softmax(logits.float() / loaded.temperature, dim=1).topk(k, dim=1)  # [n, k]
                for row, p, i in zip(readable, probs.cpu().tolist(), idx.cpu().tolist()):
                    row.top = [(loaded.class_names[c], q) for c, q in zip(i, p)]
                if screen is not None:
                    scores = screen.scores(z.float().cpu())
                    for row, score in zip(readable, scores.tolist()):
                        row.unknown_score, row.unknown = score, score > screen.threshold
            results.extend(rows)
            bar.update(len(rows))
    return results


def write_predictions_csv(predictions: Sequence[Prediction], handle: TextIO, top_k: int,
                          unknown_threshold: float | None = None) -> None:
    """Write ``path,class,probability[,class_2,probability_2,...],error`` rows.

    With ``unknown_threshold`` P, an image whose top probability is below P gets the class
    ``unknown`` (its probability stays the top class's, the next columns name the classes).
    Screened predictions (:func:`predict_files` with a screen) add an ``unknown_score`` column,
    and a flagged image gets the class ``unknown`` too.
    """
    extra = [f"{name}_{i}" for i in range(2, top_k + 1) for name in ("class", "probability")]
    screened = any(p.unknown_score is not None for p in predictions)
    writer = csv.writer(handle)
    writer.writerow(["path", "class", "probability", *extra, *(["unknown_score"] if screened else []), "error"])
    for p in predictions:
        cells: list[Any] = []
        for i in range(top_k):
            name, prob = p.top[i] if i < len(p.top) else ("", "")
            if i == 0 and unknown_threshold is not None and prob != "" and prob < unknown_threshold:
                name = UNKNOWN
            if i == 0 and p.unknown:
                name = UNKNOWN
            cells += [name, f"{prob:.6f}" if prob != "" else ""]
        if screened:
            cells.append("" if p.unknown_score is None else f"{p.unknown_score:.6f}")
        writer.writerow([str(p.path), *cells, p.error])
