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
from comatch import distributed, numerics, openmp
from comatch.data import RunData
from comatch.data.sampling import read_saved_labelled
from comatch.errors import UserError
from comatch.training import guardrails
from comatch.training.checkpoint import check_resume_compatible, load_newest
from comatch.training.defaults import default_workers
from comatch.training.pace import Pacer
from comatch.training.runtime import atomic_write_text
from comatch.signals import StopSignals, Terminated
from comatch.training import run_files
from comatch.training.trainer import Trainer

# What the end of a run costs besides passes of the network over images and the report's
# figures, in seconds: the last checkpoint and summary, the baselines' fits, and the process's
# exit (freeing its memory, the interpreter's teardown: 0.9-1.3 s measured on a 2-core machine).
FINISH_FIXED, BASELINE_FIXED, EXIT_FIXED = 1.0, 2.0, 1.5
# The report's figures, priced by drawing one of them (figure_seconds) at the first fit; its map
# of the test embeddings (PCA) and page count as two more.
REPORT_FIGURES = 10


def end_of_run_seconds(config: cfg.Config, data: RunData, evaluation: float) -> dict[str, float]:
    """The predicted seconds of what follows a run's last step, from what it will process, by
    part (``checkpoint``, ``calibration``, ``report``, ``baseline``, ``exit``).

    One evaluation runs the raw and the EMA model over the test and validation images; the
    seconds per image it took price the images the end of the run passes through the EMA
    model: validation and test (calibration), test, labelled and a sample of at most
    :data:`~comatch.tools.trust.ood.MAX_SCORED` unlabelled images (report), labelled and test
    (baselines). The report's figures are priced by drawing one now (which also loads
    matplotlib and scikit-learn here, not at the end).

    Args:
        config: the run's configuration (which of baselines and report run).
        data: the run's data.
        evaluation: seconds of one evaluation.
    """
    from comatch.tools.trust.ood import MAX_SCORED

    size = lambda part: 0 if part is None else len(part)  # noqa: E731
    labelled, test, val = size(data.labelled), size(data.test), size(data.val)
    per_image = evaluation / max(2 * (test + val), 1)
    parts = {"checkpoint": FINISH_FIXED, "calibration": per_image * (val + test), "exit": EXIT_FIXED}
    if config.run.report:
        import sklearn.decomposition  # noqa: F401 - the report's embedding map; loaded now, priced in the budget

        from comatch.tools.report.plots import figure_seconds

        images = test + labelled + min(size(data.unlabelled), MAX_SCORED)
        parts["report"] = REPORT_FIGURES * figure_seconds() + per_image * images
    if config.run.baseline:
        parts["baseline"] = BASELINE_FIXED + per_image * (labelled + test)
    return parts


@dataclass
class Outcome:
    """How a ``train`` command ended: the trainer, and the summary (None: nothing to train)."""

    trainer: Trainer
    summary: dict[str, Any] | None


def train_run(config: cfg.Config, out_dir: Path, *, resume: bool = False, started: float | None = None,
              say: Callable[[str], None] = print, data: RunData | None = None) -> Outcome:
    """Train a new run in ``out_dir`` (or continue it), then finish it.

    Args:
        config: the resolved configuration.
        out_dir: the run directory, already claimed (locked).
        resume: continue ``out_dir`` from its newest checkpoint.
        started: when the command started, on :func:`comatch.training.pace.now`'s clock
            (a time budget counts from there).
        say: prints a line outside the run's monitor.
        data: the datasets to use instead of those ``config.data`` names (a new run only).

    Returns:
        The outcome; its summary is None when a resumed run was already finished (nothing is
        recorded then).
    """
    made: dict[str, Any] = {}  # the trainer, once made (the end of the run is priced on its data), and that price

    def finish(evaluation: float) -> float:
        made["finish"] = end_of_run_seconds(config, made["trainer"].data, evaluation)
        return sum(made["finish"].values())

    pacer = Pacer(config.optim.iterations, config.run.eval_every, config.run.budget, started=started, finish=finish)
    options: dict[str, Any] = {"pacer": pacer}
    if config.data.exclude_outliers:
        options["select_data"] = _without_outliers(config, out_dir)
    changed: list[str] = []
    if resume:
        trainer, changed = resume_trainer(out_dir, config, **options)
        if trainer.finished:
            say(f"comatch: {out_dir} is finished ({trainer.step} of {trainer.pacer.total} steps); nothing to resume "
                f"(give --iterations N above {trainer.step} to train it longer)")
            return Outcome(trainer, None)
    else:
        trainer = Trainer(config, out_dir, data, **options)
    made["trainer"] = trainer
    main = distributed.is_main_process()
    watch = guardrails.Watch(lambda line: _warn(trainer, watch, line), lambda: pacer.total,
                             prior=[float(n) for n in trainer.labelled_counts], class_names=trainer.data.class_names,
                             fired=_fired_before(out_dir, trainer.step) if resume else ())
    if main:
        trainer.record_hooks.append(watch)
    try:
        trainer.open()
        for line in start_block(trainer, changed):
            trainer.monitor.message(line)
        summary = trainer.fit()
        if summary["stopped"]:
            trainer.monitor.message(
                f"stopped at step {trainer.step} of {pacer.total}; checkpoint saved. Continue with: "
                f"{'torchrun ... -m ' if distributed.world_size() > 1 else ''}comatch train --resume {out_dir}")
        elif main:
            finish_run(trainer, summary, watch, made.get("finish"))
    finally:
        trainer.close()
    return Outcome(trainer, summary)


def resume_trainer(run_dir: Path, config: cfg.Config, **options: Any) -> tuple[Trainer, list[str]]:
    """A trainer continuing ``run_dir`` from its newest loadable checkpoint, and what changed in
    its data since (recorded, with the config's changes, in ``resumes.jsonl`` unless the run is
    finished: then nothing is recorded).

    Args:
        run_dir: an existing run directory.
        config: the configuration to continue with; it may differ from the run's only in
            harmless fields (logging, more iterations, workers), which are recorded.
        options: keyword arguments of the :class:`Trainer` (``pacer``, ``select_data``).

    Raises:
        UserError: no loadable checkpoint, or a change to the run's meaning.
    """
    state, path = load_newest(run_dir / "checkpoints")
    changes = check_resume_compatible(state["config"], config.model_dump(mode="json"))
    trainer = Trainer(config, run_dir, load_init=False, **options)
    saved_ids = read_saved_labelled(run_dir / "labelled.json")
    if saved_ids != trainer.data.labelled_ids:
        raise UserError(f"the labelled subset of {run_dir} differs from the one this data gives; "
                        "the dataset changed since the run started: start a new run")
    trainer.load_state_dict(state)
    changed = data_changes(_read_json(run_dir / "data.json"), trainer.data.describe())
    if distributed.is_main_process() and not trainer.finished:
        record: dict[str, Any] = {"step": trainer.step, "checkpoint": path.name,
                                  "changes": {k: list(v) for k, v in changes.items()},
                                  "processes": [state.get("world_size", 1), distributed.world_size()]}
        if changed:
            record["data_changes"] = changed
        with (run_dir / "resumes.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
    return trainer, changed


DESCRIBED_PARTS = ("labelled", "unlabelled", "val", "test")


def data_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two ``data.json`` descriptions of a run's data (sizes, classes),
    one phrase each (``"unlabelled 400 -> 300"``); empty when nothing did or nothing was saved."""
    if not before:
        return []
    found = [f"{part} {before.get(part)} -> {now.get(part)}" for part in DESCRIBED_PARTS
             if part in before and before.get(part) != now.get(part)]
    if "classes" in before and before["classes"] != now.get("classes"):
        found.append(f"classes {before['classes']} -> {now.get('classes')}")
    return found


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when missing or unreadable."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def start_block(trainer: Trainer, changed: list[str]) -> list[str]:
    """What is about to be trained, in a few lines (also when the output is piped)."""
    c, o, d, pacer = trainer.config, trainer.config.optim, trainer.data, trainer.pacer
    size = lambda part: "none" if part is None else f"{len(part):,}"  # noqa: E731
    parameters = sum(p.numel() for p in trainer.model.parameters())
    views_u = len(trainer.method.unlabelled_views)
    unlabelled = f" + {o.batch_size * o.mu} unlabelled x {views_u} views" if views_u else ""
    bf16 = "; the network in bf16" if trainer.precision.mode == "bf16" else ""  # run.amp=auto: only where native
    threads = (f" ({torch.get_num_threads()} threads; {openmp.wait}; {c.run.numerics} numerics on "
               f"{numerics.cpu_model()}{bf16})" if trainer.device.type == "cpu" else "")
    workers = default_workers(c.data.num_workers, trainer.device.type)
    budget = ""
    if pacer.budget:
        budget = (f", budget {pacer.budget}: set after the first {pacer.probe_steps} steps, again a quarter in and halfway "
                  f"through what is left" + (f" ({pacer.spent_before:.0f} s spent before this resume)" if trainer.step else ""))
    lines = [
        f"comatch: {c.method} on {c.preset}, seed {c.seed}" + (f", resuming at step {trainer.step}" if trainer.step else ""),
        f"  data     labelled {size(d.labelled)}, unlabelled {size(d.unlabelled)}, val {size(d.val)}, "
        f"test {size(d.test)}; {d.num_classes} classes; {d.image_size}x{d.image_size} px, {d.channels} channel(s)",
        f"  network  {c.model.arch}, {parameters / 1e6:.2f}M parameters, {trainer.in_channels}-channel input",
        f"  device   {trainer.device.type}{threads}, {workers} loader worker(s) per loader, {distributed.world_size()} process(es)",
        f"  batch    {o.batch_size} labelled{unlabelled}: {trainer.images_per_step} images per step",
        f"  steps    {pacer.total}{budget}; evaluation every {trainer.eval_every}, checkpoint every {c.run.checkpoint_every}",
        f"  run dir  {trainer.out_dir}",
    ]
    return lines + [note if note.startswith("warning: ") else f"data: {note}" for note in d.notes] + [f"data: changed since the checkpoint: {change}" for change in changed]


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
        from comatch.data.preprocessing import Normalizer, eval_view
        from comatch.tools.trust.ood import exclude_outliers

        view = eval_view(config, data.image_size)
        normalize = Normalizer(data.mean, data.std, config.model.in_channels or data.channels, device)
        main = distributed.is_main_process()
        return exclude_outliers(config, data, model, view, normalize, out_dir, write=main,
                                say=(print if main else (lambda _: None)))

    return select


def finish_run(trainer: Trainer, summary: dict[str, Any], watch: guardrails.Watch,
               priced: dict[str, float] | None = None) -> None:
    """What follows the last step of a complete run (main process): baselines, calibration,
    guardrails and the report, each within what is left of a time budget."""
    out_dir, config, priced = trainer.out_dir, trainer.config, priced or {}
    if config.run.baseline:
        summary["baseline"] = _baselines(trainer)
        run_files.write_summary(out_dir, summary)
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
        _report(trainer, priced.get("report", 0.0) + priced.get("exit", 0.0))  # the exit follows it


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
        from comatch.tools.trust.run_calibration import calibrate_run

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


def _report(trainer: Trainer, needed: float) -> None:
    """The end-of-run report; a signal (before or during it) leaves it to ``comatch report``, and
    so does a time budget with less left than the report was priced at (``needed`` seconds)."""
    out_dir, pacer = trainer.out_dir, trainer.pacer
    if pacer.budget_seconds is not None:
        left = pacer.budget_seconds - pacer.elapsed()
        if left < needed:
            trainer.monitor.message(f"the end-of-run report was not written: {left:.0f} s of the budget {pacer.budget} "
                                    f"are left and it takes about {needed:.0f} s; the run is complete and saved: "
                                    f"`comatch report {out_dir}` writes it")
            return
    with StopSignals() as stop:
        if not stop.requested:
            from comatch.tools.report.build import end_of_run_report  # matplotlib is imported only here

            stop.immediate = True  # the run is complete and saved: stop drawing at once
            try:
                end_of_run_report(out_dir, trainer.device, trainer.config.run.report_embedding, trainer.monitor.message,
                                  data=trainer.data)
                return
            except Terminated:
                pass
            finally:
                stop.immediate = False
        trainer.monitor.message(f"the end-of-run report was not written (stopped by {stop.name or 'a signal'}); the run is "
                                f"complete and saved in {out_dir}: `comatch report {out_dir}` writes the report")
