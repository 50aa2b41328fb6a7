"""Settings that fit the data and the machine, for runs on the user's own folders.

:func:`choose_defaults` is a pure function: from the device, the CPU cores, what the image
files are (size, channels), the dataset sizes and the number of steps, it chooses

* the network, image size and crop padding (1/8 of the side): on a CPU a small network at (near) native resolution, on a GPU
  the paper's networks;
* the labelled batch ``B`` and the unlabelled ratio ``mu``: the paper's 64 and 7 on a GPU; on
  a CPU the largest of a few candidates whose activations (estimated per image, see
  :data:`ACTIVATION_MIB`) fit :data:`CPU_ACTIVATION_BUDGET_MIB`, so a run stays within a laptop;
* BatchNorm momentum, EMA decay and the evaluation/log intervals scaled to the run length;
* loader workers and training threads that never exceed the cores, main process included;
* horizontal flips, unless the labelled images say that mirroring changes the class
  (:mod:`comatch.data.invariance`: digits and letters), and the strong view's turns, unless
  they say that a 30 degree turn does (directions, dial readings).

The user's explicit settings always win: a key in ``explicit`` is never overridden, and its
value is what the other choices build on (an explicit ``model.arch`` sizes the batch).
Every choice comes with a one-line reason, for the run's log and config.yaml.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CPU_MAX_SIZE = 64
"""Largest image side used automatically on a CPU (cost per step grows with the pixel count)."""
CPU_ACTIVATION_BUDGET_MIB = 2500
"""Memory a CPU step's activations may take (the process, workers and data need the rest of 4 GB)."""
ACTIVATION_MIB: dict[str, tuple[float, int]] = {
    "digits_cnn": (1.4, 28),
    "wrn10_1": (1.6, 32),
    "wrn28_2": (6.0, 32),
    "wrn37_2": (8.0, 32),
    "wrn28_8": (60.0, 32),
    "resnet18": (19.6, 64),
    "resnet50": (12.0, 64),
}
"""Forward+backward memory per image (MiB, float32) at a reference side, for the batch choice.

Measured as the growth of peak RSS over a forward and backward pass of 128 images on the CPU
(``wrn10_1`` 1.6 at 32 px, ``digits_cnn`` 1.4 at 28 px, ``resnet18`` 19.6 at 64 px); the
others are estimates from their widths. Memory scales with the pixel count."""
CPU_BATCHES: tuple[tuple[int, int], ...] = ((16, 7), (16, 5), (8, 7), (8, 5), (8, 3), (4, 3), (4, 2), (2, 2))
"""``(B, mu)`` candidates on a CPU, largest step first."""


@dataclass(frozen=True)
class Situation:
    """What the choice depends on.

    Attributes:
        device: "cpu" or "cuda" (the device the run will use).
        cpu_cores: CPU cores this process may use (:func:`comatch.training.runtime.usable_cpus`).
        image_size: side length of the files (median shorter side).
        channels: 1 (grayscale files) or 3.
        stored_as_rgb: the files are grayscale, some stored as colour images.
        num_labelled, num_unlabelled: dataset sizes.
        iterations: training steps of the run.
        num_classes: classes of the labelled data.
        unlabelled_views: views per unlabelled image in a step (CoMatch 3, FixMatch 2, supervised 0).
        mirror: what :func:`comatch.data.invariance.mirror_test` found on the labelled images
            (a ``MirrorEvidence``), or None when it was not run or had too few images.
        turn: what :func:`comatch.data.invariance.turn_test` found (a ``TurnEvidence``), or None.
        colour: what :func:`comatch.data.invariance.colour_test` found (a ``ColourEvidence``), or
            None; grey images are not tested and keep ``views.colour`` as configured.
    """

    device: str
    cpu_cores: int
    image_size: int
    channels: int
    num_labelled: int
    num_unlabelled: int
    iterations: int
    num_classes: int = 10
    unlabelled_views: int = 3
    mirror: Any = None
    stored_as_rgb: bool = False
    turn: Any = None
    colour: Any = None


@dataclass
class Defaults:
    """The chosen settings.

    Attributes:
        overrides: dotted config keys and values, only for keys the user did not set.
        reasons: one line per chosen (or kept) setting.
    """

    overrides: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def as_override_strings(self) -> list[str]:
        """The overrides as ``key=value`` strings, as on the command line."""
        return [f"{key}={json.dumps(value)}" for key, value in self.overrides.items()]


class _Chooser:
    """Collects choices, skipping (and naming) the keys the user set."""

    def __init__(self, explicit: Mapping[str, Any]) -> None:
        self.explicit, self.result = dict(explicit), Defaults()

    def value(self, key: str, chosen: Any) -> Any:
        """The user's value for ``key`` when set, else ``chosen``."""
        return self.explicit.get(key, chosen)

    def set(self, key: str, value: Any, reason: str) -> None:
        """Choose ``value`` for ``key`` unless the user set it."""
        if key in self.explicit:
            self.result.reasons.append(f"{key}={self.explicit[key]}: your setting")
            return
        self.result.overrides[key] = value
        self.result.reasons.append(f"{key}={value}: {reason}")


def choose_network(device: str, image_size: int, num_classes: int) -> tuple[str, int, str]:
    """``(arch, image_size, reason)`` for the device and the files' image size.

    CPU: ``digits_cnn`` up to 12 px, ``wrn10_1`` above, at the native size up to
    :data:`CPU_MAX_SIZE` (scaled down above it). Measured (``benchmarks/network_per_size.py``,
    docs/performance.md): at 16-64 px WRN-10-1's step costs less than the digits CNN's, and
    4.6x less than ResNet-18's at 64 px with 4.4x its batch, so a CPU budget buys 20x the
    images; ResNet-18 is for a pretrained backbone, set explicitly. GPU: the paper's networks:
    WRN-28-2 up to 32 px (WRN-28-8 for more than 10 classes), WRN-37-2 up to 96 px, ResNet-50
    above; native size.
    """
    if device == "cpu":
        size = min(image_size, CPU_MAX_SIZE)
        scaled = f", scaled down from {image_size} px" if size < image_size else ""
        if size <= 12:
            return "digits_cnn", size, f"small CNN for tiny images on a CPU ({size} px{scaled})"
        return "wrn10_1", size, f"small WideResNet on a CPU ({size} px{scaled})"
    if image_size <= 32:
        arch = "wrn28_8" if num_classes > 10 else "wrn28_2"
        return arch, image_size, f"the paper's network for {image_size} px images on a GPU"
    if image_size <= 96:
        return "wrn37_2", image_size, f"the paper's STL-10 network for {image_size} px images on a GPU"
    return "resnet50", image_size, f"the paper's ImageNet network for {image_size} px images on a GPU"


def step_images(batch: int, mu: int, unlabelled_views: int) -> int:
    """Images through the network in one step: ``B * (1 + mu * views)``."""
    return batch * (1 + mu * unlabelled_views)


def activation_mib(arch: str, image_size: int, images: int) -> float:
    """Estimated forward+backward memory (MiB) of ``images`` images of side ``image_size``."""
    per_image, reference = ACTIVATION_MIB.get(arch, ACTIVATION_MIB["resnet18"])
    return per_image * (image_size / reference) ** 2 * images


def choose_batch(s: Situation, arch: str, image_size: int, batch: int | None = None,
                 mu: int | None = None) -> tuple[int, int, str]:
    """``(B, mu, reason)``: the paper's 64 and 7 on a GPU; on a CPU the largest candidate that fits.

    Both are capped by the data: ``B`` by the labelled images, ``mu * B`` by the unlabelled.
    The reason describes the step that runs: with the user's values where given, after the caps.

    Args:
        s: the situation.
        arch, image_size: the network and the side it sees.
        batch, mu: the user's ``B`` and ``mu``, when set: they are kept, and the other is chosen for them.
    """
    own_mu = mu
    if s.device != "cpu":
        batch, mu = batch or 64, mu or 7
    else:
        views = max(s.unlabelled_views, 0)
        if batch is None:
            candidates = list(CPU_BATCHES) if mu is None else [(b, mu) for b in (16, 8, 4, 2, 1)]
        else:
            candidates = [(batch, m) for m in ((7, 5, 3, 2, 1) if mu is None else (mu,))]
        fits = [(b, m) for b, m in candidates
                if activation_mib(arch, image_size, step_images(b, m, views)) <= CPU_ACTIVATION_BUDGET_MIB]
        batch, mu = fits[0] if fits else candidates[-1]
    batch = max(1, min(batch, s.num_labelled))
    if s.num_unlabelled and own_mu is None:
        mu = max(1, min(mu, s.num_unlabelled // batch))
    if s.device != "cpu":
        return batch, mu, "the paper's batch on a GPU"
    images = step_images(batch, mu, max(s.unlabelled_views, 0))
    mib = activation_mib(arch, image_size, images)
    return batch, mu, f"a CPU step of {images} images needs about {mib:.0f} MiB of activations"


def workers_for(device: str, cpu_cores: int) -> int:
    """Workers per loader for a run on ``device`` ("cpu" or "cuda") with ``cpu_cores`` cores.

    The two training loaders each get ``w`` workers, so ``1 + 2w <= cores``. On a CPU the
    network needs the cores more than the batched augmentation does: ``w = min(2, (cores - 1)
    // 4)``, i.e. augmentation runs in the training process up to 4 cores (on 2 cores a
    worker per loader made a default digits step 1.2-1.3x slower in a quiet hour and used twice
    the memory: benchmarks/LOG.md). On a GPU,
    ``w = min(6, (cores - 1) // 2)``.
    """
    cores = max(1, cpu_cores)
    if device == "cpu":
        return min(2, (cores - 1) // 4)
    return min(6, (cores - 1) // 2)


def default_workers(requested: int | None, device: str = "cpu") -> int:
    """Workers per loader: as asked, or (None) :func:`workers_for` this machine's CPU count."""
    if requested is not None:
        return requested
    return workers_for(device, os.cpu_count() or 1)


def choose_workers(device: str, cpu_cores: int) -> tuple[int, int | None, str]:
    """``(workers per loader, training threads or None, reason)``.

    Two training loaders each get ``w`` workers, so ``1 + 2w <= cores``. On a CPU the network
    needs the cores more than augmentation does: ``w = min(2, (cores - 1) // 4)`` and the
    training process gets the remaining ``cores - 2w`` threads. On a GPU, ``w = min(6,
    (cores - 1) // 2)`` and PyTorch's default threads.
    """
    cores = max(1, cpu_cores)
    workers = workers_for(device, cores)
    if device == "cpu":
        threads = max(1, cores - 2 * workers)
        return workers, threads, f"{cores} core(s): {workers} worker(s) per loader, {threads} training thread(s)"
    return workers, None, f"{cores} core(s): {workers} worker(s) per loader beside the training process"


def run_length_settings(iterations: int) -> dict[str, tuple[Any, str]]:
    """BatchNorm momentum, EMA decay and intervals scaled to ``iterations`` steps.

    * BatchNorm running statistics average over about the last 5% of the run:
      momentum ``clip(20 / K, 0.001, 0.1)`` (0.001, the paper's WRN value, from 20,000 steps).
    * The evaluation EMA averages over about the last 10%: decay ``clip(1 - 10 / K, 0.9, 0.999)``.
    * About 10 evaluations and at most 50 steps between log lines.
    """
    k = max(1, iterations)
    bn = round(min(0.1, max(0.001, 20 / k)), 5)
    ema = round(min(0.999, max(0.9, 1 - 10 / k)), 5)
    evaluate = max(1, math.ceil(k / 10))
    log = max(1, min(50, k // 20))
    return {
        "model.bn_momentum": (bn, f"BatchNorm statistics average over about {round(1 / bn)} of {k} steps"),
        "optim.ema_decay": (ema, f"the EMA averages over about {round(1 / (1 - ema))} of {k} steps"),
        "run.eval_every": (evaluate, f"about {math.ceil(k / evaluate)} evaluations in {k} steps"),
        "run.log_every": (log, "a log line every step" if log == 1 else f"a log line every {log} steps"),
    }


def fit_to_length(model: Any, ema: Any, total: int, fitted: Iterable[str]) -> dict[str, tuple[Any, str]]:
    """Set the :func:`run_length_settings` named in ``fitted`` (``run.fit_to_length``) that the
    network (BatchNorm momentum) and its EMA (decay) hold, for a run of ``total`` steps; returns
    every chosen setting of ``fitted`` (the intervals are the caller's) with its reason."""
    from torch.nn.modules.batchnorm import _BatchNorm  # this module stays importable without torch

    chosen = {key: setting for key, setting in run_length_settings(total).items() if key in fitted}
    if "model.bn_momentum" in chosen:
        for layer in model.modules():
            if isinstance(layer, _BatchNorm):
                layer.momentum = chosen["model.bn_momentum"][0]
    if "optim.ema_decay" in chosen:
        ema.decay = chosen["optim.ema_decay"][0]
    return chosen


def choose_defaults(s: Situation, explicit: Mapping[str, Any] | None = None) -> Defaults:
    """Settings for ``s``; keys in ``explicit`` (dotted, with the user's values) are kept.

    Args:
        s: the device, cores, data and run length.
        explicit: the settings the user gave (``{"model.arch": "resnet18", ...}``).

    Returns:
        The :class:`Defaults`: overrides for the keys the user left open, and reasons.
    """
    chooser = _Chooser(explicit or {})
    chooser.set("data.channels", s.channels, "from the files: greys, stored as colour images" if s.stored_as_rgb
                else "from the files")
    arch, size, why = choose_network(s.device, chooser.value("data.image_size", s.image_size), s.num_classes)
    chooser.set("data.image_size", size, "from the files" if size == s.image_size else why)
    chooser.set("model.arch", arch, why)
    arch, size = chooser.value("model.arch", arch), chooser.value("data.image_size", size)
    padding = max(1, round(size / 8))
    chooser.set("views.crop_padding", padding, f"pad-and-crop shifts of 1/8 of the {size} px side, as 4 px on CIFAR's 32")
    batch, mu, why = choose_batch(s, arch, size, chooser.explicit.get("optim.batch_size"),
                                 chooser.explicit.get("optim.mu"))
    chooser.set("optim.batch_size", batch, why)
    chooser.set("optim.mu", mu, why)
    for key, (value, reason) in run_length_settings(chooser.value("optim.iterations", s.iterations)).items():
        chooser.set(key, value, reason)
    tests = [("views.flip", s.mirror, "mirroring", "flips"), ("views.rotate", s.turn, "turns", "rotations")]
    if s.channels == chooser.value("data.channels", s.channels) == 3:  # grey images have no hue to test
        tests.append(("views.colour", s.colour, "colour", "colour changes"))
    for key, evidence, untested, views in tests:
        if evidence is None:
            chooser.set(key, True, f"{untested} not tested (fewer than 2 labelled images in some class): "
                        f"{views}, as for natural images")
        else:
            chooser.set(key, not evidence.changes_class, evidence.describe())
    workers, threads, why = choose_workers(s.device, s.cpu_cores)
    chooser.set("data.num_workers", workers, why)
    if threads is not None:
        chooser.set("run.threads", threads, why)
    return chooser.result
