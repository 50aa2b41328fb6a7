"""The files the training loop writes into a run directory besides checkpoints and metrics:
``config.yaml``, ``labelled.json``, ``data.json`` and ``summary.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from comatch import config as cfg
from comatch import numerics
from comatch.data import RunData
from comatch.training.runtime import atomic_write_text


def write_data_json(out_dir: Path, data: RunData) -> None:
    """``data.json``: what the run trains on, and the images it skipped so far."""
    atomic_write_text(out_dir / "data.json", json.dumps(data.describe(), indent=2) + "\n")


def write_run_files(out_dir: Path, config: cfg.Config, data: RunData) -> None:
    """``config.yaml``, ``labelled.json`` and ``data.json`` of a starting (or resumed) run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", cfg.to_yaml(config))
    atomic_write_text(out_dir / "labelled.json", json.dumps(data.labelled_ids))
    write_data_json(out_dir, data)


def summary(config: cfg.Config, data: RunData, records: list[dict[str, Any]], *, steps: int, stopped: bool,
            skipped_steps: int, wall_seconds: float, device: torch.device) -> dict[str, Any]:
    """The summary of a run that ended or was stopped, from its metric records."""
    evals = [r for r in records if r["kind"] == "eval"]
    trains = [r for r in records if r["kind"] == "train"]
    last = evals[-1] if evals else {}
    return {
        "method": config.method,
        "preset": config.preset,
        "seed": config.seed,
        "iterations": steps,
        "stopped": stopped,
        "num_labelled": len(data.labelled_ids),
        "test_accuracy": last.get("test_acc"),
        "test_accuracy_ema": last.get("test_acc_ema"),
        "best_test_accuracy": max((r["test_acc_ema"] for r in evals), default=None),
        "val_accuracy": last.get("val_acc"),
        "val_accuracy_ema": last.get("val_acc_ema"),
        "pseudo_label_accuracy": trains[-1].get("pseudo_label_acc") if trains else None,
        "skipped_steps": skipped_steps,
        "skipped_images": len(data.all_skipped()),  # up front and mid-run
        "wall_seconds": wall_seconds,
        **numerics.describe(config.run.numerics),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }


def write_summary(out_dir: Path, summary: dict[str, Any], data: RunData | None = None) -> None:
    """``summary.json``, with ``data.json`` brought up to date (images skipped mid-run) when
    ``data`` is given."""
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if data is not None:
        write_data_json(out_dir, data)
