"""The training loop: one place that owns forward, backward, optimizer, schedule and EMA."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from comatch import config as cfg
from comatch import distributed
from comatch.training import parallel
from comatch.training.checkpoint import check_resume_compatible, load_newest, rng_state, save_rotating, set_rng_state
from comatch.methods.criterion import CriterionOutput, build_criterion
from comatch.data import RunData
from comatch.data.datasets import batch_seed
from comatch.data.loaders import endless_batches, eval_loader
from comatch.data.batch_views import BatchViews
from comatch.data.views import build_views
from comatch.tools.evaluation import accuracy
from comatch.models import ModelEMA, build_model, param_groups_for_weight_decay
from comatch.errors import TrainingDiverged, UserError
from comatch.training.monitor import RunMonitor
from comatch.methods.momentum import MomentumCoMatchCriterion, MomentumEncoder
from comatch.training.precision import Precision, resolve_amp, resolve_channels_last
from comatch.models.pretrained import load_encoder_weights
from comatch.data.preprocessing import Normalizer, run_data, default_workers, use_deterministic_kernels, view_settings
from comatch.training.runtime import StopSignals, atomic_write_text, seed_everything
from comatch.training.schedule import cosine_lr_factor, ramped_lambda_c
from comatch.training.stats import StepStats
from comatch.training.step import StepForward

# Distinct seed streams for the two loaders and the shuffle-BN permutations, from the run's seed.
LABELLED_STREAM, UNLABELLED_STREAM, SHUFFLE_STREAM = 1, 2, 3


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
        self.config, self.out_dir = config, Path(out_dir)
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        self.device = parallel.start(config.run.device, config.run.dist_timeout)
        self.channels_last = resolve_channels_last(config.run.channels_last, self.device)
        if config.run.deterministic:
            use_deterministic_kernels()
        seed_everything(config.seed)
        self.data: RunData = data or run_data(config)
        self.in_channels = config.model.in_channels or self.data.channels
        self.model = self._build_network(load_init)
        self.ema = ModelEMA(self.model, config.optim.ema_decay, warmup=config.optim.ema_warmup)
        c = config.comatch
        uses_momentum = config.method == "comatch" and c.momentum is not None
        self.momentum = MomentumEncoder(self.model, c.momentum) if uses_momentum else None
        self.criterion = self._build_criterion().to(self.device)
        every_parameter_used = config.method == "comatch" and c.contrastive
        self.ddp_model = distributed.wrap_ddp(self.model, self.device, not every_parameter_used)
        if config.run.compile:
            self.ddp_model = torch.compile(self.ddp_model)
        self.precision = Precision(resolve_amp(config.run.amp, self.device), self.device)
        o = config.optim
        self.optimizer = torch.optim.SGD(
            param_groups_for_weight_decay(self.model, o.weight_decay), lr=o.lr,
            momentum=o.momentum, nesterov=o.nesterov,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: cosine_lr_factor(k, o.iterations)
        )
        self.normalize = Normalizer(self.data.mean, self.data.std, self.in_channels, self.device)
        self.forward = StepForward(self.model, self.ddp_model, self.normalize, self.precision,
                                   self.channels_last, self.momentum)
        settings = view_settings(config, self.data.image_size)
        self.eval_view = build_views(settings)["eval"]
        self.batch_views = BatchViews(settings)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.images_per_step = o.batch_size * (1 + o.mu * len(self.criterion.unlabelled_views))
        self.rows_x = parallel.batch_rows(o.batch_size, "labelled")
        self.rows_u = parallel.batch_rows(o.batch_size * o.mu, "unlabelled")
        self.stats = StepStats(self.device)
        self.monitor: RunMonitor | parallel.NullMonitor | None = None
        self.step = self.bad_steps = self.skipped_steps = self.metrics_offset = 0
        self.wall_before = 0.0

    def _build_network(self, load_init: bool) -> torch.nn.Module:
        """The network on its device, from ``model.init`` when given."""
        m, run = self.config.model, self.config.run
        model = build_model(m.arch, self.data.num_classes, in_channels=self.in_channels,
                            proj_dim=m.proj_dim, bn_momentum=m.bn_momentum)
        if m.init and load_init:
            report = load_encoder_weights(model.encoder, m.init)
            if distributed.is_main_process():
                print(report.summary(Path(m.init)), flush=True)
        return parallel.prepare_network(model, self.device, sync_bn=run.sync_bn, channels_last=self.channels_last)

    def _build_criterion(self) -> torch.nn.Module:
        """The method's criterion; the momentum variant's when a momentum encoder is used."""
        c, num_classes = self.config.comatch, self.data.num_classes
        settings = dict(
            alpha=c.alpha, temperature=c.temperature, threshold=c.threshold,
            graph_threshold=c.graph_threshold, lambda_u=c.lambda_u, lambda_c=c.lambda_c,
            da_window=c.da_window, alignment=c.alignment, smoothing=c.smoothing,
            contrastive=c.contrastive, self_loop_only=c.self_loop_only, hard_labels=c.hard_labels,
        )
        proj_dim, bank_size = self.config.model.proj_dim, self.config.bank_size
        if self.momentum is not None:
            return MomentumCoMatchCriterion(num_classes, proj_dim, bank_size, queue_size=c.queue_size, **settings)
        return build_criterion(self.config.method, num_classes, proj_dim, bank_size, **settings)

    # ----------------------------------------------------------------- data
    def _loaders(self) -> tuple[Any, Any | None]:
        o, seed, workers = self.config.optim, self.config.seed, default_workers(self.config.data.num_workers)
        on_device = self.config.data.augment_on == "gpu"
        common = dict(start_batch=self.step, num_workers=workers, pin_memory=self.device.type == "cuda",
                      shard=(distributed.rank(), distributed.world_size()))
        views = None if on_device else self.batch_views
        labelled = endless_batches(
            self.data.labelled, views, ["weak"], o.batch_size, seed * 16 + LABELLED_STREAM, **common
        )
        names = self.criterion.unlabelled_views
        unlabelled = None
        if names:
            unlabelled = endless_batches(
                self.data.unlabelled, views, names, o.batch_size * o.mu,
                seed * 16 + UNLABELLED_STREAM, **common,
            )
        return labelled, unlabelled

    def _views(self, batch: list, names: tuple[str, ...], rows: tuple[int, int]) -> list[torch.Tensor]:
        """The augmented views of a loader batch (this process's ``rows`` of the global batch);
        augments here when the loader did not."""
        if self.config.data.augment_on != "gpu":
            return batch[:-3]
        images = batch[0].to(self.device, non_blocking=True)
        generator = torch.Generator().manual_seed(batch[-1])
        total = (rows[1] - rows[0]) * distributed.world_size()
        return [self.batch_views(name, images, generator, start=rows[0], total=total) for name in names]

    # ----------------------------------------------------------------- step
    def training_step(self, batch_x: list, batch_u: list | None) -> CriterionOutput:
        """One optimisation step on a labelled and an unlabelled batch.

        A step whose loss or gradients are not finite is not applied (see ``run.nonfinite``).
        """
        (images_x,) = self._views(batch_x, ("weak",), self.rows_x)
        targets_x = batch_x[-3].to(self.device, non_blocking=True)
        names = self.criterion.unlabelled_views
        views_u = self._views(batch_u, names, self.rows_u) if batch_u is not None else []
        self._ramp_lambda_c()
        shuffle = None
        if self.momentum is not None:  # the shuffle-BN permutation of the momentum encoder
            shuffle = torch.Generator().manual_seed(batch_seed(self.config.seed * 16 + SHUFFLE_STREAM, self.step))
        out = self.forward(self.criterion, images_x, targets_x, views_u, shuffle)
        if self.update(out):
            truth = batch_u[-3].to(self.device, non_blocking=True) if batch_u is not None else None
            self.stats.add(out, truth)
        return out

    def update(self, out: CriterionOutput) -> bool:
        """Backward, then optimizer, schedule and EMA steps; False if the step was rejected."""
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward(out.loss)
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

    def _ramp_lambda_c(self) -> None:
        """``lambda_c = min(epoch + 1, lambda_c)`` when ``comatch.lambda_c_ramp`` is on."""
        c, o = self.config.comatch, self.config.optim
        if c.lambda_c_ramp and hasattr(self.criterion, "lambda_c"):
            unlabelled = len(self.data.unlabelled)  # type: ignore[arg-type]
            self.criterion.lambda_c = ramped_lambda_c(c.lambda_c, self.step, o.batch_size * o.mu, unlabelled)

    def _finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss and every gradient are finite on every process (one host sync).

        With fp16 only the loss is checked: overflowing gradients are the loss scaler's
        business (it skips the step and lowers the scale).
        """
        ok = torch.isfinite(loss)
        if not self.precision.scales_loss:
            grads = [p.grad for p in self.trainable if p.grad is not None]
            norms = torch.stack(torch._foreach_norm(grads)) if grads else loss.new_zeros(1)
            ok = ok & torch.isfinite(norms).all()
        return not distributed.any_process(not bool(ok), self.device)

    def _reject_step(self) -> None:
        """Count a non-finite step; stop per ``run.nonfinite`` and ``run.max_bad_steps``."""
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.skipped_steps += 1
        policy, limit = self.config.run.nonfinite, self.config.run.max_bad_steps
        if policy == "stop" or self.bad_steps >= limit:
            where = f"the loss or its gradients were not finite at step {self.step + 1} ({self.bad_steps} bad step(s) in a row)"
            if not (self.out_dir / "checkpoints" / "last.pt").exists():  # [rel] claim no checkpoint that is not there
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
            "criterion": self.criterion.state_dict(),
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
            "momentum_encoder": self.momentum.state_dict() if self.momentum is not None else None,
            "precision": self.precision.state_dict(),
            "world_size": distributed.world_size(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of the same run (see :meth:`state_dict`)."""
        self.step = state["step"]
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if distributed.is_main_process():  # the saved sums are global: rank 0 carries them
            self.stats.load_state_dict(state["stats"])
        if self.momentum is not None:
            self.momentum.load_state_dict(state["momentum_encoder"])
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
        """Train to ``optim.iterations`` steps; returns the summary.

        SIGTERM or SIGINT finishes the current step, checkpoints and returns early with
        ``summary["stopped"] = True``.
        """
        cfg_run, total = self.config.run, self.config.optim.iterations
        main = distributed.is_main_process()
        self.data.record_failures(self.out_dir / "skipped_images.log")  # [rel] images failing mid-run
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / "config.yaml", cfg.to_yaml(self.config))
            atomic_write_text(self.out_dir / "labelled.json", json.dumps(self.data.labelled_ids))
            atomic_write_text(self.out_dir / "data.json", json.dumps(self.data.describe(), indent=2) + "\n")
        self.monitor = parallel.run_monitor(self.out_dir, total, self.step, self.metrics_offset,
                                            cfg_run.tensorboard)
        for note in self.data.notes:
            self.monitor.message(f"data: {note}")
        labelled, unlabelled = self._loaders()
        start = self._started = time.perf_counter()
        tick, tick_step = start, self.step
        self.model.train()
        with StopSignals() as stop:
            while self.step < total and not distributed.any_process(stop.requested, self.device):
                batch_x = next(labelled)
                batch_u = next(unlabelled) if unlabelled is not None else None
                self.training_step(batch_x, batch_u)
                self.step += 1
                self.monitor.advance()
                if self.step % cfg_run.log_every == 0 or self.step == total:
                    self.stats.reduce_to_main()
                    now = time.perf_counter()
                    rate = self.images_per_step * (self.step - tick_step) / max(now - tick, 1e-9)
                    self.monitor.log({"step": self.step, "kind": "train", **self.stats.read(),
                                      "lr": self.scheduler.get_last_lr()[0], "images_per_sec": rate})
                    tick, tick_step = now, self.step
                if main and (self.step % cfg_run.eval_every == 0 or self.step == total):
                    self.monitor.log({"step": self.step, "kind": "eval", **self.evaluate()})
                if self.step % cfg_run.checkpoint_every == 0 and self.step < total:
                    self.save_checkpoint()
            self.save_checkpoint()
        stopped = self.step < total
        summary = self._summary(time.perf_counter() - start + self.wall_before, stopped)
        if main:
            atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
            atomic_write_text(self.out_dir / "data.json", json.dumps(self.data.describe(), indent=2) + "\n")  # [rel]
            if not stopped and cfg_run.report:
                from comatch.tools.report import end_of_run_report  # matplotlib is imported only here

                end_of_run_report(self.out_dir, self.device, cfg_run.report_embedding, self.monitor.message)
        if stopped:
            self.monitor.message(
                f"stopped at step {self.step} of {total}; checkpoint saved. Continue with: "
                f"{'torchrun ... -m ' if distributed.world_size() > 1 else ''}comatch train --resume {self.out_dir}"
            )
        self.monitor.close()
        return summary

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
            "skipped_images": len(self.data.all_skipped()),  # [rel] up front and mid-run
            "wall_seconds": wall_seconds,
        }
