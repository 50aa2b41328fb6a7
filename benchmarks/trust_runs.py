"""Shared pieces of the trust benchmarks (active_labelling.py, open_set.py, long_tail.py):
short digits runs in worker processes, with data built in memory, and seed statistics.

Every run is in ``run.numerics=portable`` (the same bits on any x86-64 CPU): importing this module
pins the kernels, so it must be imported before torch (the worker processes inherit the setting).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from comatch import numerics

numerics.pin("portable")  # before torch loads, here and in the spawned workers
import torch  # noqa: E402
from torch.utils.data import Subset  # noqa: E402

COMMON = ["run.numerics=portable", "run.threads=1", "run.report=false", "run.tensorboard=false", "data.num_workers=0", "run.log_every=50"]


def train(out: Path, seed: int, steps: int, overrides: Sequence[str] = (), data: Any = None) -> dict[str, Any]:
    """One digits-preset run of ``steps`` steps in this process, as ``comatch train`` runs it
    (likely outliers left out when asked, calibration and guardrails at the end); returns its summary.

    ``data``: a :class:`comatch.data.RunData` built by the benchmark (None: the preset's).
    """
    from comatch import config as cfg
    from comatch.lifecycle import train_run

    config = cfg.build_config(preset="digits", seed=seed, overrides=[
        f"optim.iterations={steps}", f"run.eval_every={steps}", *COMMON, *overrides])
    return train_run(config, Path(out), data=data).summary


def parallel(jobs: Sequence[tuple[Callable[..., Any], tuple]], workers: int) -> list[Any]:
    """Run ``(function, args)`` jobs in ``workers`` processes (spawned), results in order."""
    if workers <= 1:
        return [fn(*args) for fn, args in jobs]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(fn, *args) for fn, args in jobs]
        return [f.result() for f in futures]


def digits_pool(val_per_class: int = 20) -> Any:
    """The digits preset's fixed split."""
    from comatch.data.digits import load_digits_split

    return load_digits_split(val_per_class)


def run_data(images: torch.Tensor, labels: torch.Tensor, labelled: np.ndarray, classes: int,
             val: tuple[torch.Tensor, torch.Tensor] | None, test: tuple[torch.Tensor, torch.Tensor]) -> Any:
    """A RunData over an in-memory pool (``labels`` -1 where the truth is hidden)."""
    from comatch.data import RunData
    from comatch.data.datasets import TensorImages
    from comatch.data.statistics import channel_stats

    pool = TensorImages(images, labels)
    mean, std = channel_stats(images)
    return RunData(
        num_classes=classes, class_names=[str(c) for c in range(classes)],
        labelled=Subset(pool, labelled.tolist()), unlabelled=pool,
        val=TensorImages(*val) if val is not None else None, test=TensorImages(*test),
        labelled_ids=labelled.tolist(), mean=tuple(mean), std=tuple(std), image_size=8, channels=1,
    )


def mean_std(values: Sequence[float]) -> str:
    """``mean +- sample std`` in percent."""
    values = list(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def per_seed(rows: Sequence[dict[str, Any]], key: str = "accuracy") -> str:
    """The values of ``key`` per seed, in percent."""
    return ", ".join(f"{100 * r[key]:.1f}" for r in rows)


def save(results: Any, path: Path) -> None:
    """``results`` with the provenance of the runs (command, commit, torch, threads, numerics, CPU)."""
    from provenance import provenance  # beside this file

    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**results, "provenance": provenance(threads_per_run=1, numerics="portable")}
    path.write_text(json.dumps(record, indent=1) + "\n")
