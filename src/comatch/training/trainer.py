"""The training loop: one place that owns forward, backward, optimizer, schedule and EMA,
evaluations and checkpoints. What comes before and after the loop (outliers, baselines,
calibration, guardrails, the report) is :mod:`comatch.lifecycle`'s."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from comatch import config as cfg
from comatch import distributed, numerics
from comatch.data import RunData
from comatch.data.batch_views import BatchViews
from comatch.data.datasets import ViewBatch
from comatch.data.labels import class_counts
from comatch.data.loaders import eval_loader
from comatch.data.preprocessing import Normalizer, eval_view, run_data, use_deterministic_kernels, view_settings
from comatch.errors import DataChanged, TrainingDiverged
from comatch.methods import METHODS, Batch, MethodContext, MethodOutput
from comatch.models import ModelEMA, build_model
from comatch.models.optim import param_groups
from comatch.models.pretrained import load_encoder_weights
from comatch.signals import StopSignals
from comatch.training import pace, parallel, run_files
from comatch.training.batches import StepBatches
from comatch.training.defaults import fit_to_length
from comatch.training.checkpoint import rng_state, save_rotating, set_rng_state
from comatch.training.encoder import Encoder, Timer, no_timer
from comatch.training.evaluation import evaluate_parts
from comatch.training.monitor import RunMonitor
from comatch.training.pace import Pacer
from comatch.training.precision import Precision, resolve_amp, resolve_channels_last
from comatch.training.runtime import keep_freed_memory, seed_everything
from comatch.training.schedule import lr_factor, steps_per_epoch
from comatch.training.state import NormBuffers
from comatch.training.stats import StepStats


class Trainer:
    """Trains one run of ``config`` and writes its run directory.

    Under torchrun every process builds a Trainer: it joins the process group, trains its
    rows of every global batch with DistributedDataParallel, and only rank 0 writes files
    (see :mod:`comatch.training.parallel`).

    Args:
        config: the resolved configuration.
        out_dir: the run directory (created; must not hold another run).
        data: the datasets to use instead of those ``config.data`` names (e.g. tensors
            already in memory); the labelled subset is then the caller's choice.
        load_init: start the encoder from ``model.init`` (a resume loads its checkpoint instead).
        pacer: owns the run's length (default: ``optim.iterations``, or what ``run.budget`` fits).
        select_data: ``(data, network, device) -> data``: the data to train on, chosen with the
            network as built (e.g. without likely outliers); default: all of it.
    """

    def __init__(
        self, config: cfg.Config, out_dir: Path, data: RunData | None = None, *, load_init: bool = True,
        pacer: Pacer | None = None,
        select_data: Callable[[RunData, torch.nn.Module, torch.device], RunData] | None = None,
    ) -> None:
        self.config, self.out_dir = config, Path(out_dir)
        self.pacer = pacer or Pacer(config.optim.iterations, config.run.eval_every, config.run.budget)
        numerics.apply(config.run.numerics)  # portable: kernels pinned before torch loaded (comatch.numerics)
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        keep_freed_memory()
        self.device = parallel.start(config.run.device, config.run.dist_timeout)
        self.channels_last = resolve_channels_last(config.run.channels_last, self.device)
        if config.run.deterministic:
            use_deterministic_kernels()
        seed_everything(config.seed)
        self.data: RunData = data or run_data(config)
        self.in_channels = config.model.in_channels or self.data.channels
        self.model = self._build_network(load_init)
        if select_data is not None:
            self.data = select_data(self.data, self.model, self.device)
        self.ema = ModelEMA(self.model, config.optim.ema_decay, warmup=config.optim.ema_warmup,
                            buffers=config.optim.ema_buffers)
        unlabelled = len(self.data.unlabelled) if self.data.unlabelled is not None else 0  # type: ignore[arg-type]
        self.labelled_counts = class_counts(self.data.labelled, self.data.num_classes)
        context = MethodContext(self.data.num_classes, config.model.proj_dim, self.model, unlabelled,
                                self.labelled_counts)
        self.method = METHODS[config.method].from_config(config, context).to(self.device)
        self.ddp_model = distributed.wrap_ddp(self.model, self.device, not self.method.uses_every_parameter)
        if config.run.compile:
            self.ddp_model = torch.compile(self.ddp_model)
        self.precision = Precision(resolve_amp(config.run.amp, self.device, config.run.numerics), self.device)
        o = config.optim
        self.optimizer = torch.optim.SGD(
            param_groups(self.model, o.weight_decay, o.weight_decay_exempt, o.lr, o.layer_decay), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
        )
        epoch = steps_per_epoch(o.batch_size * o.mu, unlabelled)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: lr_factor(o.schedule, k, self.pacer.total, epoch)
        )
        self.eval_every, self.log_every = config.run.eval_every, config.run.log_every  # fitted to a budget's length
        self.normalize = Normalizer(self.data.mean, self.data.std, self.in_channels, self.device)
        self.timer: Timer = no_timer  # a benchmark may time the step's phases through it
        self.encode = Encoder(self.ddp_model, self.normalize, self.precision, self.channels_last,
                              timer=lambda phase: self.timer(phase))
        self.norm_buffers = NormBuffers([self.model, self.method])
        settings = view_settings(config, self.data.image_size)
        self.eval_view = eval_view(config, self.data.image_size)
        self.batches = StepBatches(config, self.data, self.method, BatchViews(settings), self.device)
        self.pacer.set_probe(self.batches.largest_group())  # the first timing holds whole groups of augmented batches
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        views_x, views_u = len(self.method.labelled_views), len(self.method.unlabelled_views)
        self.images_per_step = o.batch_size * (views_x + o.mu * views_u)
        self.stats = StepStats(self.device, self.data.num_classes)
        self.monitor: RunMonitor | parallel.NullMonitor | None = None
        self.step = self.bad_steps = self.skipped_steps = self.metrics_offset = 0
        self.wall_before = 0.0
        self._started = time.perf_counter()
        self._paused = 0.0  # seconds this process spent evaluating and saving (left out of images_per_sec)
        self._length_settings_said = False
        self._evaluated_at: int | None = None  # the step of the last evaluation logged
        self.stopped_by = ""  # the signal that stopped the run, if one did
        self.record_hooks: list[Callable[[list[dict[str, Any]]], None]] = []  # called with the records after each training log
        self.method.set_length(self.pacer.total)
        self.pacer.agree = self._agree
        self.pacer.any_behind = lambda behind: distributed.any_process(behind, self.device)
        self.pacer.follow(self._length_changed)

    def _build_network(self, load_init: bool) -> torch.nn.Module:
        """The network on its device, from ``model.init`` when given."""
        m, run = self.config.model, self.config.run
        model = build_model(m.arch, self.data.num_classes, in_channels=self.in_channels,
                            proj_dim=m.proj_dim, bn_momentum=m.bn_momentum, head_activation=m.head_activation,
                            init_scheme=m.init_scheme, pretrained=m.pretrained and load_init)
        if m.init and load_init:
            report = load_encoder_weights(model.encoder, m.init)
            if distributed.is_main_process():
                print(report.summary(Path(m.init)), flush=True)
        return parallel.prepare_network(model, self.device, sync_bn=run.sync_bn, channels_last=self.channels_last)

    # ----------------------------------------------------------------- data
    def loaders(self) -> tuple[Any, Any | None]:
        """The endless labelled and (if the method uses unlabelled data) unlabelled loaders,
        from the current step on."""
        return self.batches.loaders(self.step)

    def make_batch(self, loaded_x: ViewBatch, loaded_u: ViewBatch | None) -> Batch:
        """The method's :class:`~comatch.methods.base.Batch` for this step from the loaders' batches."""
        return self.batches.make(loaded_x, loaded_u, self.step)

    # ----------------------------------------------------------------- step
    def training_step(self, batch: Batch) -> MethodOutput:
        """One optimisation step.

        A step whose loss or gradients are not finite is not applied (see ``run.nonfinite``),
        and leaves no trace: the network's normalisation statistics and the method's state
        are as they were before it.
        """
        self.norm_buffers.save()
        accepted = False
        try:
            with self.timer("forward"):
                out = self.method(batch, self.encode)
            accepted = self.update(out)
        finally:  # also when the rejection stops the run: nothing of the step may remain
            if not accepted:
                self.method.discard()
                self.norm_buffers.restore()
        if accepted:
            with self.timer("update"):
                self.method.commit(self.model)
            self.stats.add(out, batch.truth)
        return out

    def update(self, out: MethodOutput) -> bool:
        """Backward, then optimizer, schedule and EMA steps; False if the step was rejected."""
        with self.timer("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.backward(out.loss)
        with self.timer("update"):
            self.precision.unscale(self.optimizer)
            if not self._finite(out.loss):
                self.precision.skip()
                self._reject_step()
                return False
            self.bad_steps = 0
            self.precision.step(self.optimizer)
            self.scheduler.step()
            self.ema.update(self.model, self.step)
        return True

    def _finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss, every gradient and the normalisation statistics the forward pass
        just updated are finite on every process (one host sync).

        With fp16 the gradients are not checked: overflowing gradients are the loss scaler's
        business (it skips the step and lowers the scale).
        """
        ok = torch.isfinite(loss)
        tensors = list(self.norm_buffers.floating)
        if not self.precision.scales_loss:
            tensors += [p.grad for p in self.trainable if p.grad is not None]
        if tensors:
            ok = ok & torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all()
        return not distributed.any_process(not bool(ok), self.device)

    def _reject_step(self) -> None:
        """Count a non-finite step; stop per ``run.nonfinite`` and ``run.max_bad_steps``."""
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.skipped_steps += 1
        policy, limit = self.config.run.nonfinite, self.config.run.max_bad_steps
        if policy == "stop" or self.bad_steps >= limit:
            where = f"the loss or its gradients were not finite at step {self.step + 1} ({self.bad_steps} bad step(s) in a row)"
            if not (self.out_dir / "checkpoints" / "last.pt").exists():  # claim no checkpoint that is not there
                raise TrainingDiverged(f"{where}, before the first checkpoint: start again with a lower optim.lr")
            raise TrainingDiverged(
                f"{where}; the last good checkpoint in "
                f"{self.out_dir / 'checkpoints'} is intact: continue it with --resume (add "
                f"run.max_bad_steps=N to skip more such steps), or start again with a lower optim.lr"
            )
        self.monitor.message(f"step {self.step + 1}: non-finite loss or gradient, step skipped")

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything the rest of the run depends on."""
        return {
            "config": self.config.model_dump(mode="json"),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "stats": self.stats.state_dict(),
            "bad_steps": self.bad_steps,
            "skipped_steps": self.skipped_steps,
            "wall_seconds": self.wall_before + time.perf_counter() - self._started,
            "rng": rng_state(),
            "metrics_offset": self.monitor.offset if self.monitor else 0,
            "class_names": self.data.class_names,
            "normalization": {"mean": list(self.data.mean), "std": list(self.data.std)},
            "input": {"image_size": self.data.image_size, "channels": self.in_channels},
            "precision": self.precision.state_dict(),
            "world_size": distributed.world_size(),
            "pace": self.pacer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of the same run (see :meth:`state_dict`)."""
        self.step = state["step"]
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if distributed.is_main_process():  # the saved sums are global: rank 0 carries them
            self.stats.load_state_dict(state["stats"])
        self.precision.load_state_dict(state.get("precision") or {})
        self.bad_steps, self.skipped_steps = state["bad_steps"], state["skipped_steps"]
        self.wall_before = state["wall_seconds"]
        set_rng_state(state["rng"])
        self.metrics_offset = state["metrics_offset"]
        saved = state["config"]
        pace = state.get("pace") or {"total": saved["optim"]["iterations"], "budget": saved["run"].get("budget"),
                                     "spent": state["wall_seconds"]}  # a checkpoint from before the pacer
        self.pacer.load_state_dict(pace)

    @property
    def finished(self) -> bool:
        """Whether every step of the run's length is trained."""
        return self.step >= self.pacer.total

    def save_checkpoint(self) -> Path:
        """Write the newest checkpoint of the run directory (the previous one is kept).

        Every process calls it (the running statistics are summed into rank 0); rank 0 writes.

        Raises:
            UserError: the run directory was deleted or moved (nothing is written then).
        """
        self.stats.reduce_to_main()
        folder = self.out_dir / "checkpoints"
        if distributed.is_main_process():
            if self.monitor is not None:
                self.monitor.check()
            return save_rotating(folder, self.state_dict())
        return folder / "last.pt"

    # ----------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        """Train to the pacer's length (``optim.iterations``, or what ``run.budget`` fits);
        returns the summary (also written to ``summary.json``).

        SIGTERM or SIGINT finishes the current step, checkpoints and returns early with
        ``summary["stopped"] = True`` (and :attr:`stopped_by` the signal's name). Images that
        vanish mid-run stop it with a checkpoint at the current step (:class:`DataChanged`).
        A monitor the caller opened (:meth:`open`) stays open for what follows the loop
        (:meth:`close` closes it); one opened here is closed.
        """
        cfg_run = self.config.run
        main = distributed.is_main_process()
        opened_here = self.monitor is None
        self.open()
        labelled, unlabelled = self.loaders()
        start = self._started = time.perf_counter()
        tick, tick_step, tick_paused = pace.now(), self.step, self._paused
        self.pacer.begin(self.step)
        self.model.train()
        with StopSignals() as stop:
            while self.step < self.pacer.total and not distributed.any_process(stop.requested, self.device):
                with self.timer("data"):
                    batch = self._next_batch(labelled, unlabelled)
                self.training_step(batch)
                self.step += 1
                self.monitor.advance()
                for line in self.pacer.after_step(self.step, self._time_evaluation, self.device.type):
                    self.monitor.message(line)
                total = self.pacer.total
                if self.step % self.log_every == 0 or self.step == total:
                    self.stats.reduce_to_main()
                    now = pace.now()
                    training = now - tick - (self._paused - tick_paused)  # evaluations and checkpoints left out
                    rate = self.images_per_step * (self.step - tick_step) / max(training, 1e-9)
                    self.monitor.log({"step": self.step, "kind": "train", **self.stats.read(),
                                      "lr": self.scheduler.get_last_lr()[0], "images_per_sec": rate})
                    for hook in self.record_hooks:
                        hook(self.monitor.records)
                    tick, tick_step, tick_paused = now, self.step, self._paused
                due = self.step % self.eval_every == 0 or self.step == total
                if main and due and self._evaluated_at != self.step:  # not again where the pacer timed one
                    self.pacer.exclude(self._log_evaluation())
                if self.step % cfg_run.checkpoint_every == 0 and self.step < total:
                    t0 = pace.now()
                    self.save_checkpoint()
                    self._paused += pace.now() - t0
            self.stopped_by = stop.name if stop.requested else ""
            self.save_checkpoint()
        summary = self._finish(time.perf_counter() - start)
        if opened_here:  # the caller did not open the monitor to say more after the loop
            self.close()
        return summary

    def open(self) -> None:
        """Write the run's files (config.yaml, labelled.json, data.json) and open its monitor
        (once; :meth:`fit` does it if the caller did not)."""
        if self.monitor is not None:
            return
        self.data.record_failures(self.out_dir / "skipped_images.log")  # images failing mid-run (loader workers log them)
        if distributed.is_main_process():
            run_files.write_run_files(self.out_dir, self.config, self.data)
        self.monitor = parallel.run_monitor(self.out_dir, self.pacer.total, self.step,
                                            self.metrics_offset, self.config.run.tensorboard, self.data.class_names)

    def _next_batch(self, labelled: Any, unlabelled: Any | None) -> Batch:
        """The next step's batch; images that vanished from the data folders stop the run
        here, with a checkpoint at the current step."""
        try:
            return self.make_batch(next(labelled), next(unlabelled) if unlabelled is not None else None)
        except DataChanged as err:
            what = err.what
            self.save_checkpoint()
            if distributed.is_main_process():  # data.json counts what skipped_images.log lists
                run_files.write_data_json(self.out_dir, self.data)
            raise DataChanged(f"{what}; the run stopped at step {self.step} with a checkpoint: put the images back "
                              f"and continue with `comatch train --resume {self.out_dir}` (resumed as they are now, it "
                              f"trains on the images left)") from None

    def close(self) -> None:
        """Close the monitor (metrics.jsonl, TensorBoard, progress)."""
        if self.monitor is not None:
            self.monitor.close()

    def _agree(self, total: int) -> int:
        """Rank 0's run length on every process (each timed its own steps)."""
        if distributed.world_size() == 1:
            return total
        return int(distributed.broadcast(torch.tensor([total], device=self.device), src=0)[0])

    def _length_changed(self, total: int) -> None:
        """The pacer set the run's length: the progress display, the method's ramps and the
        settings of ``run.fit_to_length`` follow (from this step on; the config is left as written)."""
        self.method.set_length(total)
        if self.monitor is not None:
            self.monitor.set_total(total)
        lines = []  # said once, at the first fit; a refit says the length changed
        fitted = self.config.run.fit_to_length
        if self.config.run.compile and "model.bn_momentum" in fitted:
            # BatchNorm's momentum is a constant of the compiled graph: a change recompiles it
            fitted = [key for key in fitted if key != "model.bn_momentum"]
            lines.append(f"defaults: model.bn_momentum={self.config.model.bn_momentum}: kept as the run started "
                         "(with run.compile a change recompiles the network)")
        for key, (value, reason) in fit_to_length(self.model, self.ema, total, fitted).items():
            if key == "run.eval_every":
                self.eval_every = self.pacer.eval_every = value
            elif key == "run.log_every":
                self.log_every = value
            lines.append(f"defaults: {key}={value}: {reason}")
        if self.monitor is not None and not self._length_settings_said:
            for line in lines:
                self.monitor.message(line)
            self._length_settings_said = True

    def _log_evaluation(self) -> float:
        """Evaluate and log it on the main process (others do nothing); its seconds on the pacer's clock."""
        if not distributed.is_main_process():
            return 0.0
        t0 = pace.now()
        self.monitor.log({"step": self.step, "kind": "eval", **self.evaluate()})
        self._evaluated_at = self.step
        seconds = pace.now() - t0
        self._paused += seconds
        return seconds

    def _time_evaluation(self) -> float:
        """Seconds one evaluation takes (the main process evaluates; the time is shared)."""
        seconds = self._log_evaluation()
        if distributed.world_size() == 1:
            return seconds
        return float(distributed.broadcast(torch.tensor([seconds], device=self.device), src=0)[0])

    def _finish(self, seconds: float) -> dict[str, Any]:
        """The summary of a run that ended or was stopped, written with data.json."""
        summary = run_files.summary(self.config, self.data, self.monitor.records, steps=self.step,
                                    stopped=not self.finished, skipped_steps=self.skipped_steps,
                                    wall_seconds=seconds + self.wall_before, device=self.device)
        if distributed.is_main_process():
            run_files.write_summary(self.out_dir, summary, self.data)
        return summary

    def evaluate(self) -> dict[str, float]:
        """Test (and validation) accuracy of the raw and the EMA model."""
        return evaluate_parts(self.model, self.ema.module, {"test": self.data.test, "val": self.data.val},
                              lambda dataset: eval_loader(dataset, self.eval_view), self.normalize)
