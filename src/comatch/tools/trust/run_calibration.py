"""Fitting a finished run's temperature: its EMA model on its validation part.

The measures and ``calibration.json`` are :mod:`comatch.tools.inference.calibration`; this module loads the
run's model (:mod:`comatch.tools.inference.checkpoint`) and data to apply them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from comatch.data.loaders import eval_loader
from comatch.data.preprocessing import run_data
from comatch.tools.inference.calibration import CALIBRATION_FILE, calibrate, expected_calibration_error
from comatch.training.evaluation import predict
from comatch.tools.inference.checkpoint import load_model
from comatch.training.runtime import atomic_write_text


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
