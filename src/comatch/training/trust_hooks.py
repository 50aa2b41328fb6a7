"""The trainer's few calls into the trust features: leaving out outliers before training,
the guardrails' warnings while it logs, and the temperature fit and final checks at the end.

Kept out of :mod:`comatch.training.trainer` so that the loop stays one screen of code.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from comatch import distributed
from comatch.data import RunData
from comatch.training import guardrails
from comatch.training.monitor import parse_records

if TYPE_CHECKING:
    from comatch.training.trainer import Trainer

GUARDRAILS_FILE = "guardrails.json"


def leave_out_outliers(trainer: Trainer) -> RunData:
    """``trainer.data`` without the ``data.exclude_outliers`` share of likely outliers,
    scored with the network as built (random or ``model.init`` weights)."""
    from comatch.data.preprocessing import Normalizer, eval_view
    from comatch.tools.ood import exclude_outliers

    data, config = trainer.data, trainer.config
    view = eval_view(config, data.image_size)
    normalize = Normalizer(data.mean, data.std, trainer.in_channels, trainer.device)
    main = distributed.is_main_process()
    return exclude_outliers(config, data, trainer.model, view, normalize, trainer.out_dir, write=main,
                            say=(print if main else (lambda _: None)))


def _prior(trainer: Trainer) -> list[float]:
    """The labelled class frequencies (the trainer counted them once, for the method)."""
    return [float(n) for n in trainer.labelled_counts]


def recent_training(records: list[dict[str, Any]], count: int = 8) -> list[dict[str, Any]]:
    """The last ``count`` training records (the in-run guardrails look at the last few only), found
    from the end, so that a log line costs the same at step 100 as at step 1,000,000."""
    found = []
    for record in reversed(records):
        if record.get("kind") == "train":
            found.append(record)
            if len(found) == count:
                break
    return found[::-1]


def warn_during_run(trainer: Trainer) -> None:
    """Print each guardrail's warning once, when it first fires (main process)."""
    if not distributed.is_main_process() or trainer.monitor is None:
        return
    seen: set[str] = trainer.__dict__.setdefault("_guardrails_seen", set())
    found = guardrails.check(recent_training(trainer.monitor.records), total_steps=trainer.config.optim.iterations,
                             prior=_prior(trainer), class_names=trainer.data.class_names)
    for warning in found:
        if warning.kind not in seen:
            seen.add(warning.kind)
            trainer.monitor.message(f"comatch: warning: {warning.message}")


def end_of_run(trainer: Trainer) -> None:
    """Fit the temperature (``calibration.json``) and write every guardrail's finding
    (``guardrails.json``); a failure of either only warns: the run's results are saved."""
    try:
        from comatch.tools.run_calibration import calibrate_run

        result = calibrate_run(trainer.out_dir, str(trainer.device), data=trainer.data)
        if not math.isfinite(result.get("ece_before", float("nan"))):
            trainer.monitor.message("calibration: no temperature fitted: the model's probabilities are not finite")
        elif result.get("fitted_on") is None:
            test = f"; test ECE {result['test_ece_before']:.3f}" if "test_ece_before" in result else ""
            trainer.monitor.message(f"calibration: no temperature fitted ({result['not_fitted']}){test}")
        else:
            trainer.monitor.message(
                f"calibration: temperature {result['temperature']:.3f} fitted on the {result['fitted_on'].split(' (')[0]}; "
                f"ECE {result['ece_before']:.3f} -> {result['ece_after']:.3f} there"
                + (f", test {result['test_ece_before']:.3f} -> {result['test_ece_after']:.3f}" if "test_ece_after" in result else ""))
    except Exception as err:  # noqa: BLE001 - reported; the run itself is finished
        trainer.monitor.message(f"comatch: warning: no temperature fitted ({type(err).__name__}: {err}); "
                                f"retry with `comatch calibrate {trainer.out_dir}`")
    try:
        (trainer.out_dir / "labelled_counts.json").write_text(json.dumps(_prior(trainer)) + "\n")
        found = run_warnings(trainer.out_dir, trainer.monitor.records)
        seen: set[str] = trainer.__dict__.setdefault("_guardrails_seen", set())
        for warning in found:
            if warning.kind not in seen:
                trainer.monitor.message(f"comatch: warning: {warning.message}")
    except Exception as err:  # noqa: BLE001
        trainer.monitor.message(f"comatch: warning: the guardrails could not run ({type(err).__name__}: {err})")


def run_warnings(run_dir: Any, records: list[dict[str, Any]] | None = None, write: bool = True) -> list[guardrails.Warning]:
    """Every guardrail's finding on a finished run directory; written to ``guardrails.json``."""
    from pathlib import Path

    run_dir = Path(run_dir)
    read = lambda name: json.loads((run_dir / name).read_text()) if (run_dir / name).is_file() else None  # noqa: E731
    if records is None:
        path = run_dir / "metrics.jsonl"
        records = parse_records(path.read_bytes())[0] if path.is_file() else []  # damaged lines dropped
    summary = read("summary.json") or {}
    data = read("data.json") or {}
    counts = _labelled_counts(run_dir)
    found = guardrails.check(records, total_steps=summary.get("iterations"), summary=summary,
                             baseline=read("baseline.json"), prior=counts, class_names=data.get("classes"))
    if write:
        (run_dir / GUARDRAILS_FILE).write_text(json.dumps([w.as_dict() for w in found], indent=2) + "\n")
    return found


def _labelled_counts(run_dir: Any) -> list[float] | None:
    """The labelled class counts written at the start of the run (``labelled_counts.json``)."""
    path = run_dir / "labelled_counts.json"
    return json.loads(path.read_text()) if path.is_file() else None
