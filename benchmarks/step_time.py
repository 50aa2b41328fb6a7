"""Where a training step's time goes, for a named setting.

Runs real training steps of the comatch Trainer and splits each into: waiting for data,
network forward+backward, CoMatch's own arithmetic (alignment, smoothing, bank, graphs,
losses: the criterion call), and optimizer + EMA. It also times the network alone
(forward + backward + optimizer step on the same batch, plain cross-entropy) interleaved
with the training steps,
and the CPU-seconds that augmenting one step's batch costs.

    python benchmarks/step_time.py --setting wrn28-2-cifar --steps 10
    python benchmarks/step_time.py --setting digits --steps 200 --json out.json

Settings: digits (the default preset), wrn10-1-digits, wrn28-2-cifar, resnet50-imagenet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import comatch  # noqa: F401  (first: comatch's OpenMP wait policy applies only if set before torch loads)
import torch
import torch.nn.functional as F

from comatch import config as cfg
from comatch.data.datasets import TensorImages
from comatch.data.sources import RunData
from comatch.training.step import plain_outputs
from comatch.data.datasets import gather
from comatch.data.preprocessing import view_settings
from comatch.training.trainer import Trainer

SETTINGS: dict[str, list[str]] = {
    "digits": [],
    "wrn10-1-digits": ["model.arch=wrn10_1", "data.image_size=32", "model.in_channels=3",
                       "optim.batch_size=16", "optim.mu=7", "comatch.bank_size=2560",
                       "data.num_workers=2", "views.crop_padding=4", "views.cutout=0.5"],
    "wrn28-2-cifar": ["model.arch=wrn28_2", "data.image_size=32", "data.channels=3",
                      "optim.batch_size=64", "optim.mu=7", "comatch.bank_size=2560",
                      "data.num_workers=1", "views.crop_padding=4", "views.cutout=0.5",
                      "views.fill=127", "views.crop_scale_min=0.2"],
    "resnet50-imagenet": ["model.arch=resnet50", "model.proj_dim=128", "data.image_size=224",
                          "data.channels=3", "optim.batch_size=2", "optim.mu=2",
                          "comatch.bank_size=64", "comatch.temperature=0.1",
                          "data.num_workers=1", "views.crop_padding=28", "views.cutout=0.5"],
}
RANDOM_DATA = {"wrn28-2-cifar": (3, 32, 10), "resnet50-imagenet": (3, 224, 10)}


def random_data(channels: int, size: int, classes: int, n: int = 2048) -> RunData:
    """Random uint8 images of a benchmark's shape (speed does not depend on content; 10
    classes everywhere: the head's size is negligible next to the encoder)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    pool = TensorImages(images, labels)
    small = TensorImages(images[:64], labels[:64])
    return RunData(classes, [str(c) for c in range(classes)], pool, pool, None, small,
                   list(range(n)), (0.5,) * channels, (0.25,) * channels, image_size=size, channels=channels)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_trainer(setting: str, extra: list[str], out: Path) -> Trainer:
    config = cfg.build_config(overrides=[*SETTINGS[setting], "run.tensorboard=false", *extra])
    data = random_data(*RANDOM_DATA[setting]) if setting in RANDOM_DATA else None
    return Trainer(config, out, data=data)


def reference_network(trainer: Trainer) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The released WRN (benchmarks/network_speed.py's reference copy) of the trainer's size,
    with the same SGD settings, to time its forward+backward+SGD step on the same batches."""
    from network_speed import ReferenceWideResNet

    arch = trainer.config.model.arch
    depth, width = {"wrn10_1": (10, 1), "wrn28_2": (28, 2)}[arch]
    net = ReferenceWideResNet(depth, width, trainer.data.num_classes, trainer.in_channels,
                              trainer.config.model.proj_dim).to(trainer.device).train()
    o = trainer.config.optim
    opt = torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                          weight_decay=o.weight_decay)
    return net, opt


def time_steps(trainer: Trainer, steps: int, warmup: int, reference: bool = False) -> dict[str, list[float]]:
    """Run ``warmup + steps`` instrumented training steps; per-step phase times (s).

    With ``reference`` the network-alone time is the released network's (reference copy)
    forward+backward+SGD step on the same batch instead of this project's own."""
    labelled, unlabelled = trainer._loaders()
    keys = ("step", "data", "network", "comatch", "optimizer", "network_only")
    phases: dict[str, list[float]] = {k: [] for k in keys}
    device = trainer.device
    trainer.model.train()
    names = trainer.criterion.unlabelled_views
    ref = reference_network(trainer) if reference else None
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch_x = next(labelled)
        batch_u = next(unlabelled) if unlabelled is not None else None
        (images_x,) = trainer._views(batch_x, ("weak",), trainer.rows_x)
        targets_x = batch_x[-3].to(device, non_blocking=True)
        views_u = trainer._views(batch_u, names, trainer.rows_u) if batch_u is not None else []
        inputs = torch.cat([images_x, *views_u])
        sync(device)
        t1 = time.perf_counter()
        logits, z = trainer.forward.encode(trainer.ddp_model, inputs)
        sync(device)
        t2 = time.perf_counter()
        out = plain_outputs(lambda _: (logits, z), trainer.criterion, images_x, targets_x, views_u)
        sync(device)
        t3 = time.perf_counter()
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.precision.backward(out.loss)
        sync(device)
        t4 = time.perf_counter()
        trainer.precision.unscale(trainer.optimizer)
        trainer._finite(out.loss)
        trainer.precision.step(trainer.optimizer)
        trainer.scheduler.step()
        trainer.ema.update(trainer.model, trainer.step)
        sync(device)
        t5 = time.perf_counter()
        trainer.step += 1
        network_only = time_network_only(trainer, inputs, targets_x, ref)
        if i >= warmup:
            for key, value in (("step", t5 - t0), ("data", t1 - t0), ("network", (t2 - t1) + (t4 - t3)),
                               ("comatch", t3 - t2), ("optimizer", t5 - t4), ("network_only", network_only)):
                phases[key].append(value)
    return phases


def time_network_only(trainer: Trainer, inputs: torch.Tensor, targets: torch.Tensor,
                      ref: tuple[torch.nn.Module, torch.optim.Optimizer] | None = None) -> float:
    """One forward + backward + optimizer step of the network alone on the same batch
    (normalisation, autocast and channels-last as in training; plain cross-entropy instead of
    the criterion). Interleaved with the training steps, so both see the same machine."""
    optimizer, device = trainer.optimizer, trainer.device
    labels = torch.cat([targets, targets.new_zeros(inputs.shape[0] - targets.shape[0])])
    t0 = time.perf_counter()
    if ref is not None:  # the reference network on the same normalised images
        net, optimizer = ref
        logits, _ = net(trainer.normalize(inputs) if inputs.dtype == torch.uint8 else inputs)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        return time.perf_counter() - t0
    logits, _ = trainer.forward.encode(trainer.ddp_model, inputs)
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    trainer.precision.backward(loss)
    trainer.precision.step(optimizer)
    sync(device)
    return time.perf_counter() - t0


def augmentation_cpu_seconds(trainer: Trainer, repeats: int = 5) -> float:
    """CPU-seconds (all threads) to augment one step's labelled and unlabelled batches."""
    o = trainer.config.optim
    names = trainer.criterion.unlabelled_views
    from comatch.data.datasets import BatchViewDataset

    labelled = BatchViewDataset(trainer.data.labelled, o.batch_size, trainer.batch_views, ("weak",), 1)
    unlabelled = BatchViewDataset(trainer.data.unlabelled, o.batch_size * o.mu, trainer.batch_views, names, 2)
    cpu = []
    for k in range(repeats):
        t0 = time.process_time()
        labelled[k]
        unlabelled[k]
        cpu.append(time.process_time() - t0)
    return statistics.median(cpu)


def per_image_cpu_seconds(trainer: Trainer) -> float:
    """CPU-seconds the per-image torchvision.transforms.v2 views would spend on one step."""
    from comatch.data.views import build_views

    o = trainer.config.optim
    views = build_views(view_settings(trainer.config, trainer.data.image_size))
    images, _ = gather(trainer.data.unlabelled, torch.arange(o.batch_size * o.mu) % len(trainer.data.unlabelled))
    t0 = time.process_time()
    for image in images[: o.batch_size]:
        views["weak"](image)
    for image in images:
        for name in trainer.criterion.unlabelled_views:
            views[name](image)
    return time.process_time() - t0


def summarize(name: str, phases: dict[str, list[float]], aug_cpu: float, per_image_cpu: float) -> dict:
    step = statistics.median(phases["step"])
    share = {k: statistics.median(phases[k]) / step for k in ("data", "network", "comatch", "optimizer")}
    net = statistics.median(phases["network_only"])
    pair_ratios = [a / b for a, b in zip(phases["step"], phases["network_only"])]
    return {
        "setting": name,
        "steps": len(phases["step"]),
        "step_median_s": step,
        "step_min_s": min(phases["step"]),
        "step_max_s": max(phases["step"]),
        "share": share,
        "network_only_median_s": net,
        "step_over_network_only": step / net,
        "median_paired_ratio": statistics.median(pair_ratios),
        "augmentation_cpu_s_per_step": aug_cpu,
        "per_image_augmentation_cpu_s_per_step": per_image_cpu,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="digits")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--reference", action="store_true",
                        help="time the released network (reference copy, WRN settings only) as 'network alone'")
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(args.setting, args.overrides, Path(tmp))
        phases = time_steps(trainer, args.steps, args.warmup, args.reference)
        aug = augmentation_cpu_seconds(trainer)
        per_image = per_image_cpu_seconds(trainer)
    result = summarize(args.setting, phases, aug, per_image)
    s = result["share"]
    print(f"setting {args.setting} on {trainer.device} ({result['threads']} threads), {result['steps']} steps")
    print(f"  step median {result['step_median_s'] * 1e3:.1f} ms (min {result['step_min_s'] * 1e3:.1f}, "
          f"max {result['step_max_s'] * 1e3:.1f})")
    print(f"  shares: data wait {s['data']:.1%}, network fwd+bwd {s['network']:.1%}, "
          f"CoMatch arithmetic {s['comatch']:.2%}, optimizer+EMA {s['optimizer']:.1%}")
    print(f"  {'reference (released) network' if args.reference else 'network-only'} fwd+bwd+step {result['network_only_median_s'] * 1e3:.1f} ms; "
          f"step / network-only = {result['step_over_network_only']:.3f} "
          f"(median of paired ratios {result['median_paired_ratio']:.3f})")
    print(f"  augmentation CPU-seconds per step: {result['augmentation_cpu_s_per_step']:.4f} batched, "
          f"{result['per_image_augmentation_cpu_s_per_step']:.4f} with per-image torchvision.transforms.v2 views")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
