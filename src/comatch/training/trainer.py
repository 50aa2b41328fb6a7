"""The training loop: one place that owns forward, backward, optimizer, schedule and EMA."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

import comatch
from comatch import config as cfg
from comatch.config import parse_duration
from comatch import distributed
from comatch.training import parallel
from comatch.training.checkpoint import check_resume_compatible, load_newest, rng_state, save_rotating, set_rng_state
from comatch.data import RunData
from comatch.data.batch_views import BatchViews
from comatch.data.datasets import ViewBatch, batch_seed
from comatch.data.loaders import endless_batches, eval_loader
from comatch.data.preprocessing import Normalizer, run_data, use_deterministic_kernels, view_settings
from comatch.data.views import build_views
from comatch.errors import TrainingDiverged, UserError
from comatch.methods import METHODS, Batch, MethodContext, MethodOutput
from comatch.models import ModelEMA, build_model, param_groups_for_weight_decay
from comatch.models.optim import param_groups_layer_decay
from comatch.models.pretrained import load_encoder_weights
from comatch.tools.evaluation import accuracy
from comatch.training.defaults import default_workers
from comatch.training.encoder import Encoder, Timer, no_timer
from comatch.training.monitor import RunMonitor
from comatch.training.precision import Precision, resolve_amp, resolve_channels_last
from comatch.training.runtime import atomic_write_text, keep_freed_memory, seed_everything
from comatch.training.signals import StopSignals, Terminated
from comatch.training.pace import PROBE_STEPS, Costs, duration, steps_within, too_long_advice
from comatch.training.schedule import lr_factor, steps_per_epoch
from comatch.training.stats import StepStats
from comatch.training.state import NormBuffers
from comatch.training import trust_hooks
from comatch.data.labels import class_counts

# Distinct seed streams for the two loaders and the step's own randomness, from the run's seed.
LABELLED_STREAM, UNLABELLED_STREAM, STEP_STREAM = 1, 2, 3
# Batches a loader without worker processes augments at once, and the most memory their views may take.
AUGMENT_GROUP, AUGMENT_GROUP_BYTES = 4, 32 * 2**20


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
    """

    def __init__(
        self, config: cfg.Config, out_dir: Path, data: RunData | None = None, *, load_init: bool = True
    ) -> None:
        self._created = time.perf_counter()
        self.config, self.out_dir = config, Path(out_dir)
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
        if config.data.exclude_outliers and self.data.unlabelled is not None:
            self.data = trust_hooks.leave_out_outliers(self)
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
        self.precision = Precision(resolve_amp(config.run.amp, self.device), self.device)
        o = config.optim
        self.optimizer = torch.optim.SGD(
            self._param_groups(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
        )
        epoch = steps_per_epoch(o.batch_size * o.mu, unlabelled)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: lr_factor(o.schedule, k, o.iterations, epoch)
        )
        self.normalize = Normalizer(self.data.mean, self.data.std, self.in_channels, self.device)
        self.timer: Timer = no_timer  # a benchmark may time the step's phases through it
        self.encode = Encoder(self.ddp_model, self.normalize, self.precision, self.channels_last,
                              timer=lambda phase: self.timer(phase))
        self.norm_buffers = NormBuffers([self.model, self.method])
        settings = view_settings(config, self.data.image_size)
        self.eval_view = build_views(settings)["eval"]
        self.batch_views = BatchViews(settings)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        views_x, views_u = len(self.method.labelled_views), len(self.method.unlabelled_views)
        self.images_per_step = o.batch_size * (views_x + o.mu * views_u)
        self.rows_x = parallel.batch_rows(o.batch_size, "labelled")
        self.rows_u = parallel.batch_rows(o.batch_size * o.mu, "unlabelled")
        self.stats = StepStats(self.device, self.data.num_classes)
        self.monitor: RunMonitor | parallel.NullMonitor | None = None
        self.step = self.bad_steps = self.skipped_steps = self.metrics_offset = 0
        self.wall_before = 0.0
        self.setup_seconds = time.perf_counter() - self._created  # data loading, network, method

    def _param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: layer-wise learning-rate decay for a pretrained
        backbone (``optim.layer_decay``), else one learning rate with the weight-decay exemptions."""
        o = self.config.optim
        if o.layer_decay is not None:
            return param_groups_layer_decay(self.model, o.lr, o.weight_decay, o.layer_decay)
        return param_groups_for_weight_decay(self.model, o.weight_decay, o.weight_decay_exempt)

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
        """The endless labelled and (if the method uses unlabelled data) unlabelled loaders."""
        o, seed, workers = self.config.optim, self.config.seed, default_workers(self.config.data.num_workers, self.device.type)
        on_device = self.config.data.augment_on == "gpu"
        common = dict(start_batch=self.step, num_workers=workers, pin_memory=self.device.type == "cuda",
                      shard=(distributed.rank(), distributed.world_size()))
        views = None if on_device else self.batch_views
        labelled = endless_batches(
            self.data.labelled, views, self.method.labelled_views, o.batch_size,
            seed * 16 + LABELLED_STREAM, group=self._augment_group(o.batch_size, self.method.labelled_views), **common,
        )
        unlabelled = None
        if self.method.unlabelled_views:
            unlabelled = endless_batches(
                self.data.unlabelled, views, self.method.unlabelled_views, o.batch_size * o.mu,
                seed * 16 + UNLABELLED_STREAM, group=self._augment_group(o.batch_size * o.mu, self.method.unlabelled_views),
                **common,
            )
        return labelled, unlabelled

    def _augment_group(self, batch_size: int, views: dict[str, str]) -> int:
        """How many batches a loader without workers augments at once (the same batches
        whatever the number): 4 while their views take at most 32 MiB, else 2 or 1.

        On small images most of the augmentation's cost is the fixed cost of each operation
        (for the digits preset, 6.5 against 2.5 ms per step measured right after a network
        step: benchmarks/LOG.md). The group divides the steps the first timing of a run
        measures, so that those hold exactly one group's augmentation.
        """
        view_bytes = batch_size * len(views) * self.data.channels * self.data.image_size ** 2
        group = AUGMENT_GROUP
        while group > 1 and (group * view_bytes > AUGMENT_GROUP_BYTES or (PROBE_STEPS - 1) % group):
            group //= 2
        return group

    def _views(self, loaded: ViewBatch, names: dict[str, str], rows: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The views ``names`` (key -> kind) of a loader batch on the device (this process's
        ``rows`` of the global batch); augments here when the loader did not."""
        if loaded.images is None:
            return {key: loaded.views[key].to(self.device, non_blocking=True) for key in names}
        images = loaded.images.to(self.device, non_blocking=True)
        generator = torch.Generator().manual_seed(loaded.seed)
        total = (rows[1] - rows[0]) * distributed.world_size()
        return {key: self.batch_views(kind, images, generator, start=rows[0], total=total)
                for key, kind in names.items()}

    def make_batch(self, loaded_x: ViewBatch, loaded_u: ViewBatch | None) -> Batch:
        """The method's :class:`~comatch.methods.base.Batch` for this step from the loaders' batches."""
        unlabelled, truth = {}, None
        if loaded_u is not None:
            unlabelled = self._views(loaded_u, self.method.unlabelled_views, self.rows_u)
            truth = loaded_u.labels.to(self.device, non_blocking=True)
        return Batch(
            labelled=self._views(loaded_x, self.method.labelled_views, self.rows_x),
            targets=loaded_x.labels.to(self.device, non_blocking=True),
            unlabelled=unlabelled, truth=truth, step=self.step,
            seed=batch_seed(self.config.seed * 16 + STEP_STREAM, self.step),
        )

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

    @classmethod
    def resume(cls, run_dir: Path, config: cfg.Config) -> "Trainer":
        """A trainer continuing ``run_dir`` from its newest loadable checkpoint.

        Args:
            run_dir: an existing run directory.
            config: the configuration to continue with; it may differ from the run's only in
                harmless fields (logging, more iterations, workers), which are recorded.

        Raises:
            UserError: no loadable checkpoint, or a change to the run's meaning.
        """
        state, path = load_newest(Path(run_dir) / "checkpoints")
        changes = check_resume_compatible(state["config"], config.model_dump(mode="json"))
        trainer = cls(config, run_dir, load_init=False)
        saved_ids = json.loads((Path(run_dir) / "labelled.json").read_text())
        if saved_ids != trainer.data.labelled_ids:
            raise UserError(f"the labelled subset of {run_dir} differs from the one this data gives; "
                            "the dataset changed since the run started: start a new run")
        trainer.load_state_dict(state)
        if distributed.is_main_process():
            record = {"step": trainer.step, "checkpoint": path.name,
                      "changes": {k: list(v) for k, v in changes.items()},
                      "processes": [state.get("world_size", 1), distributed.world_size()]}
            with (Path(run_dir) / "resumes.jsonl").open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        return trainer

    def save_checkpoint(self) -> Path:
        """Write the newest checkpoint of the run directory (the previous one is kept).

        Every process calls it (the running statistics are summed into rank 0); rank 0 writes.
        """
        self.stats.reduce_to_main()
        folder = self.out_dir / "checkpoints"
        if distributed.is_main_process():
            return save_rotating(folder, self.state_dict())
        return folder / "last.pt"

    # ----------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        """Train to ``optim.iterations`` steps (or as many as ``run.budget`` allows); returns
        the summary.

        SIGTERM or SIGINT finishes the current step, checkpoints and returns early with
        ``summary["stopped"] = True``.
        """
        cfg_run = self.config.run
        main = distributed.is_main_process()
        self.data.record_failures(self.out_dir / "skipped_images.log")  # images failing mid-run (loader workers log them)
        if main:
            self._write_run_files()
        self.monitor = parallel.run_monitor(self.out_dir, self.config.optim.iterations, self.step,
                                            self.metrics_offset, cfg_run.tensorboard, self.data.class_names)
        self._start_block()
        labelled, unlabelled = self.loaders()
        start = self._started = time.perf_counter()
        tick, tick_step, first_step = start, self.step, self.step
        # the step time of the next fit of the budget is measured from window_from (step
        # window_step), less the seconds of evaluations and pacing since then (not_stepping)
        window_from, window_step, not_stepping, refit_at = None, self.step, 0.0, None
        self.model.train()
        with StopSignals() as stop:
            while self.step < self.config.optim.iterations and not distributed.any_process(stop.requested, self.device):
                with self.timer("data"):
                    batch = self.make_batch(next(labelled), next(unlabelled) if unlabelled is not None else None)
                self.training_step(batch)
                self.step += 1
                self.monitor.advance()
                total = self.config.optim.iterations
                if self.step == first_step + 1:  # the first step (warm-up) is not timed
                    window_from, window_step, not_stepping = time.perf_counter(), self.step, 0.0
                elif self.step == first_step + PROBE_STEPS and window_from is not None:
                    t0 = time.perf_counter()
                    self._pace((t0 - window_from) / (PROBE_STEPS - 1), first_step == 0)
                    not_stepping += time.perf_counter() - t0
                    total = self.config.optim.iterations
                    refit_at = self.step + (total - self.step) // 4 if cfg_run.budget and first_step == 0 else None
                elif self.step == refit_at and refit_at > first_step + PROBE_STEPS:
                    # a budget fitted on 4 steps misses a machine that slows down: fit it again a
                    # quarter into the run, then halfway through what is left each time, on the step
                    # time since the last fit (evaluations left out), while at least 10 steps are left
                    t0 = time.perf_counter()
                    self._refit_budget((t0 - window_from - not_stepping) / (self.step - window_step), self.step - window_step)
                    total = self.config.optim.iterations
                    window_from, window_step, not_stepping = time.perf_counter(), self.step, 0.0
                    refit_at = self.step + (total - self.step) // 2 if (total - self.step) // 2 >= 10 else None
                if self.step % cfg_run.log_every == 0 or self.step == total:
                    self.stats.reduce_to_main()
                    now = time.perf_counter()
                    rate = self.images_per_step * (self.step - tick_step) / max(now - tick, 1e-9)
                    self.monitor.log({"step": self.step, "kind": "train", **self.stats.read(),
                                      "lr": self.scheduler.get_last_lr()[0], "images_per_sec": rate})
                    trust_hooks.warn_during_run(self)
                    tick, tick_step = now, self.step
                if main and (self.step % cfg_run.eval_every == 0 or self.step == total):
                    t0 = time.perf_counter()
                    self.monitor.log({"step": self.step, "kind": "eval", **self.evaluate()})
                    not_stepping += time.perf_counter() - t0
                if self.step % cfg_run.checkpoint_every == 0 and self.step < total:
                    self.save_checkpoint()
            self.save_checkpoint()
        return self._finish(time.perf_counter() - start)

    def _write_run_files(self) -> None:
        """config.yaml, labelled.json and data.json of the run directory."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out_dir / "config.yaml", cfg.to_yaml(self.config))
        atomic_write_text(self.out_dir / "labelled.json", json.dumps(self.data.labelled_ids))
        atomic_write_text(self.out_dir / "data.json", json.dumps(self.data.describe(), indent=2) + "\n")

    def _start_block(self) -> None:
        """What is about to be trained, in a few lines (also when the output is piped)."""
        c, o, d = self.config, self.config.optim, self.data
        size = lambda part: "none" if part is None else f"{len(part):,}"  # noqa: E731
        parameters = sum(p.numel() for p in self.model.parameters())
        views_u = len(self.method.unlabelled_views)
        unlabelled = f" + {o.batch_size * o.mu} unlabelled x {views_u} views" if views_u else ""
        threads = f" ({torch.get_num_threads()} threads; {comatch.OPENMP_WAIT})" if self.device.type == "cpu" else ""
        workers = default_workers(c.data.num_workers, self.device.type)
        budget = f", budget {c.run.budget}: set after the first {PROBE_STEPS} steps, again a quarter in and halfway through what is left" if c.run.budget and self.step == 0 else ""
        lines = [
            f"comatch: {c.method} on {c.preset}, seed {c.seed}" + (f", resuming at step {self.step}" if self.step else ""),
            f"  data     labelled {size(d.labelled)}, unlabelled {size(d.unlabelled)}, val {size(d.val)}, "
            f"test {size(d.test)}; {d.num_classes} classes; {d.image_size}x{d.image_size} px, {d.channels} channel(s)",
            f"  network  {c.model.arch}, {parameters / 1e6:.2f}M parameters, {self.in_channels}-channel input",
            f"  device   {self.device.type}{threads}, {workers} loader worker(s) per loader, {distributed.world_size()} process(es)",
            f"  batch    {o.batch_size} labelled{unlabelled}: {self.images_per_step} images per step",
            f"  steps    {o.iterations}{budget}; evaluation every {c.run.eval_every}, checkpoint every {c.run.checkpoint_every}",
            f"  run dir  {self.out_dir}",
        ]
        lines += [f"data: {note}" for note in d.notes]
        for line in lines:
            self.monitor.message(line)

    def _pace(self, step_seconds: float, fresh: bool) -> None:
        """After the probe steps: fit ``run.budget`` (fresh runs only), then say how long the run takes."""
        c = self.config
        evaluation_seconds = 0.0
        if c.run.budget and fresh:
            evaluation_seconds = self._time_evaluation()
            finish = 2.0 + (15.0 if c.run.report and self.device.type == "cpu" else 5.0 if c.run.report else 0.0)
            self._budget_costs = Costs(step_seconds, evaluation_seconds, finish)
            elapsed = self._fit_budget(self._budget_costs)
            self.monitor.message(f"budget {c.run.budget}: {c.optim.iterations} steps fit "
                                 f"(setup and {self.step} steps took {duration(elapsed)}, one evaluation "
                                 f"{evaluation_seconds:.1f} s)")
        left = Costs(step_seconds, evaluation_seconds).remaining(self.step, c.optim.iterations, c.run.eval_every)
        self.monitor.message(f"timing: {step_seconds:.3g} s per step (steps {self.step - PROBE_STEPS + 2}-{self.step}); "
                             f"about {duration(left)} for the {c.optim.iterations - self.step} steps left")
        advice = too_long_advice(left, c.optim.iterations, step_seconds, self.device.type)
        if advice:
            self.monitor.message(advice)

    def _fit_budget(self, costs: Costs) -> float:
        """Set ``optim.iterations`` to the most steps that end within ``run.budget`` at ``costs``
        (rank 0's answer on every process) and what depends on the run's length; returns the
        seconds the run has taken so far."""
        c = self.config
        elapsed = time.perf_counter() - self._started + self.wall_before + self.setup_seconds
        total = steps_within(parse_duration(c.run.budget), elapsed, self.step, costs, c.run.eval_every)
        if distributed.world_size() > 1:  # the processes timed their own steps: take one answer
            total = int(distributed.broadcast(torch.tensor([total], device=self.device), src=0)[0])
        c.optim.iterations = max(total, self.step)
        self._fit_to_length(c.optim.iterations)
        self.monitor.set_total(c.optim.iterations)
        if distributed.is_main_process():
            atomic_write_text(self.out_dir / "config.yaml", cfg.to_yaml(c))
        return elapsed

    def _refit_budget(self, step_seconds: float, steps: int) -> None:
        """Fit ``run.budget`` again with the step time measured over the last ``steps`` steps."""
        before = self.config.optim.iterations
        self._budget_costs = Costs(step_seconds, self._budget_costs.evaluation, self._budget_costs.finish)
        self._fit_budget(self._budget_costs)
        if self.config.optim.iterations != before:
            self.monitor.message(f"budget {self.config.run.budget}: {step_seconds:.3g} s per step over the last {steps} steps: "
                                 f"{self.config.optim.iterations} steps fit instead of {before}")

    def _fit_to_length(self, total: int) -> None:
        """Choose again the settings of ``run.fit_to_length`` for a run of ``total`` steps, and
        apply them to the network's BatchNorm layers and the EMA from this step on."""
        from comatch.training.defaults import run_length_settings

        c = self.config
        for key, (value, reason) in run_length_settings(total).items():
            if key not in c.run.fit_to_length:
                continue
            section, name = key.split(".")
            setattr(getattr(c, section), name, value)
            self.monitor.message(f"defaults: {key}={value}: {reason}")
        if "model.bn_momentum" in c.run.fit_to_length:
            for layer in self.model.modules():
                if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                    layer.momentum = c.model.bn_momentum
        if "optim.ema_decay" in c.run.fit_to_length:
            self.ema.decay = c.optim.ema_decay

    def _time_evaluation(self) -> float:
        """Seconds one evaluation takes (the main process evaluates; the time is shared)."""
        seconds = 0.0
        if distributed.is_main_process():
            t0 = time.perf_counter()
            self.monitor.log({"step": self.step, "kind": "eval", **self.evaluate()})
            seconds = time.perf_counter() - t0
        return float(distributed.broadcast(torch.tensor([seconds], device=self.device), src=0)[0]) \
            if distributed.world_size() > 1 else seconds

    def _finish(self, seconds: float) -> dict[str, Any]:
        """Summary, report and the closing lines of a run that ended or was stopped."""
        total = self.config.optim.iterations
        stopped = self.step < total
        summary = self._summary(seconds + self.wall_before, stopped)
        if distributed.is_main_process():
            atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
            atomic_write_text(self.out_dir / "data.json", json.dumps(self.data.describe(), indent=2) + "\n")
            if not stopped and self.config.run.baseline:
                summary["baseline"] = self._baselines()
                atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
            if not stopped:
                trust_hooks.end_of_run(self)
            if not stopped and self.config.run.report:
                self._report()
        if stopped:
            self.monitor.message(
                f"stopped at step {self.step} of {total}; checkpoint saved. Continue with: "
                f"{'torchrun ... -m ' if distributed.world_size() > 1 else ''}comatch train --resume {self.out_dir}"
            )
        self.monitor.close()
        return summary

    def _baselines(self) -> dict[str, Any]:
        """Frozen-feature and pixel baselines of the labelled images (``run.baseline``), written to
        baseline.json; what the summary keeps of them."""
        from comatch.tools.baseline import run_baselines

        found = run_baselines(self.out_dir, device=str(self.device), data=self.data)
        best, gain = found.get("best_baseline"), found.get("gain_over_best")
        if best is not None and gain is not None:
            self.monitor.message(f"baseline: the best baseline without this training ({best['name']}) reaches "
                                 f"{best['test_accuracy']:.2%} test accuracy; this run {gain * 100:+.1f} points (baseline.json)")
        return {"best": best, "gain_over_best": gain}

    def _report(self) -> None:
        """The end-of-run report; a signal (before or during it) leaves it to ``comatch report``."""
        with StopSignals() as stop:
            if not stop.requested:
                from comatch.tools.report import end_of_run_report  # matplotlib is imported only here

                stop.immediate = True  # the run is complete and saved: stop drawing at once
                try:
                    end_of_run_report(self.out_dir, self.device, self.config.run.report_embedding, self.monitor.message)
                    return
                except Terminated:
                    pass
                finally:
                    stop.immediate = False
            self.monitor.message(f"the end-of-run report was not written (stopped by {stop.name or 'a signal'}); the run is "
                                 f"complete and saved in {self.out_dir}: `comatch report {self.out_dir}` writes the report")

    def evaluate(self) -> dict[str, float]:
        """Test (and validation) accuracy of the raw and the EMA model."""
        result = {}
        for part, dataset in {"test": self.data.test, "val": self.data.val}.items():
            if dataset is None:
                continue
            loader = eval_loader(dataset, self.eval_view)
            result[f"{part}_acc"] = accuracy(self.model, loader, self.normalize)
            result[f"{part}_acc_ema"] = accuracy(self.ema.module, loader, self.normalize)
        return result

    def _summary(self, wall_seconds: float, stopped: bool) -> dict[str, Any]:
        evals = [r for r in self.monitor.records if r["kind"] == "eval"]
        trains = [r for r in self.monitor.records if r["kind"] == "train"]
        last = evals[-1] if evals else {}
        return {
            "method": self.config.method,
            "preset": self.config.preset,
            "seed": self.config.seed,
            "iterations": self.step,
            "stopped": stopped,
            "num_labelled": len(self.data.labelled_ids),
            "test_accuracy": last.get("test_acc"),
            "test_accuracy_ema": last.get("test_acc_ema"),
            "best_test_accuracy": max((r["test_acc_ema"] for r in evals), default=None),
            "val_accuracy": last.get("val_acc"),
            "val_accuracy_ema": last.get("val_acc_ema"),
            "pseudo_label_accuracy": trains[-1].get("pseudo_label_acc") if trains else None,
            "skipped_steps": self.skipped_steps,
            "skipped_images": len(self.data.all_skipped()),  # up front and mid-run
            "wall_seconds": wall_seconds,
        }
