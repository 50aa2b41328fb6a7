"""The argument groups several subcommands share, declared once as argparse parent parsers.

``cli`` (``train``), ``tools.commands``, ``tools.trust.commands`` and ``tools.baseline`` build
their subcommands from these, so ``--device`` or ``-o/--out`` reads and behaves the same in every
command. Nothing heavy is imported here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def device_options(default: str | None, what: str = "where to run the model") -> argparse.ArgumentParser:
    """``--device`` (a parent parser); ``default`` None leaves the choice to the run's config."""
    parent = argparse.ArgumentParser(add_help=False)
    shown = "the config's run.device" if default is None else default
    parent.add_argument("--device", choices=DEVICES, default=default, help=f"{what} (default: {shown})")
    return parent


def batch_options() -> argparse.ArgumentParser:
    """``--batch-size`` of the commands that run a model over images (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--batch-size", type=positive, default=256, help="images per forward pass (default 256)")
    return parent


def model_options() -> argparse.ArgumentParser:
    """The checkpoint to use and which of its weights (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("checkpoint", type=Path, metavar="CHECKPOINT",
                        help="a checkpoint .pt file, or a run directory (its newest checkpoint)")
    weights = parent.add_mutually_exclusive_group()
    weights.add_argument("--ema", dest="weights", action="store_const", const="ema",
                         help="use the EMA weights, the ones the trainer evaluates (default)")
    weights.add_argument("--raw", dest="weights", action="store_const", const="raw",
                         help="use the raw (non-averaged) weights")
    parent.set_defaults(weights="ema")
    return parent


def out_options(metavar: str, meaning: str) -> argparse.ArgumentParser:
    """``-o/--out``: where the command writes its result; ``meaning`` says what it is for this command."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-o", "--out", type=Path, metavar=metavar, help=meaning)
    return parent


def spelled_both_ways(flag: str) -> list[str]:
    """``flag`` and its other spelling: ``--labeled`` (torchvision's US spelling) and ``--labelled``
    (the British one of comatch's files and fields, such as labelled.json and num_labelled) both work.
    """
    other = flag.replace("labelled", "labeled") if "labelled" in flag else flag.replace("labeled", "labelled")
    return [flag, other]
