"""The subcommands of the trust features: ``suggest`` (what to label next) and ``calibrate``
(fit the temperature of a finished run again)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parsers(subparsers: argparse._SubParsersAction, positive: Any) -> None:
    """Add ``suggest`` and ``calibrate``."""
    from comatch.tools import suggest

    suggest.add_parser(subparsers, positive)
    calibrate = subparsers.add_parser(
        "calibrate", help="fit the temperature of a run's probabilities (calibration.json)",
        description="Fit one temperature T on the run's validation part (else its labelled images) so that "
        "softmax(logits / T) is calibrated; writes RUN_DIR/calibration.json, which predict, export, evaluate "
        "and report read. Training does this at its end; run it again after changing the checkpoint.")
    calibrate.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory")
    calibrate.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run the model")


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit and print the temperature of a run."""
    from comatch.tools.calibration import calibrate_run

    print(json.dumps(calibrate_run(args.run_dir, args.device), indent=2))
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    from comatch.tools.suggest import cmd_suggest as run

    return run(args)


COMMANDS = {"suggest": cmd_suggest, "calibrate": cmd_calibrate}
