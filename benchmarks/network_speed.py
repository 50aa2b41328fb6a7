"""This project's CoMatch network against a reference copy of the released one, side by side.

The reference (:class:`ReferenceWideResNet`, in ``benchmarks/released_network.py``) is written
from the published description of the WideResNet used by the released FixMatch / CoMatch
PyTorch code, with the same parameter count; it lives in the benchmarks only, to time against.

Both networks run forward + backward + SGD step (momentum 0.9, Nesterov, weight decay 5e-4) on
the same random batch, alternating one step each, many repeats, in one process so that both see
the same machine; the script reports the medians and the median of the paired ratios
(this project / reference, step by step). Both run under the OpenMP wait setting comatch
chooses when it is imported (10,000 spins then sleep on an idle machine, sleep at once on a busy
one, unless the environment sets ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``: set one of them to
time both under the same setting whatever the load).

    python benchmarks/network_speed.py                      # WRN-10-1 at 352 and WRN-28-2 at 1,408
    python benchmarks/network_speed.py --setting wrn10-1 --repeats 40 --json out.json
    python benchmarks/network_speed.py --profile wrn10-1    # torch.profiler table of this project's step
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from comatch import openmp

openmp.choose()  # before torch loads: how idle OpenMP threads wait, as `comatch train` chooses it
import torch
import torch.nn.functional as F
from torch import nn

from comatch.models import build_model
from released_network import ReferenceWideResNet

# name -> (arch, depth, widen factor, images per step)
SETTINGS: dict[str, tuple[str, int, int, int]] = {
    "wrn10-1": ("wrn10_1", 10, 1, 352),
    "wrn28-2": ("wrn28_2", 28, 2, 1408),
}


def make_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], float]:
    """A closure running one forward + backward + SGD step and returning its seconds.

    The loss uses both outputs (cross-entropy of the logits plus the mean first embedding
    coordinate) so that the backward goes through both heads.

    Args:
        model: Network returning ``(logits, z)``.
        images: Batch ``[N, C, H, W]``.
        labels: Targets ``[N]``.

    Returns:
        The step function.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()

    def step() -> float:
        t0 = time.perf_counter()
        logits, z = model(images)
        loss = F.cross_entropy(logits, labels) + z[:, 0].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - t0

    return step


def build_pair(setting: str) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """This project's network, the reference, and one fixed batch for a setting.

    Args:
        setting: A key of :data:`SETTINGS`.

    Returns:
        ``(ours, reference, images [N, 3, 32, 32], labels [N])``.

    Raises:
        AssertionError: If the two parameter counts differ.
    """
    arch, depth, width, n = SETTINGS[setting]
    torch.manual_seed(0)
    ours = build_model(arch, num_classes=10, in_channels=3, proj_dim=64)
    reference = ReferenceWideResNet(depth, width, num_classes=10, in_channels=3, low_dim=64)
    count = [sum(p.numel() for p in m.parameters()) for m in (ours, reference)]
    assert count[0] == count[1], f"parameter counts differ: {count}"
    images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(2))
    return ours, reference, images, labels


def compare(setting: str, repeats: int, warmup: int) -> dict:
    """Time both networks alternately (ours first on even repeats, the reference on odd ones).

    Args:
        setting: A key of :data:`SETTINGS`.
        repeats: Timed steps per network.
        warmup: Untimed steps per network first.

    Returns:
        Medians (s), min/max, the median of the paired ratios ours / reference, parameter count.
    """
    ours, reference, images, labels = build_pair(setting)
    step_ours, step_ref = make_step(ours, images, labels), make_step(reference, images, labels)
    for _ in range(warmup):
        step_ours(), step_ref()
    t_ours, t_ref = [], []
    for i in range(repeats):
        if i % 2 == 0:
            t_ours.append(step_ours())
            t_ref.append(step_ref())
        else:
            t_ref.append(step_ref())
            t_ours.append(step_ours())
    ratios = [a / b for a, b in zip(t_ours, t_ref)]
    return {
        "setting": setting,
        "images": images.shape[0],
        "parameters": sum(p.numel() for p in ours.parameters()),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "ours_median_s": statistics.median(t_ours),
        "reference_median_s": statistics.median(t_ref),
        "ours_min_max_s": [min(t_ours), max(t_ours)],
        "reference_min_max_s": [min(t_ref), max(t_ref)],
        "median_paired_ratio": statistics.median(ratios),
        "paired_ratio_quartiles": statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios,
    }


def profile(setting: str, steps: int, reference: bool = False) -> str:
    """A torch.profiler table (self CPU time) of a few training steps of one network.

    Args:
        setting: A key of :data:`SETTINGS`.
        steps: Profiled steps (after two untimed ones).
        reference: Profile the reference instead of this project's network.

    Returns:
        The table as text.
    """
    ours, ref, images, labels = build_pair(setting)
    step = make_step(ref if reference else ours, images, labels)
    step(), step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(steps):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=[*SETTINGS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=0, help="timed steps per network (0: 40 for WRN-10-1, 8 for WRN-28-2)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--profile", choices=list(SETTINGS), help="print a profiler table instead of timing")
    parser.add_argument("--profile-reference", action="store_true", help="profile the reference network")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.profile:
        print(profile(args.profile, 3, args.profile_reference))
        return
    results = []
    for setting in (SETTINGS if args.setting == "all" else [args.setting]):
        repeats = args.repeats or (40 if setting == "wrn10-1" else 8)
        r = compare(setting, repeats, args.warmup)
        results.append(r)
        q = r["paired_ratio_quartiles"]
        print(f"{setting} ({r['images']} images, {r['parameters']} parameters, {r['threads']} threads, "
              f"{r['repeats']} alternating repeats): this project {r['ours_median_s'] * 1e3:.1f} ms, "
              f"reference {r['reference_median_s'] * 1e3:.1f} ms; median paired ratio "
              f"{r['median_paired_ratio']:.3f} (quartiles {q[0]:.3f}-{q[-1]:.3f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
