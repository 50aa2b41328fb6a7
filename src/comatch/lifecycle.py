"""The life of a training run, from the command to its exit.

:func:`train_run` prepares the data (likely outliers left out when asked), has the
:class:`~comatch.training.trainer.Trainer` fit (the loop, evaluations, checkpoints), then
runs the baselines, the calibration, the guardrails and the report. It sits above
:mod:`comatch.training` and :mod:`comatch.tools` and calls both; neither calls up into it.

The run's length belongs to one :class:`~comatch.training.pace.Pacer`, made here with the
command's start time and a prediction of the end-of-run work, so that ``--budget T`` covers
the whole command: setup and data scan, training, and what follows the last step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from comatch import config as cfg
from comatch import distributed
from comatch.data import RunData
from comatch.training import guardrails
from comatch.training.pace import Pacer
from comatch.training.runtime import atomic_write_text
from comatch.training.signals import StopSignals, Terminated
from comatch.training.trainer import Trainer

# What the end of a run costs besides passes of the network over the evaluation sets, in
# seconds: the last checkpoint and summary; the report's figures and page (matplotlib's import
# and drawing, measured on a CPU: docs/performance.md); the baselines' fits.
FINISH_FIXED, REPORT_FIXED, BASELINE_FIXED = 1.0, 4.0, 2.0
# The end-of-run work in evaluations' worth of network passes: the calibration (one model over
# validation and test: half an evaluation of two models), the report (the test set again, and
# the sample of the unlabelled pool its trust section scores), the baselines (features of the
# labelled and test images).
CALIBRATION_PASSES, REPORT_PASSES, BASELINE_PASSES = 0.5, 1.5, 1.0


def end_of_run_seconds(config: cfg.Config, evaluation: float) -> float:
    """The predicted seconds of what follows a run's last step, from one evaluation's.

    Args:
        config: the run's configuration (which of baselines and report run).
        evaluation: seconds of one evaluation (raw and EMA models over test and validation).
    """
    seconds = FINISH_FIXED + CALIBRATION_PASSES * evaluation
    if config.run.report:
        seconds += REPORT_FIXED + REPORT_PASSES * evaluation
    if config.run.baseline:
        seconds += BASELINE_FIXED + BASELINE_PASSES * evaluation
    return seconds


@dataclass
class Outcome:
    """How a ``train`` command ended: the trainer, and the summary (None: nothing to train)."""

    trainer: Trainer
    summary: dict[str, Any] | None


def train_run(config: cfg.Config, out_dir: Path, *, resume: bool = False, started: float | None = None,
              say: Callable[[str], None] = print) -> Outcome:
    """Train a new run in ``out_dir`` (or continue it), then finish it.

    Args:
        config: the resolved configuration.
        out_dir: the run directory, already claimed (locked).
        resume: continue ``out_dir`` from its newest checkpoint.
        started: when the command started, on :func:`comatch.training.pace.now`'s clock
            (a time budget counts from there).
        say: prints a line outside the run's monitor.

    Returns:
        The outcome; its summary is None when a resumed run was already finished (nothing is
        recorded then).
    """
    pacer = Pacer(config.optim.iterations, config.run.eval_every, config.run.budget, started=started,
                  finish=lambda evaluation: end_of_run_seconds(config, evaluation))
    options: dict[str, Any] = {"pacer": pacer}
    if config.data.exclude_outliers:
        options["select_data"] = _without_outliers(config, out_dir)
    trainer = Trainer.resume(out_dir, config, **options) if resume else Trainer(config, out_dir, **options)
    if resume and trainer.finished:
        say(f"comatch: {out_dir} is finished ({trainer.step} of {trainer.pacer.total} steps); nothing to resume "
            f"(give --iterations N above {trainer.step} to train it longer)")
        return Outcome(trainer, None)
    main = distributed.is_main_process()
    watch = guardrails.Watch(lambda line: _warn(trainer, watch, line), lambda: pacer.total,
                             prior=[float(n) for n in trainer.labelled_counts], class_names=trainer.data.class_names,
                             fired=_fired_before(out_dir, trainer.step) if resume else ())
    if main:
        trainer.record_hooks.append(watch)
    try:
        summary = trainer.fit()
        if summary["stopped"]:
            trainer.monitor.message(
                f"stopped at step {trainer.step} of {pacer.total}; checkpoint saved. Continue with: "
                f"{'torchrun ... -m ' if distributed.world_size() > 1 else ''}comatch train --resume {out_dir}")
        elif main:
            finish_run(trainer, summary, watch)
    finally:
        trainer.close()
    return Outcome(trainer, summary)


def _warn(trainer: Trainer, watch: guardrails.Watch, line: str) -> None:
    """Print a guardrail's warning during the run and record it in guardrails.json at once."""
    trainer.monitor.message(line)
    atomic_write_text(trainer.out_dir / guardrails.GUARDRAILS_FILE,
                      json.dumps([w.as_dict() for w in watch.fired], indent=2) + "\n")


def _fired_before(out_dir: Path, step: int) -> list[guardrails.Warning]:
    """The warnings a resumed run printed before its checkpoint (at or before ``step``)."""
    return [w for w in guardrails.read_warnings(out_dir) or [] if w.step <= step]


def _without_outliers(config: cfg.Config, out_dir: Path) -> Callable[[RunData, torch.nn.Module, torch.device], RunData]:
    """The trainer's data selection that leaves out ``data.exclude_outliers`` of the unlabelled
    pool, scored with the network as built (random or ``model.init`` weights)."""

    def select(data: RunData, model: torch.nn.Module, device: torch.device) -> RunData:
        if data.unlabelled is None:
            return data
        from comatch.data.preprocessing import Normalizer, view_settings
        from comatch.data.views import build_views
        from comatch.tools.ood import exclude_outliers

        view = build_views(view_settings(config, data.image_size))["eval"]
        normalize = Normalizer(data.mean, data.std, config.model.in_channels or data.channels, device)
        main = distributed.is_main_process()
        return exclude_outliers(config, data, model, view, normalize, out_dir, write=main,
                                say=(print if main else (lambda _: None)))

    return select


def finish_run(trainer: Trainer, summary: dict[str, Any], watch: guardrails.Watch) -> None:
    """What follows the last step of a complete run (main process): baselines, calibration,
    guardrails and the report, each within what is left of a time budget."""
    out_dir, config = trainer.out_dir, trainer.config
    if config.run.baseline:
        summary["baseline"] = _baselines(trainer)
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    _calibrate(trainer)
    try:
        (out_dir / "labelled_counts.json").write_text(json.dumps([float(n) for n in trainer.labelled_counts]) + "\n")
        printed = {w.kind for w in watch.fired}
        for warning in guardrails.run_warnings(out_dir, trainer.monitor.records, fired=watch.fired,
                                               prior=watch.prior):
            if warning.kind not in printed:
                trainer.monitor.message(f"comatch: warning: {warning.message}")
    except Exception as err:  # noqa: BLE001 - reported; the run itself is finished
        trainer.monitor.message(f"comatch: warning: the guardrails could not run ({type(err).__name__}: {err})")
    if config.run.report:
        _report(trainer)


def _baselines(trainer: Trainer) -> dict[str, Any]:
    """Frozen-feature and pixel baselines of the labelled images (``run.baseline``), written to
    baseline.json; what the summary keeps of them."""
    from comatch.tools.baseline import run_baselines

    found = run_baselines(trainer.out_dir, device=str(trainer.device), data=trainer.data)
    best, gain = found.get("best_baseline"), found.get("gain_over_best")
    if best is not None and gain is not None:
        trainer.monitor.message(f"baseline: the best baseline without this training ({best['name']}) reaches "
                                f"{best['test_accuracy']:.2%} test accuracy; this run {gain * 100:+.1f} points (baseline.json)")
    return {"best": best, "gain_over_best": gain}


def _calibrate(trainer: Trainer) -> None:
    """Fit the temperature (``calibration.json``); a failure only warns: the run is saved."""
    say = trainer.monitor.message
    try:
        from comatch.tools.calibration import calibrate_run

        result = calibrate_run(trainer.out_dir, str(trainer.device), data=trainer.data)
    except Exception as err:  # noqa: BLE001 - reported; the run itself is finished
        say(f"comatch: warning: no temperature fitted ({type(err).__name__}: {err}); "
            f"retry with `comatch calibrate {trainer.out_dir}`")
        return
    if not math.isfinite(result.get("ece_before", float("nan"))):
        say("calibration: no temperature fitted: the model's probabilities are not finite")
    elif result.get("fitted_on") is None:
        test = f"; test ECE {result['test_ece_before']:.3f}" if "test_ece_before" in result else ""
        say(f"calibration: no temperature fitted ({result['not_fitted']}){test}")
    else:
        say(f"calibration: temperature {result['temperature']:.3f} fitted on the {result['fitted_on'].split(' (')[0]}; "
            f"ECE {result['ece_before']:.3f} -> {result['ece_after']:.3f} there"
            + (f", test {result['test_ece_before']:.3f} -> {result['test_ece_after']:.3f}" if "test_ece_after" in result else ""))


def _report(trainer: Trainer) -> None:
    """The end-of-run report; a signal (before or during it) leaves it to ``comatch report``, and
    so does a time budget with too little left for it."""
    out_dir, pacer = trainer.out_dir, trainer.pacer
    if pacer.budget_seconds is not None and pacer.costs is not None:
        left = pacer.budget_seconds - pacer.elapsed()
        needed = REPORT_FIXED + REPORT_PASSES * pacer.costs.evaluation
        if left < needed:
            trainer.monitor.message(f"the end-of-run report was not written: {left:.0f} s of the budget {pacer.budget} "
                                    f"are left and it takes about {needed:.0f} s; the run is complete and saved: "
                                    f"`comatch report {out_dir}` writes it")
            return
    with StopSignals() as stop:
        if not stop.requested:
            from comatch.tools.report import end_of_run_report  # matplotlib is imported only here

            stop.immediate = True  # the run is complete and saved: stop drawing at once
            try:
                end_of_run_report(out_dir, trainer.device, trainer.config.run.report_embedding, trainer.monitor.message)
                return
            except Terminated:
                pass
            finally:
                stop.immediate = False
        trainer.monitor.message(f"the end-of-run report was not written (stopped by {stop.name or 'a signal'}); the run is "
                                f"complete and saved in {out_dir}: `comatch report {out_dir}` writes the report")
