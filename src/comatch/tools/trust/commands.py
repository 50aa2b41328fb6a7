"""The subcommands of the trust features: ``suggest`` (what to label next), ``label`` (label it
in a local web page) and ``calibrate`` (fit the temperature of a finished run again)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from comatch.tools import arguments as shared


def add_suggest_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``suggest`` subcommand."""
    p = subparsers.add_parser(
        "suggest", help="rank unlabelled images to label next (uncertain and diverse)",
        parents=[shared.out_options("CSV", "the CSV of suggestions to write (default: stdout)"),
                 shared.device_options("auto"), shared.batch_options()],
        description="Rank the run's unlabelled images by the uncertainty of their smoothed pseudo-label, picked "
        "by k-centre greedy on the embeddings so that the K suggestions cover different regions (see docs/trust.md). "
        "Labels come back by moving the files into their class folders under --labeled (your own images) or "
        "with --labeled-list (benchmarks: see --next-list).")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (config.yaml; a checkpoint unless --before-training)")
    p.add_argument("--n", type=shared.positive, required=True, metavar="K", help="images to suggest")
    p.add_argument("--links", type=Path, metavar="DIR", help="also write DIR/PREDICTED_CLASS/ links to the suggested files")
    p.add_argument("--next-list", type=Path, metavar="FILE",
                   help="benchmarks: write the run's labelled.json plus the suggested indices, for --labeled-list")
    p.add_argument("--before-training", action="store_true",
                   help="rank with the run's initial network (random or model.init): the first round, before training")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``suggest``, ``label`` and ``calibrate`` (nothing heavy is imported until a command runs)."""
    add_suggest_parser(subparsers)
    add_label_parser(subparsers)
    calibrate = subparsers.add_parser(
        "calibrate", help="fit the temperature of a run's probabilities (calibration.json)",
        parents=[shared.device_options("auto")],
        description="Fit one temperature T on the run's validation part so that softmax(logits / T) is "
        "calibrated (without a validation part none is applied: the labelled images were trained on); writes "
        "RUN_DIR/calibration.json, which predict, export, evaluate and report read from there (so it has no "
        "--out). Training does this at its end; run it again after changing the checkpoint.")
    calibrate.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory")


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit and print the temperature of a run."""
    from comatch.tools.trust.run_calibration import calibrate_run

    print(json.dumps(calibrate_run(args.run_dir, args.device), indent=2))
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    from comatch.tools.trust.suggest import cmd_suggest as run

    return run(args)


def cmd_label(args: argparse.Namespace) -> int:
    from comatch.tools.trust.label import cmd_label as run

    return run(args)


def add_label_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``label`` subcommand."""
    positive = shared.positive
    p = subparsers.add_parser(
        "label", help="label the suggested images in a local web page (decisions in RUN/labels.csv)",
        parents=[shared.device_options("auto")],
        description="Serve a page on 127.0.0.1 with the run's suggested images grouped by predicted class, and a "
        "tab of the most suspicious ones. Keys: 1-9 a class, Enter accept the prediction, x not one of my classes, "
        "s skip, u undo. Every decision is appended to RUN/labels.csv at once; train again with "
        "`comatch train ... --extra-labels RUN/labels.csv`, or move the files with --apply. See docs/trust.md.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run of your own folders (--labeled/--unlabeled)")
    p.add_argument("--n", type=positive, metavar="K",
                   help="rank K images on the spot (default: RUN/suggestions.csv, else 50)")
    p.add_argument("--suggestions", type=Path, metavar="CSV", help="a ranking written by `comatch suggest --out CSV`")
    p.add_argument("--port", type=int, default=8765, help="the port (default 8765; 0: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    p.add_argument("--allow-remote", action="store_true", help="allow a --host other machines can reach")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--apply", action="store_true", help="move the labelled files into LABELED/CLASS/ and exit")
    p.add_argument("--dry-run", action="store_true", help="with --apply: list the moves, move nothing")
    p.add_argument("--to-label-studio", type=Path, metavar="JSON",
                   help="write the suggestions as Label Studio tasks with predictions, and exit")
    p.add_argument("--from-label-studio", type=Path, metavar="JSON",
                   help="append the choices of a Label Studio JSON export to RUN/labels.csv, and exit")


COMMANDS = {"suggest": cmd_suggest, "label": cmd_label, "calibrate": cmd_calibrate}
