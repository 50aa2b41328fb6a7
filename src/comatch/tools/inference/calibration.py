"""Confidence you can trust: temperature scaling, calibration error, class-balanced metrics.

After training, one temperature ``T`` is fitted on the validation part (held-out labelled
images; without one ``T`` stays 1: see :func:`calibration_split`) by minimising the negative log-likelihood of ``softmax(logits / T)``
over ``log T`` with L-BFGS. ``RUN_DIR/calibration.json`` stores it; ``predict``, ``export``,
``evaluate`` and the report read it from there. Fitting a finished run's temperature (loading
its model and data) is :mod:`comatch.tools.trust.run_calibration`; this module holds the measures and
the file.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from comatch.errors import UserError
from comatch.tools.inference.metrics import balanced_accuracy, macro_f1  # noqa: F401 - the class-balanced metrics, here too

CALIBRATION_FILE = "calibration.json"
BINS = 15
TEMPERATURE_RANGE = (0.05, 20.0)
"""The temperatures a fit gives (and a read accepts, clamping what lies outside)."""
_WARNED: set[str] = set()  # calibration files whose clamped temperature was reported


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
    return min(max(t, TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1]) if math.isfinite(t) else 1.0


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory of a checkpoint file (``RUN/checkpoints/x.pt`` -> ``RUN``)."""
    folder = Path(checkpoint).parent
    return folder.parent if folder.name == "checkpoints" else folder


def read_calibration(run_dir: Path, say: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """``RUN_DIR/calibration.json``, checked; None when the run has none.

    A temperature outside the fitting range :data:`TEMPERATURE_RANGE` is clamped into it, with
    a warning (``say``, default stderr; once per file and process).

    Raises:
        UserError: the file cannot be read, is not JSON, or its temperature is not a positive
            finite number ("hot", null, NaN, 0): the message names the file and how to fix it.
    """
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.exists():  # (a folder of that name is met below, as unreadable)
        return None
    fix = f"run `comatch calibrate {run_dir}` again, or delete the file to use uncalibrated probabilities"
    try:
        data = json.loads(path.read_text(), parse_constant=lambda name: math.nan)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not valid JSON"
        raise UserError(f"cannot read {path} ({reason}); {fix}") from None
    t = data.get("temperature") if isinstance(data, dict) else None
    if not isinstance(data, dict) or isinstance(t, bool) or not isinstance(t, (int, float)) \
            or not math.isfinite(t) or t <= 0:
        what = "no JSON object" if not isinstance(data, dict) else f"temperature {json.dumps(t)} is not a positive number"
        raise UserError(f"{path} is damaged ({what}); {fix}")
    low, high = TEMPERATURE_RANGE
    if not low <= t <= high:
        clamped = min(max(float(t), low), high)
        if str(path) not in _WARNED:
            _WARNED.add(str(path))
            (say or (lambda text: print(text, file=sys.stderr)))(
                f"comatch: warning: {path}: temperature {t:g} lies outside the range a fit gives "
                f"[{low:g}, {high:g}]; using {clamped:g} (run `comatch calibrate {run_dir}` to fit it again)")
        data = {**data, "temperature": clamped}
    return data


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
