"""The training loop: one place that owns forward, backward, optimizer, schedule and EMA."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from comatch import config as cfg
from comatch.checkpoint import check_resume_compatible, load_newest, rng_state, save_rotating, set_rng_state
from comatch.criterion import CriterionOutput, build_criterion
from comatch.data import RunData, build_data
from comatch.data.loaders import endless_batches, eval_loader
from comatch.data.batch_views import BatchViews
from comatch.data.views import ViewSettings, build_views
from comatch.evaluation import accuracy
from comatch.models import ModelEMA, build_model, param_groups_for_weight_decay
from comatch.errors import TrainingDiverged, UserError
from comatch.monitor import RunMonitor
from comatch.runtime import StopSignals, atomic_write_text, resolve_device, seed_everything
from comatch.schedule import cosine_lr_factor
from comatch.stats import StepStats

# Distinct seed streams for the two loaders, derived from the run's seed.
LABELLED_STREAM, UNLABELLED_STREAM = 1, 2


def view_settings(config: cfg.Config) -> ViewSettings:
    """The view settings of a configuration."""
    v = config.views
    return ViewSettings(
        image_size=config.data.image_size,
        crop_padding=v.crop_padding,
        flip=v.flip,
        cutout=v.cutout,
        randaugment_ops=v.randaugment_ops,
        randaugment_magnitude=v.randaugment_magnitude,
        crop_scale_min=v.crop_scale_min,
        jitter_prob=v.jitter_prob,
        grayscale_prob=v.grayscale_prob,
        fill=v.fill,
    )


class Normalizer:
    """Moves a uint8 batch to the device, matches the channel count and normalises it."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], channels: int, device: torch.device) -> None:
        if len(mean) != channels:  # grayscale statistics for an RGB network: repeat them
            mean, std = mean * channels, std * channels
        self.mean = torch.tensor(mean[:channels], device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std[:channels], device=device).view(1, -1, 1, 1) * 255
        self.channels, self.device = channels, device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if images.shape[1] != self.channels:
            images = images.expand(-1, self.channels, -1, -1)
        return (images.float() - self.mean) / self.std


class Trainer:
    """Trains one run of ``config`` and writes its run directory.

    Args:
        config: the resolved configuration.
        out_dir: the run directory (created; must not hold another run).
    """

    def __init__(self, config: cfg.Config, out_dir: Path) -> None:
        self.config, self.out_dir = config, Path(out_dir)
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        self.device = resolve_device(config.run.device)
        seed_everything(config.seed)
        d = config.data
        self.data: RunData = build_data(
            d.dataset, seed=config.seed, labels_per_class=d.labels_per_class, num_labels=d.num_labels,
            val_per_class=d.val_per_class, mean=d.mean, std=d.std,
        )
        self.model = build_model(
            config.model.arch, self.data.num_classes, in_channels=d.channels,
            proj_dim=config.model.proj_dim, bn_momentum=config.model.bn_momentum,
        ).to(self.device)
        self.ema = ModelEMA(self.model, config.optim.ema_decay, warmup=config.optim.ema_warmup)
        c = config.comatch
        self.criterion = build_criterion(
            config.method, self.data.num_classes, config.model.proj_dim, config.bank_size,
            alpha=c.alpha, temperature=c.temperature, threshold=c.threshold,
            graph_threshold=c.graph_threshold, lambda_u=c.lambda_u, lambda_c=c.lambda_c,
            da_window=c.da_window, alignment=c.alignment, smoothing=c.smoothing,
            contrastive=c.contrastive, self_loop_only=c.self_loop_only, hard_labels=c.hard_labels,
        ).to(self.device)
        o = config.optim
        self.optimizer = torch.optim.SGD(
            param_groups_for_weight_decay(self.model, o.weight_decay), lr=o.lr,
            momentum=o.momentum, nesterov=o.nesterov,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: cosine_lr_factor(k, o.iterations)
        )
        self.normalize = Normalizer(self.data.mean, self.data.std, d.channels, self.device)
        settings = view_settings(config)
        self.eval_view = build_views(settings)["eval"]
        self.batch_views = BatchViews(settings)
        self.images_per_step = o.batch_size * (1 + o.mu * len(self.criterion.unlabelled_views))
        self.stats = StepStats(self.device)
        self.monitor: RunMonitor | None = None
        self.step = self.bad_steps = self.skipped_steps = self.metrics_offset = 0
        self.wall_before = 0.0

    # ----------------------------------------------------------------- data
    def _loaders(self) -> tuple[Any, Any | None]:
        o, seed, workers = self.config.optim, self.config.seed, self.config.data.num_workers
        on_device = self.config.data.augment_on == "device"
        common = dict(start_batch=self.step, num_workers=workers, pin_memory=self.device.type == "cuda")
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

    def _views(self, batch: list, names: tuple[str, ...]) -> list[torch.Tensor]:
        """The augmented views of a loader batch; augments here when the loader did not."""
        if self.config.data.augment_on != "device":
            return batch[:-3]
        images = batch[0].to(self.device, non_blocking=True)
        generator = torch.Generator().manual_seed(batch[-1])
        return [self.batch_views(name, images, generator) for name in names]

    # ----------------------------------------------------------------- step
    def training_step(self, batch_x: list, batch_u: list | None) -> CriterionOutput:
        """One optimisation step on a labelled and an unlabelled batch.

        A step whose loss or gradients are not finite is not applied (see ``run.nonfinite``).
        """
        (images_x,) = self._views(batch_x, ("weak",))
        targets_x = batch_x[-3].to(self.device, non_blocking=True)
        views_u = self._views(batch_u, self.criterion.unlabelled_views) if batch_u is not None else []
        inputs = self.normalize(torch.cat([images_x, *views_u]))  # [B + k*N, C, H, W]
        logits, z = self.model(inputs)
        n_x = images_x.shape[0]
        if not views_u:
            out = self.criterion(logits[:n_x], targets_x)
        else:
            logits_u = logits[n_x:].chunk(len(views_u))  # k x [N, C]
            z_u = z[n_x:].chunk(len(views_u))  # k x [N, D]
            extra = {"z_u_s1": z_u[2]} if len(views_u) == 3 else {}
            out = self.criterion(
                logits[:n_x], targets_x, logits_u[0], logits_u[1],
                z_x=z[:n_x].detach(), z_u_w=z_u[0].detach(), z_u_s0=z_u[1], **extra,
            )
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if not self._finite(out.loss):
            self._reject_step()
            return out
        self.bad_steps = 0
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model, self.step)
        truth = batch_u[-3].to(self.device, non_blocking=True) if batch_u is not None else None
        self.stats.add(out, truth)
        return out

    def _finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss and every gradient are finite (one host sync per step)."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norms = torch.stack(torch._foreach_norm(grads)) if grads else loss.new_zeros(1)
        return bool(torch.isfinite(loss) & torch.isfinite(norms).all())

    def _reject_step(self) -> None:
        """Count a non-finite step; stop per ``run.nonfinite`` and ``run.max_bad_steps``."""
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.skipped_steps += 1
        policy, limit = self.config.run.nonfinite, self.config.run.max_bad_steps
        if policy == "stop" or self.bad_steps >= limit:
            raise TrainingDiverged(
                f"the loss or its gradients were not finite at step {self.step + 1} "
                f"({self.bad_steps} bad step(s) in a row); the last good checkpoint in "
                f"{self.out_dir / 'checkpoints'} is intact: lower optim.lr and --resume, "
                f"or start again"
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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of the same run (see :meth:`state_dict`)."""
        self.step = state["step"]
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stats.load_state_dict(state["stats"])
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
        trainer = cls(config, run_dir)
        saved_ids = json.loads((Path(run_dir) / "labelled.json").read_text())
        if saved_ids != trainer.data.labelled_ids:
            raise UserError(f"the labelled subset of {run_dir} differs from the one this data gives; "
                            "the dataset changed since the run started: start a new run")
        trainer.load_state_dict(state)
        log = Path(run_dir) / "resumes.jsonl"
        with log.open("a") as handle:
            handle.write(json.dumps({"step": trainer.step, "checkpoint": path.name,
                                     "changes": {k: list(v) for k, v in changes.items()}}) + "\n")
        return trainer

    def save_checkpoint(self) -> Path:
        """Write the newest checkpoint of the run directory (the previous one is kept)."""
        return save_rotating(self.out_dir / "checkpoints", self.state_dict())

    # ----------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        """Train to ``optim.iterations`` steps; returns the summary.

        SIGTERM or SIGINT finishes the current step, checkpoints and returns early with
        ``summary["stopped"] = True``.
        """
        cfg_run, total = self.config.run, self.config.optim.iterations
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out_dir / "config.yaml", cfg.to_yaml(self.config))
        atomic_write_text(self.out_dir / "labelled.json", json.dumps(self.data.labelled_ids))
        self.monitor = RunMonitor(self.out_dir, total, self.step, self.metrics_offset,
                                  tensorboard=cfg_run.tensorboard)
        labelled, unlabelled = self._loaders()
        start = self._started = time.perf_counter()
        tick, tick_step = start, self.step
        self.model.train()
        with StopSignals() as stop:
            while self.step < total and not stop.requested:
                batch_x = next(labelled)
                batch_u = next(unlabelled) if unlabelled is not None else None
                self.training_step(batch_x, batch_u)
                self.step += 1
                self.monitor.advance()
                if self.step % cfg_run.log_every == 0 or self.step == total:
                    now = time.perf_counter()
                    rate = self.images_per_step * (self.step - tick_step) / max(now - tick, 1e-9)
                    self.monitor.log({"step": self.step, "kind": "train", **self.stats.read(),
                                      "lr": self.scheduler.get_last_lr()[0], "images_per_sec": rate})
                    tick, tick_step = now, self.step
                if self.step % cfg_run.eval_every == 0 or self.step == total:
                    self.monitor.log({"step": self.step, "kind": "eval", **self.evaluate()})
                if self.step % cfg_run.checkpoint_every == 0 and self.step < total:
                    self.save_checkpoint()
            self.save_checkpoint()
        stopped = self.step < total
        summary = self._summary(time.perf_counter() - start + self.wall_before, stopped)
        atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        if not stopped and cfg_run.report:
            from comatch.report import end_of_run_report  # matplotlib is imported only here

            end_of_run_report(self.out_dir, self.device, cfg_run.report_embedding, self.monitor.message)
        if stopped:
            self.monitor.message(
                f"stopped at step {self.step} of {total}; checkpoint saved. Continue with: "
                f"comatch train --resume {self.out_dir}"
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
            "wall_seconds": wall_seconds,
        }
