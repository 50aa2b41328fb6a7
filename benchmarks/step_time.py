"""Where a training step's time goes, for a named setting.

Runs the comatch Trainer's own training steps (``Trainer.make_batch`` and
``Trainer.training_step``) with the trainer's phase timer on, and splits each into: waiting
for data, network forward+backward, the method's own arithmetic (for CoMatch: alignment,
smoothing, graphs, losses), and optimizer + EMA + the method's state update. It also times the network alone
(forward + backward + optimizer step on the same batch, plain cross-entropy) interleaved
with the training steps,
and the CPU-seconds that augmenting one step's batch costs. Where the loaders run in the
training process they augment several batches at once (8 for the digits preset), so one step
in eight pays for the augmentation of eight: the figures are then taken over blocks of that many
consecutive steps (each block's mean; medians, minimum and maximum over the blocks).

    python benchmarks/step_time.py --setting wrn28-2-cifar --steps 10
    python benchmarks/step_time.py --setting digits --steps 200 --json out.json

Settings: digits (the default preset), folder-digits (what a folder run of 28 px grayscale images
chooses on 2 cores), folder-digits-mu3 (the same with ``optim.mu=3``), wrn10-1-digits,
wrn28-2-cifar, resnet50-imagenet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from comatch import numerics, openmp

numerics.pin("portable" if "run.numerics=portable" in sys.argv else "fast")  # before torch loads
openmp.choose()  # before torch loads: how idle OpenMP threads wait, as `comatch train` chooses it
import torch
import torch.nn.functional as F

from comatch import config as cfg
from comatch.data.datasets import TensorImages
from comatch.data.sources import RunData
from comatch.data.datasets import gather
from comatch.data.preprocessing import view_settings
from comatch.training.encoder import no_timer
from comatch.training.trainer import Trainer

SETTINGS: dict[str, list[str]] = {
    "digits": [],
    "wrn10-1-digits": ["model.arch=wrn10_1", "data.image_size=32", "model.in_channels=3",
                       "optim.batch_size=16", "optim.mu=7", "comatch.bank_size=2560",
                       "data.num_workers=2", "views.crop_padding=4", "views.cutout=0.5"],
    "folder-digits": ["model.arch=wrn10_1", "data.image_size=28", "data.channels=1",
                      "optim.batch_size=16", "optim.mu=7", "data.num_workers=0", "run.threads=2",
                      "views.crop_padding=4", "views.flip=false", "views.fill=127"],
    "wrn28-2-cifar": ["model.arch=wrn28_2", "data.image_size=32", "data.channels=3",
                      "optim.batch_size=64", "optim.mu=7", "comatch.bank_size=2560",
                      "data.num_workers=1", "views.crop_padding=4", "views.cutout=0.5",
                      "views.fill=127", "views.crop_scale_min=0.2"],
    "resnet50-imagenet": ["model.arch=resnet50", "model.proj_dim=128", "data.image_size=224",
                          "data.channels=3", "optim.batch_size=2", "optim.mu=2",
                          "comatch.bank_size=64", "comatch.temperature=0.1",
                          "data.num_workers=1", "views.crop_padding=28", "views.cutout=0.5"],
}
SETTINGS["folder-digits-mu3"] = [o.replace("optim.mu=7", "optim.mu=3") for o in SETTINGS["folder-digits"]]
PRESETS = {"folder-digits": "folder", "folder-digits-mu3": "folder"}
"""Settings measured on another preset than the default (digits)."""
RANDOM_DATA = {"folder-digits": (1, 28, 10), "folder-digits-mu3": (1, 28, 10), "wrn28-2-cifar": (3, 32, 10),
               "resnet50-imagenet": (3, 224, 10)}


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
    config = cfg.build_config(PRESETS.get(setting), overrides=[*SETTINGS[setting], "run.tensorboard=false", *extra])
    data = random_data(*RANDOM_DATA[setting]) if setting in RANDOM_DATA else None
    return Trainer(config, out, data=data)


def reference_network(trainer: Trainer) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The released WRN (the reference copy in benchmarks/released_network.py) of the trainer's size,
    with the same SGD settings, to time its forward+backward+SGD step on the same batches."""
    from released_network import ReferenceWideResNet

    arch = trainer.config.model.arch
    depth, width = {"wrn10_1": (10, 1), "wrn28_2": (28, 2)}[arch]
    net = ReferenceWideResNet(depth, width, trainer.data.num_classes, trainer.in_channels,
                              trainer.config.model.proj_dim).to(trainer.device).train()
    o = trainer.config.optim
    opt = torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                          weight_decay=o.weight_decay)
    return net, opt


class PhaseTimer:
    """The trainer's phase timer: synchronises the device around each phase and adds its
    duration to the current step's record (nested phases are timed separately)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.current = device, defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str):
        sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.current[phase] += time.perf_counter() - t0

    def take(self) -> dict[str, float]:
        record, self.current = dict(self.current), defaultdict(float)
        return record


def time_steps(trainer: Trainer, steps: int, warmup: int,
               reference: bool = False) -> tuple[dict[str, list[float]], int, float]:
    """Run ``warmup + steps`` of the trainer's own training steps with its phase timer on;
    phase times (s) per step, or per block of steps (their mean) where the loaders augment
    several batches at once, the block length, and the seconds the warm-up steps took (with
    ``run.compile=true``, the compilation). With ``reference`` the
    network-alone time is the released network's (reference copy) forward+backward+SGD step
    on the same batch."""
    labelled, unlabelled = trainer.loaders()
    keys = ("step", "data", "network", "method", "optimizer", "network_only")
    phases: dict[str, list[float]] = {k: [] for k in keys}
    timer = trainer.timer = PhaseTimer(trainer.device)
    ref = reference_network(trainer) if reference else None
    trainer.model.train()
    started = time.perf_counter()
    warmup_s = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            warmup_s = time.perf_counter() - started
        timer.take()  # drop what the network-only timing recorded
        t0 = time.perf_counter()
        with timer("data"):
            batch = trainer.make_batch(next(labelled), next(unlabelled) if unlabelled is not None else None)
        trainer.training_step(batch)
        trainer.step += 1
        sync(trainer.device)
        step = time.perf_counter() - t0
        split = timer.take()
        inputs = torch.cat([*batch.labelled.values(), *batch.unlabelled.values()])
        network_only = time_network_only(trainer, inputs, batch.targets, ref)
        if i >= warmup:
            for key, value in (("step", step), ("data", split["data"]),
                               ("network", split["network"] + split["backward"]),
                               ("method", split["forward"] - split["network"]),
                               ("optimizer", split["update"]), ("network_only", network_only)):
                phases[key].append(value)
    trainer.timer = no_timer
    # a loader without workers augments several batches at once (one step in `group` pays for
    # them): the phases are then taken as means over blocks of `group` consecutive steps
    group = (unlabelled if unlabelled is not None else labelled)._dataset.group  # the loader's BatchViewDataset
    blocks = len(phases["step"]) // group
    means = {k: [statistics.fmean(v[b * group:(b + 1) * group]) for b in range(blocks)] for k, v in phases.items()}
    return means, group, warmup_s


def time_network_only(trainer: Trainer, inputs: torch.Tensor, targets: torch.Tensor,
                      ref: tuple[torch.nn.Module, torch.optim.Optimizer] | None = None) -> float:
    """One forward + backward + optimizer step of the network alone on the same batch
    (normalisation, autocast and channels-last as in training; plain cross-entropy instead of
    the method's loss). Interleaved with the training steps, so both see the same machine."""
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
    logits, _ = trainer.encode(inputs)
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    trainer.precision.backward(loss)
    trainer.precision.step(optimizer)
    sync(device)
    return time.perf_counter() - t0


def augmentation_cpu_seconds(trainer: Trainer, group: int, repeats: int = 5) -> float:
    """CPU-seconds (all threads) to augment one step's labelled and unlabelled batches, with
    the loaders augmenting ``group`` batches at once as in training."""
    o = trainer.config.optim
    names = trainer.method.unlabelled_views
    from comatch.data.datasets import BatchViewDataset

    labelled = BatchViewDataset(trainer.data.labelled, o.batch_size, trainer.batches.views, trainer.method.labelled_views,
                                1, group=group)
    unlabelled = BatchViewDataset(trainer.data.unlabelled, o.batch_size * o.mu, trainer.batches.views, names, 2, group=group)
    cpu = []
    for k in range(repeats):
        t0 = time.process_time()
        for b in range(k * group, (k + 1) * group):
            labelled[b]
            unlabelled[b]
        cpu.append((time.process_time() - t0) / group)
    return statistics.median(cpu)


def per_image_cpu_seconds(trainer: Trainer) -> float:
    """CPU-seconds the per-image torchvision.transforms.v2 views would spend on one step (the
    per-image views are the tests' oracle, tests/oracle_views.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from oracle_views import build_views

    o = trainer.config.optim
    views = build_views(view_settings(trainer.config, trainer.data.image_size))
    images, _ = gather(trainer.data.unlabelled, torch.arange(o.batch_size * o.mu) % len(trainer.data.unlabelled))
    t0 = time.process_time()
    for image in images[: o.batch_size]:
        views["weak"](image)
    for image in images:
        for kind in trainer.method.unlabelled_views.values():
            views[kind](image)
    return time.process_time() - t0


def summarize(name: str, phases: dict[str, list[float]], group: int, aug_cpu: float, per_image_cpu: float) -> dict:
    step = statistics.median(phases["step"])
    share = {k: statistics.median(phases[k]) / step for k in ("data", "network", "method", "optimizer")}
    net = statistics.median(phases["network_only"])
    pair_ratios = [a / b for a, b in zip(phases["step"], phases["network_only"])]
    return {
        "setting": name,
        "steps": len(phases["step"]) * group,
        "block_steps": group,
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
        "cuda_peak_memory_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
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
        phases, group, warmup_s = time_steps(trainer, args.steps, args.warmup, args.reference)
        aug = augmentation_cpu_seconds(trainer, group)
        per_image = per_image_cpu_seconds(trainer)
    result = summarize(args.setting, phases, group, aug, per_image)
    result["warmup_s"] = warmup_s
    result["precision"] = trainer.precision.mode
    s = result["share"]
    blocks = f" (in blocks of {result['block_steps']}: the loaders augment that many batches at once)" if result["block_steps"] > 1 else ""
    print(f"setting {args.setting} on {trainer.device} ({result['threads']} threads), {result['steps']} steps{blocks}")
    print(f"  step median {result['step_median_s'] * 1e3:.1f} ms (min {result['step_min_s'] * 1e3:.1f}, "
          f"max {result['step_max_s'] * 1e3:.1f})")
    print(f"  shares: data wait {s['data']:.1%}, network fwd+bwd {s['network']:.1%}, "
          f"method arithmetic {s['method']:.2%}, optimizer+EMA+state update {s['optimizer']:.1%}")
    print(f"  {'reference (released) network' if args.reference else 'network-only'} fwd+bwd+step {result['network_only_median_s'] * 1e3:.1f} ms; "
          f"step / network-only = {result['step_over_network_only']:.3f} "
          f"(median of paired ratios {result['median_paired_ratio']:.3f})")
    print(f"  augmentation CPU-seconds per step: {result['augmentation_cpu_s_per_step']:.4f} batched, "
          f"{result['per_image_augmentation_cpu_s_per_step']:.4f} with per-image torchvision.transforms.v2 views")
    if result["cuda_peak_memory_bytes"] is not None:
        print(f"  GPU memory: peak {result['cuda_peak_memory_bytes'] / 2**30:.2f} GiB allocated")
    if args.json:
        from provenance import provenance  # benchmarks/provenance.py, beside this script

        result["provenance"] = provenance(threads=torch.get_num_threads())
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
