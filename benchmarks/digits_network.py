"""The digits CNN's speed: its max-pooling as it is against as it was, and NCHW against
channels-last, each interleaved in one process.

Until 2 December the pooling (``MaxPool2x2`` in ``comatch/models/small.py``) ran the
channels-last kernel and let autograd hand the gradient back channels-last, where it met the
NCHW activation in the LeakyReLU backward before it; PyTorch's kernel takes a slow strided
path for mixed layouts there. It now scatters the gradient back in the NCHW layout. This
script keeps the earlier module (:class:`EarlierPool`) to time against, and measures, in one
process so that both see the same machine:

- the network alone: forward + backward of two copies of the digits CNN on one step's 352
  images, alternating step by step;
- the whole default training step: two trainers of the default run (one with the earlier
  pooling swapped in), alternating step by step (which one goes first alternates too);
- LeakyReLU's backward kernel on the pooled layer's activations with an NCHW and with a
  channels-last gradient (the slow path the earlier pooling sent it down);
- the network alone in the channels-last memory format (``run.channels_last=true``, not the
  default for the digits CNN: it changes the float rounding) against the default NCHW one.

It reports the medians and the median of the paired ratios (first / second), and for the
pooling whether both copies hold the same gradients and weights at the end (they must: the
change moves no value).

    python benchmarks/digits_network.py --network-steps 300 --training-steps 400
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from comatch import openmp

openmp.choose()  # before torch loads: how idle OpenMP threads wait, as `comatch train` chooses it
import torch
import torch.nn.functional as F
from torch import nn

from comatch import config as cfg
from comatch.models.small import DigitsNet
from comatch.training.trainer import Trainer


class EarlierPool(nn.Module):
    """The pooling as it was: channels-last kernel, gradient handed back channels-last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or x.is_contiguous(memory_format=torch.channels_last):
            return F.max_pool2d(x, 2)
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous()


def alternate(first: Callable[[], float], second: Callable[[], float], steps: int, warmup: int) -> dict[str, float]:
    """Run both step functions alternately (which goes first alternates); medians in ms and
    the median of the paired ratios first / second."""
    times: tuple[list[float], list[float]] = ([], [])
    ratios = []
    for i in range(warmup + steps):
        if i % 2:
            b, a = second(), first()
        else:
            a, b = first(), second()
        if i >= warmup:
            times[0].append(a)
            times[1].append(b)
            ratios.append(a / b)
    return {"first_ms": statistics.median(times[0]) * 1e3, "second_ms": statistics.median(times[1]) * 1e3,
            "median_paired_ratio": statistics.median(ratios)}


def timed_network(net: nn.Module, images: torch.Tensor) -> Callable[[], float]:
    """A closure running forward + backward of ``net`` on ``images``, returning its seconds."""
    def step() -> float:
        t0 = time.perf_counter()
        net(images).square().sum().backward()
        return time.perf_counter() - t0
    return step


def network_alone(steps: int, warmup: int) -> dict[str, float]:
    """Forward + backward of the digits CNN on 352 images, both poolings."""
    torch.manual_seed(0)
    now = DigitsNet()
    earlier = copy.deepcopy(now)
    earlier.body[2] = EarlierPool()
    images = torch.randn(352, 1, 8, 8)
    result = alternate(timed_network(now, images), timed_network(earlier, images), steps, warmup)
    result["same_gradients"] = all(torch.equal(a.grad, b.grad) for a, b in zip(now.parameters(), earlier.parameters()))
    return result


def leaky_relu_backward(steps: int, warmup: int) -> dict[str, float]:
    """LeakyReLU's backward on 352 x 32 x 8 x 8 NCHW activations: NCHW against channels-last gradient."""
    torch.manual_seed(0)
    activation, grad = torch.randn(352, 32, 8, 8), torch.randn(352, 32, 8, 8)
    grad_last = grad.contiguous(memory_format=torch.channels_last)

    def timed(g: torch.Tensor) -> Callable[[], float]:
        def step() -> float:
            t0 = time.perf_counter()
            torch.ops.aten.leaky_relu_backward(g, activation, 0.1, True)
            return time.perf_counter() - t0
        return step

    return alternate(timed(grad), timed(grad_last), steps, warmup)


def channels_last(steps: int, warmup: int) -> dict[str, float]:
    """Forward + backward of the digits CNN on 352 images: channels-last against NCHW."""
    torch.manual_seed(0)
    nchw = DigitsNet()
    last = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    images = torch.randn(352, 1, 8, 8)
    return alternate(timed_network(last, images.contiguous(memory_format=torch.channels_last)),
                     timed_network(nchw, images), steps, warmup)


def default_trainer(adjust: Callable[[Trainer], None] | None = None) -> Trainer:
    """A trainer of the default run (built quietly), changed by ``adjust`` if given."""
    config = cfg.build_config(overrides=["run.tensorboard=false"])
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(config, Path(tempfile.mkdtemp()) / "run")
    if adjust is not None:
        adjust(trainer)
    return trainer


def training_stepper(trainer: Trainer) -> Callable[[], float]:
    """A closure running the trainer's next training step (data, method, backward, SGD, EMA)
    and returning its seconds."""
    labelled, unlabelled = trainer.loaders()
    trainer.model.train()

    def step() -> float:
        t0 = time.perf_counter()
        trainer.training_step(trainer.make_batch(next(labelled), next(unlabelled)))
        trainer.step += 1
        return time.perf_counter() - t0
    return step


def same_weights(a: Trainer, b: Trainer) -> bool:
    """Whether two trainers' networks hold the same parameters, bit for bit."""
    theirs = dict(b.model.named_parameters())
    return all(torch.equal(p, theirs[name]) for name, p in a.model.named_parameters())


def training_steps(steps: int, warmup: int) -> dict[str, float]:
    """The default run's training step (data, CoMatch, backward, SGD, EMA), both poolings."""
    def swap_pool(trainer: Trainer) -> None:
        trainer.model.encoder.body[2] = EarlierPool()

    now, earlier = default_trainer(), default_trainer(swap_pool)
    result = alternate(training_stepper(now), training_stepper(earlier), steps, warmup)
    result["same_weights"] = same_weights(now, earlier)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network-steps", type=int, default=300)
    parser.add_argument("--training-steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads; {openmp.wait}")
    for name, run, steps, labels in (
            ("pooling now / earlier, network alone (fwd+bwd, 352 images)", network_alone, args.network_steps, ("now", "earlier")),
            ("pooling now / earlier, default training step", training_steps, args.training_steps, ("now", "earlier")),
            ("LeakyReLU backward, NCHW / channels-last gradient", leaky_relu_backward, args.network_steps, ("NCHW", "channels-last")),
            ("channels-last / NCHW, network alone (fwd+bwd, 352 images)", channels_last, args.network_steps, ("channels-last", "NCHW"))):
        r = run(steps, args.warmup)
        same = "".join(f"; {k.replace('_', ' ')}: {v}" for k, v in r.items() if k.startswith("same"))
        print(f"{name}, {steps} pairs: {labels[0]} {r['first_ms']:.3f} ms, {labels[1]} {r['second_ms']:.3f} ms, "
              f"median paired ratio {r['median_paired_ratio']:.3f}{same}", flush=True)


if __name__ == "__main__":
    main()
