"""Confidence you can trust: temperature scaling, calibration error, class-balanced metrics.

After training, one temperature ``T`` is fitted on the validation part (held-out labelled
images; without one ``T`` stays 1: see :func:`calibration_split`) by minimising the negative log-likelihood of ``softmax(logits / T)``
over ``log T`` with L-BFGS. ``RUN_DIR/calibration.json`` stores it; ``predict``, ``export``,
``evaluate`` and the report read it from there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from comatch.tools.metrics import balanced_accuracy, macro_f1  # noqa: F401 - the class-balanced metrics, here too

CALIBRATION_FILE = "calibration.json"
BINS = 15


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> dict[str, list[float]]:
    """Confidence, accuracy and share of the images in ``bins`` equal-width confidence bins.

    Args:
        probs: class probabilities ``[N, C]``.
        labels: true classes ``[N]``.
        bins: number of bins over (0, 1]; bin ``b`` holds confidences in ``(b/B, (b+1)/B]``.

    Returns:
        ``confidence``, ``accuracy`` (NaN for an empty bin) and ``share`` per bin.
    """
    confidence, predicted = probs.max(dim=1)  # [N]
    correct = (predicted == labels).double()
    index = (confidence.double() * bins).ceil().long().clamp(1, bins) - 1  # [N], bin of each image
    count = torch.bincount(index, minlength=bins).double()
    conf_sum = torch.bincount(index, weights=confidence.double(), minlength=bins)
    acc_sum = torch.bincount(index, weights=correct, minlength=bins)
    safe = count.clamp_min(1)
    nan = torch.full_like(count, math.nan)
    return {
        "confidence": torch.where(count > 0, conf_sum / safe, nan).tolist(),
        "accuracy": torch.where(count > 0, acc_sum / safe, nan).tolist(),
        "share": (count / max(len(labels), 1)).tolist(),
    }


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> float:
    """``ECE = sum_b (n_b / N) |acc_b - conf_b|`` over equal-width confidence bins (15 by default)."""
    table = reliability_bins(probs, labels, bins)
    return float(sum(s * abs(a - c) for s, a, c in zip(table["share"], table["accuracy"], table["confidence"]) if s > 0))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature ``T`` minimising ``NLL(softmax(logits / T), labels)``.

    Optimised over ``log T`` (so ``T`` stays positive) with L-BFGS from ``T = 1``, the result
    clamped to [0.05, 20].

    Args:
        logits: ``[N, C]``; labels: ``[N]``.
        max_iter: L-BFGS iterations.

    Raises:
        ValueError: no images.
    """
    if logits.shape[0] == 0:
        raise ValueError("fitting a temperature needs at least one labelled image")
    logits, labels = logits.detach().double(), labels.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().exp())
    return min(max(t, 0.05), 20.0) if math.isfinite(t) else 1.0


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory of a checkpoint file (``RUN/checkpoints/x.pt`` -> ``RUN``)."""
    folder = Path(checkpoint).parent
    return folder.parent if folder.name == "checkpoints" else folder


def read_calibration(run_dir: Path) -> dict[str, Any] | None:
    """``RUN_DIR/calibration.json``, or None when the run has none (or it is unreadable)."""
    path = Path(run_dir) / CALIBRATION_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and float(data.get("temperature", 0)) > 0 else None


def calibrate(logits: torch.Tensor, labels: torch.Tensor, fitted_on: str, bins: int = BINS) -> dict[str, Any]:
    """Fit ``T`` on ``logits``/``labels`` and measure the ECE there before and after.

    Returns:
        ``temperature``, ``fitted_on``, ``images``, ``bins``, ``ece_before``, ``ece_after``,
        ``nll_before``, ``nll_after`` (all on the fitting images).
    """
    t = fit_temperature(logits, labels)
    logits = logits.double()
    return {
        "temperature": t, "fitted_on": fitted_on, "images": int(labels.numel()), "bins": bins,
        "ece_before": expected_calibration_error(torch.softmax(logits, 1), labels, bins),
        "ece_after": expected_calibration_error(torch.softmax(logits / t, 1), labels, bins),
        "nll_before": float(F.cross_entropy(logits, labels)),
        "nll_after": float(F.cross_entropy(logits / t, labels)),
    }


def calibration_split(data: Any) -> tuple[Any, str]:
    """The images ``T`` is fitted on: the validation part, else the labelled images, whose fit
    :func:`calibrate_run` measures but does not apply.

    The labelled images were trained on, so the network is more confident on them than on
    new images: a temperature fitted there makes new images over-confident. Give the run a
    validation part (``--val`` for folders; digits has one) for a fit.
    """
    if data.val is not None and len(data.val):
        return data.val, "validation part"
    return data.labelled, "labelled images (trained on: no validation part; not applied)"


def calibrate_run(run_dir: Path, device: str = "cpu", batch_size: int = 256, data: Any = None) -> dict[str, Any]:
    """Fit the run's temperature on its EMA model and write ``RUN_DIR/calibration.json``.

    The test part is measured too (``test_ece_before``/``test_ece_after``), never fitted on.
    ``data``: the run's :class:`~comatch.data.RunData` when the caller has it (the trainer);
    None: built from the run's config.

    Raises:
        UserError: not a run directory, or its data cannot be loaded.
    """
    from comatch.data.loaders import eval_loader
    from comatch.data.preprocessing import run_data
    from comatch.tools.evaluation import predict
    from comatch.tools.inference import load_model
    from comatch.training.runtime import atomic_write_text

    loaded = load_model(run_dir, "ema", device, calibrated=False)
    data = data if data is not None else run_data(loaded.config)
    part, name = calibration_split(data)
    logits, _, labels = predict(loaded.model, eval_loader(part, loaded.eval_view(), batch_size), loaded.preprocess())
    result = calibrate(logits, labels, name)
    if part is not data.val:  # fitted on trained-on images it would make new ones over-confident: not applied
        result.update(temperature=1.0, ece_after=result["ece_before"], nll_after=result["nll_before"], fitted_on=None,
                      not_fitted="no validation part: the labelled images were trained on; give --val (or "
                                 "data.val_per_class) for a temperature")
    if data.test is not None and len(data.test):
        logits, _, labels = predict(loaded.model, eval_loader(data.test, loaded.eval_view(), batch_size),
                                    loaded.preprocess())
        t = result["temperature"]
        result["test_ece_before"] = expected_calibration_error(torch.softmax(logits.double(), 1), labels)
        result["test_ece_after"] = expected_calibration_error(torch.softmax(logits.double() / t, 1), labels)
    result["step"], result["weights"] = loaded.step, "ema"
    atomic_write_text(Path(run_dir) / CALIBRATION_FILE, json.dumps(result, indent=2) + "\n")
    return result
