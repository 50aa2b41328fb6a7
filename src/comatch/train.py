"""The training loop: one place that owns forward, backward, optimizer, schedule and EMA."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from comatch import config as cfg
from comatch.criterion import CriterionOutput, build_criterion
from comatch.data import RunData, build_data
from comatch.data.loaders import endless_batches, eval_loader
from comatch.data.views import ViewSettings, build_views
from comatch.evaluation import accuracy
from comatch.models import ModelEMA, build_model, param_groups_for_weight_decay
from comatch.runtime import atomic_write_text, resolve_device, save_checkpoint, seed_everything
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
        self.views = build_views(view_settings(config))
        self.step = 0
        self.history: list[dict[str, Any]] = []

    # ----------------------------------------------------------------- data
    def _loaders(self) -> tuple[Any, Any | None]:
        o, seed, workers = self.config.optim, self.config.seed, self.config.data.num_workers
        pin = self.device.type == "cuda"
        labelled = endless_batches(
            self.data.labelled, [self.views["weak"]], o.batch_size, seed * 16 + LABELLED_STREAM,
            start_batch=self.step, num_workers=workers, pin_memory=pin,
        )
        names = self.criterion.unlabelled_views
        unlabelled = None
        if names:
            unlabelled = endless_batches(
                self.data.unlabelled, [self.views[n] for n in names], o.batch_size * o.mu,
                seed * 16 + UNLABELLED_STREAM, start_batch=self.step, num_workers=workers,
                pin_memory=pin,
            )
        return labelled, unlabelled

    # ----------------------------------------------------------------- step
    def training_step(self, batch_x: list, batch_u: list | None) -> tuple[CriterionOutput, torch.Tensor | None]:
        """One optimisation step on a labelled and an unlabelled batch.

        Returns the criterion output and the unlabelled ground truth (for logging only).
        """
        images_x, targets_x = batch_x[0], batch_x[1].to(self.device, non_blocking=True)
        views_u = batch_u[:-2] if batch_u is not None else []
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
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model, self.step)
        truth = batch_u[-2].to(self.device, non_blocking=True) if batch_u is not None else None
        return out, truth

    # ----------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        """Train to ``optim.iterations`` steps, evaluating and logging; returns the summary."""
        cfg_run, total = self.config.run, self.config.optim.iterations
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out_dir / "config.yaml", cfg.to_yaml(self.config))
        atomic_write_text(self.out_dir / "labelled.json", json.dumps(self.data.labelled_ids))
        metrics = (self.out_dir / "metrics.jsonl").open("a")
        labelled, unlabelled = self._loaders()
        stats = StepStats(self.device)
        start = time.perf_counter()
        tick, tick_step = start, self.step
        self.model.train()
        while self.step < total:
            batch_x = next(labelled)
            batch_u = next(unlabelled) if unlabelled is not None else None
            out, truth = self.training_step(batch_x, batch_u)
            stats.add(out, truth)
            self.step += 1
            if self.step % cfg_run.log_every == 0 or self.step == total:
                now = time.perf_counter()
                images = stats.images_per_step(batch_x, batch_u) * (self.step - tick_step)
                record = {"step": self.step, "kind": "train", **stats.read(),
                          "lr": self.scheduler.get_last_lr()[0],
                          "images_per_sec": images / max(now - tick, 1e-9)}
                self._log(metrics, record)
                tick, tick_step = now, self.step
            if self.step % cfg_run.eval_every == 0 or self.step == total:
                self._log(metrics, {"step": self.step, "kind": "eval", **self.evaluate()})
        metrics.close()
        summary = self._summary(time.perf_counter() - start)
        self.save_checkpoint(self.out_dir / "checkpoints" / "last.pt")
        atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    def evaluate(self) -> dict[str, float]:
        """Test (and validation) accuracy of the raw and the EMA model."""
        result = {}
        parts = {"test": self.data.test, "val": self.data.val}
        for part, dataset in parts.items():
            if dataset is None:
                continue
            loader = eval_loader(dataset, self.views["eval"])
            result[f"{part}_acc"] = accuracy(self.model, loader, self.normalize)
            result[f"{part}_acc_ema"] = accuracy(self.ema.module, loader, self.normalize)
        return result

    def _log(self, handle: Any, record: dict[str, Any]) -> None:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        self.history.append(record)
        shown = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items() if k != "kind"
        )
        print(f"[{record['kind']}] {shown}", flush=True)

    def _summary(self, wall_seconds: float) -> dict[str, Any]:
        evals = [r for r in self.history if r["kind"] == "eval"]
        trains = [r for r in self.history if r["kind"] == "train"]
        last = evals[-1]
        return {
            "method": self.config.method,
            "preset": self.config.preset,
            "seed": self.config.seed,
            "iterations": self.step,
            "num_labelled": len(self.data.labelled_ids),
            "test_accuracy": last["test_acc"],
            "test_accuracy_ema": last["test_acc_ema"],
            "best_test_accuracy": max(r["test_acc_ema"] for r in evals),
            "val_accuracy": last.get("val_acc"),
            "val_accuracy_ema": last.get("val_acc_ema"),
            "pseudo_label_accuracy": trains[-1].get("pseudo_label_acc") if trains else None,
            "wall_seconds": wall_seconds,
        }

    def save_checkpoint(self, path: Path) -> None:
        """Write the run's full state to ``path`` atomically."""
        save_checkpoint(path, {
            "config": self.config.model_dump(mode="json"),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "class_names": self.data.class_names,
            "normalization": {"mean": list(self.data.mean), "std": list(self.data.std)},
        })
