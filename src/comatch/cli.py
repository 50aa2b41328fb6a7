"""The ``comatch`` command line.

The module imports only the standard library and comatch's light bottom modules, so that
:func:`main` installs the stop handler (a signal while Python is still importing is a request to
stop, not a traceback), pins the CPU kernels (``run.numerics``) and chooses how OpenMP threads
wait before torch or NumPy load.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from comatch import numerics, openmp
from comatch.errors import UserError
from comatch.signals import StopSignals
from comatch.tools import arguments as shared
from comatch.training import pace
from comatch.version import package_version

if TYPE_CHECKING:
    from comatch import config as cfg

CPU_DEFAULT_BUDGET = "15m"
"""Wall-clock budget of a CPU run of the user's folders when no step count or budget is given."""
CPU_PROVISIONAL_STEPS = 3000
"""Steps assumed for choosing settings before the budget fixes the real number."""
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints")
# What a new run writes before its first checkpoint (removed when a signal stops it there).
UNFINISHED_START = ("config.yaml", "labelled.json", "data.json", "metrics.jsonl", "skipped_images.log", "tensorboard",
                    "checkpoints", "outliers.json")
CHECKPOINTS = ("checkpoints/last.pt", "checkpoints/previous.pt")
STOPPED = -1  # _train's status for a run a signal stopped (checkpointed, resumable)
STOPPED_STATUS = {"SIGINT": 130, "SIGTERM": 143}  # the exit status of a stopped run: 128 + the signal's number
# Errors writing files that a user fixes (space, permissions, a file or folder in the way).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                errno.EISDIR, errno.ENOTDIR}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit code 2), like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"comatch: error: {message}; see `{self.prog} --help`\n")


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a model (default: CoMatch on the bundled digits, CPU, 1 to 2 minutes)",
        parents=[shared.out_options("RUN_DIR", "the run directory to create; default: runs/PRESET-METHOD-seedN"),
                 shared.device_options(None, "where to train")],
        description="Train CoMatch, FixMatch or a supervised baseline. Any config field can be "
        "overridden as dotted.key=value, e.g. optim.lr=0.01 comatch.threshold=0.9.",
    )
    source = train.add_mutually_exclusive_group()
    source.add_argument("--preset", help="bundled preset (see `comatch presets`); default: digits")
    source.add_argument("--config", type=Path, help="YAML file of config fields, instead of a preset")
    train.add_argument("--method", help="training method: comatch (default), fixmatch, mixmatch, supervised "
                       "(the names of comatch.methods.METHODS)")
    train.add_argument("--seed", type=int, help="seed of the labelled subset, init and augmentation")
    train.add_argument("--iterations", type=int, help="total training steps")
    train.add_argument("--budget", metavar="TIME", help="wall-clock budget of the whole run, e.g. 15m or 2h: "
                       "the number of steps is set from the first steps' speed (run.budget)")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue RUN_DIR from its newest checkpoint (overrides may change only "
                       "logging, workers and the number of iterations)")
    _add_data_arguments(train)
    train.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    train.add_argument("--describe", action="store_true",
                       help="--show-config with each field's description as a YAML comment above it")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def _add_data_arguments(train: argparse.ArgumentParser) -> None:
    """Flags for where the data is; each sets a ``data.*`` config field.

    ``--labeled`` and its kin are also accepted spelled ``--labelled`` (see
    :func:`comatch.tools.arguments.spelled_both_ways`).
    """
    both = shared.spelled_both_ways
    data = train.add_argument_group("data", "benchmarks are read from --data-root; your own images from "
                                    "--labeled (one sub-folder per class) and --unlabeled; --labelled and "
                                    "--unlabelled are the same flags")
    data.add_argument("--data-root", type=Path, metavar="DIR",
                      help="folder holding the benchmark files (cifar-10-batches-py/, ...); data.root")
    data.add_argument(*both("--labeled"), dest="labeled", type=Path, metavar="DIR",
                      help="your labelled images, one sub-folder per class; sets data.dataset=folder "
                      "(and the 'folder' preset unless --preset/--config is given)")
    data.add_argument(*both("--unlabeled"), dest="unlabeled", type=Path, metavar="DIR",
                      help="your unlabelled images (any depth)")
    data.add_argument("--val", type=Path, metavar="DIR", help="validation images, one sub-folder per class")
    data.add_argument("--test", type=Path, metavar="DIR",
                      help="test images, one sub-folder per class (default: hold out part of --labeled)")
    data.add_argument("--num-labels", type=int, metavar="N", help="labelled images in total, balanced over classes")
    data.add_argument("--labels-per-class", type=int, metavar="N", help="labelled images per class")
    data.add_argument(*both("--labeled-list"), dest="labeled_list", type=Path, metavar="FILE",
                      help="reuse a labelled subset: a run's labelled.json, or one index/path per line")
    data.add_argument("--extra-labels", type=Path, metavar="FILE",
                      help="your own folders: the decisions of `comatch label` (RUN/labels.csv); images given a class "
                      "join the labelled set, 'exclude' ones leave the unlabelled pool; data.extra_labels")
    data.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")


DATA_FLAGS = {"data_root": "root", "labeled": "labeled", "unlabeled": "unlabeled", "val": "val",
              "test": "test", "labeled_list": "labeled_list", "extra_labels": "extra_labels"}


def data_overrides(args: argparse.Namespace) -> list[str]:
    """The ``data.*`` overrides the data flags stand for.

    Paths are made absolute (config.yaml then works from any directory) and quoted, so that a
    folder named '2024' stays a string.
    """
    overrides = [f"data.{field}={json.dumps(str(getattr(args, flag).expanduser().absolute()))}"
                 for flag, field in DATA_FLAGS.items() if getattr(args, flag) is not None]
    if args.labeled is not None:
        overrides.append("data.dataset=folder")
    if args.labels_per_class is not None:
        overrides += [f"data.labels_per_class={args.labels_per_class}", "data.num_labels=null"]
    if args.num_labels is not None:
        overrides.append(f"data.num_labels={args.num_labels}")
    if args.strict:
        overrides.append("data.strict=true")
    return overrides


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from comatch.tools.commands import add_tool_parsers

    parser = _Parser(prog="comatch", description="CoMatch: semi-supervised image classification. "
                     "Start with `comatch train` (a demo on bundled digits, 1 to 2 minutes on a CPU) or "
                     "`comatch train --labeled DIR --unlabeled DIR` (your own images).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_parser(subparsers)
    subparsers.add_parser("presets", help="list the bundled presets, one line each")
    add_tool_parsers(subparsers)
    return parser


def resolve_train_config(args: argparse.Namespace) -> cfg.Config:
    """The configuration a ``train`` invocation asks for (a resume starts from the run's)."""
    from comatch import config as cfg
    overrides = data_overrides(args) + list(args.overrides)
    given = explicit_keys(list(args.overrides)) | {key for key, flag in (("optim.iterations", args.iterations),
                                                                      ("run.budget", args.budget)) if flag is not None}
    if {"optim.iterations", "run.budget"} <= given:
        raise UserError("--budget and --iterations both set the run's length; give one of them (a budget chooses "
                        "the number of steps that fits)")
    if args.iterations is not None:
        overrides.append(f"optim.iterations={args.iterations}")
    if args.device is not None:
        overrides.append(f"run.device={args.device}")
    if args.budget is not None:
        overrides.append(f"run.budget={args.budget}")
    if args.resume is not None:
        if args.preset or args.config or args.out:
            raise UserError("--resume continues a run with its own config and directory; drop --preset/--config/--out")
        saved = args.resume / "config.yaml"
        if not saved.is_file():
            raise UserError(f"{args.resume} is not a run directory (no config.yaml); check the path")
        if has_checkpoint(args.resume) and not (args.resume / "labelled.json").is_file():
            raise UserError(f"{args.resume} lacks labelled.json (the run's labelled images), so it cannot be "
                            f"resumed exactly: restore the file from a backup, or start a new run")
        if "optim.iterations" in given:  # a fixed length replaces the run's budget, if it had one
            overrides.append("run.budget=null")
        return cfg.build_config(config_file=saved, overrides=overrides, method=args.method, seed=args.seed)
    preset = args.preset
    if preset is None and args.config is None and args.labeled is not None:
        preset = "folder"  # your own images: not the digits defaults
    config = cfg.build_config(preset=preset, config_file=args.config, overrides=overrides,
                              method=args.method, seed=args.seed)
    if preset == "folder" and args.preset is None:  # settings that fit the files and this machine
        chosen = own_data_defaults(config, explicit_keys(overrides))
        config = cfg.build_config(preset=preset, overrides=chosen + overrides, method=args.method, seed=args.seed)
        if "description" not in explicit_keys(overrides):  # the preset's line names its own network and size
            config.description = own_data_description(config)
    return config


def own_data_description(config: cfg.Config) -> str:
    """The one line config.yaml gives a run of the user's folders: the settings as chosen."""
    size = config.data.image_size or "the files' size in"
    return (f"your own folders (--labeled, --unlabeled): {config.model.arch} at {size} px, "
            f"{config.optim.batch_size} labelled images per step; chosen for these files and this machine")


def explicit_keys(overrides: list[str]) -> set[str]:
    """The dotted config keys a command line sets (flags included, as their overrides)."""
    return {item.partition("=")[0] for item in overrides}


def own_data_defaults(config: cfg.Config, explicit: set[str]) -> list[str]:
    """``key=value`` settings chosen for the user's folders and this machine (explicit keys kept).

    The image size and channels come from the files, the network, batch and loader workers
    from the device and cores (:func:`comatch.training.defaults.choose_defaults`), flips, turns
    and colour changes from what quick classifiers of the labelled images make of their mirror
    images, turned copies and copies with their hue turned (:func:`comatch.data.invariance.mirror_test`,
    :func:`~comatch.data.invariance.turn_test`, :func:`~comatch.data.invariance.colour_test`). On a CPU,
    unless the command gives ``--iterations`` or ``--budget``, the run gets a 15-minute
    budget; with a budget (that one or the user's) the settings that depend on the run's length
    are chosen again once the budget has fixed the number of steps (``run.fit_to_length``).
    The choices are printed and land in config.yaml.
    """
    import torch

    from comatch.data.folders import probe_folders
    from comatch.data.invariance import colour_test, labelled_sample, mirror_test, turn_test
    from comatch.methods import METHODS, MethodContext
    from comatch.training.defaults import Situation, choose_defaults, run_length_settings
    from comatch.training.runtime import usable_cpus

    probe = probe_folders(config.data.labeled, config.data.unlabeled)
    device = "cuda" if config.run.device != "cpu" and torch.cuda.is_available() else "cpu"
    default_budget = device == "cpu" and not {"optim.iterations", "run.budget"} & explicit
    budgeted = default_budget or ("run.budget" in explicit and "optim.iterations" not in explicit)
    iterations = CPU_PROVISIONAL_STEPS if budgeted else config.optim.iterations
    # the method as configured (a stand-in network: only its views are asked for)
    method = METHODS[config.method].from_config(config, MethodContext(probe.num_classes, config.model.proj_dim,
                                                                      torch.nn.Module()))
    tests = {"views.flip": mirror_test, "views.rotate": turn_test}
    if probe.channels == 3:  # grey images have no hue to test
        tests["views.colour"] = colour_test
    evidence: dict[str, Any] = {}
    if not set(tests) <= explicit:
        sample = labelled_sample(probe.labelled.paths, probe.labelled.labels, probe.channels, seed=config.seed)
        if sample is not None:
            evidence = {key: test(*sample, seed=config.seed) for key, test in tests.items() if key not in explicit}
    situation = Situation(device=device, cpu_cores=usable_cpus(), image_size=probe.image_size,
                          channels=probe.channels, num_labelled=probe.num_labelled,
                          num_unlabelled=probe.num_unlabelled, iterations=iterations,
                          num_classes=probe.num_classes, unlabelled_views=len(method.unlabelled_views),
                          mirror=evidence.get("views.flip"), turn=evidence.get("views.rotate"),
                          colour=evidence.get("views.colour"), stored_as_rgb=probe.stored_as_rgb)
    values = config.model_dump()
    chosen = choose_defaults(situation, {k: _dotted(values, k) for k in explicit})
    extra = chosen.as_override_strings()
    if budgeted:  # the budget fixes the steps: the settings that depend on them follow (run.fit_to_length)
        refit = [k for k in run_length_settings(iterations) if k not in explicit]
        extra += [f"optim.iterations={iterations}", f"run.fit_to_length={refit}"]
    if default_budget:
        extra.append(f"run.budget={CPU_DEFAULT_BUDGET}")
        chosen.reasons.append(f"run.budget={CPU_DEFAULT_BUDGET}: a CPU run of your own folders fits in "
                              f"{CPU_DEFAULT_BUDGET} unless you give --iterations or --budget")
    for reason in chosen.reasons:
        print(f"defaults: {reason}", flush=True)
    return extra


def _dotted(values: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint file."""
    return any((run_dir / name).is_file() for name in CHECKPOINTS)


def new_run_dir(requested: Path | None, config: cfg.Config) -> Path:
    """The run directory to create; refuses one that already holds a run."""
    if requested is not None:
        if requested.exists() and any((requested / m).exists() for m in RUN_MARKERS):
            raise UserError(f"{requested} already holds a run; choose another --out (or delete it)")
        return requested
    base = Path("runs") / f"{config.preset}-{config.method}-seed{config.seed}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def remove_unfinished_start(run_dir: Path) -> None:
    """Remove what a new run wrote before its first checkpoint, so that its --out can be used again.

    Only for a directory this process claimed empty of runs (checked under the lock).
    """
    for name in UNFINISHED_START:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def claim_run_dir(requested: Path | None, config: cfg.Config, locks: list[Any], resume: bool) -> Path:
    """Lock the run directory (created, and so checked writable, before any data loads).

    Args:
        requested: ``--out`` or ``--resume``; None: a new name under ``runs/``.
        config: the run's configuration (names a new directory).
        locks: the lock is appended here; it is held until the process ends.
        resume: ``requested`` is a run to continue.

    Raises:
        UserError: the directory cannot be written, another process holds it, or (new runs)
            it holds a run already.
    """
    from comatch.training.runtime import RunLock

    if resume:
        locks.append(RunLock(requested, hint="check the permissions of the run directory").acquire())
        return requested
    if requested is not None and requested.is_symlink() and not requested.exists():
        raise UserError(f"cannot write the run directory {requested}: it is a link to {os.readlink(requested)}, "
                        f"which does not exist; create that folder, remove the link or choose another --out")
    if requested is not None and requested.exists() and not requested.is_dir():
        raise UserError(f"cannot write the run directory {requested}: a file of that name is in the way; "
                        f"choose another --out")
    out_dir = new_run_dir(requested, config) if requested is None else requested
    locks.append(RunLock(out_dir).acquire())
    return new_run_dir(out_dir, config) if requested is not None else out_dir  # checked again, under the lock


def cmd_train(args: argparse.Namespace) -> int:
    """Train a new run or continue one.

    A SIGINT or SIGTERM (to the process or its whole process group) from the first moment on
    is a request to stop: loading goes on, the training loop checkpoints before or after its
    current step, prints the resume command, and the command exits 130 (SIGINT) or 143
    (SIGTERM), so that ``comatch train && comatch export`` exports no half-trained model (see
    :mod:`comatch.signals`). A second signal stops at once.
    """
    started = getattr(args, "started", None)  # a time budget counts from the command's start (main)
    started = pace.now() if started is None else started
    chosen: dict[str, Path] = {}  # the run directory, once claimed
    with StopSignals() as stop:  # first: importing torch alone can take seconds
        numerics.pin(requested_numerics(args))  # before torch loads (the typed config imports it)
        from comatch import config as cfg

        try:
            config = resolve_train_config(args)
            if args.show_config or args.describe:
                print(cfg.to_yaml(config, describe=args.describe), end="")
                return 0
            status = _train(args, config, chosen, started)
            return STOPPED_STATUS.get(stop.name, 130) if status == STOPPED else status
        except KeyboardInterrupt:  # a second signal: stop at once
            _clear_unresumable(args, chosen)
            raise
        except OSError as err:  # a full disk or a read-only place met where no check was made
            if err.errno not in WRITE_ERRNOS:
                raise
            cleared = _clear_unresumable(args, chosen)
            where = f" {err.filename}" if err.filename else ""
            raise UserError(f"cannot write{where}: {err.strerror}; free some space or choose a writable place, "
                            f"then {_what_next(args, chosen, cleared)}") from None
        except UserError:
            _clear_unresumable(args, chosen)  # e.g. no space for the first checkpoint: the same command works again
            raise


def _clear_unresumable(args: argparse.Namespace, chosen: dict[str, Path]) -> bool:
    """Remove what a new run that stopped before its first checkpoint wrote (so that the same
    command can be run again); True if that was done."""
    out_dir = chosen.get("out")
    main_process = os.environ.get("RANK", "0") == "0"
    if args.resume is None and out_dir is not None and main_process and not has_checkpoint(out_dir):
        remove_unfinished_start(out_dir)  # leave no unresumable run behind
        return True
    return False


def _what_next(args: argparse.Namespace, chosen: dict[str, Path], cleared: bool) -> str:
    """What to run after a write error stopped training: continue from the checkpoint, or run again."""
    out_dir = chosen.get("out")
    if out_dir is not None and not cleared and has_checkpoint(out_dir):
        return f"continue with `comatch train --resume {out_dir}`"
    return "run the same command again" + (f" ({out_dir} holds no checkpoint and was cleared)" if cleared else "")


def _train(args: argparse.Namespace, config: cfg.Config, chosen: dict[str, Path], started: float) -> int:
    """Lock the run directory (recorded in ``chosen["out"]``), train, print the result line;
    returns the exit status (:data:`STOPPED` when a signal stopped the run)."""
    from comatch import distributed  # heavy imports only when training
    from comatch.lifecycle import train_run
    from comatch.training import parallel

    locks: list[Any] = []  # released when the command ends (by the OS if the process is killed)
    # under torchrun: every process trains, rank 0 chooses and locks the directory and writes the files
    with parallel.launched(config.run.device, config.run.dist_timeout):
        requested = args.resume if args.resume is not None else args.out
        try:
            out_dir = parallel.decide_on_main(lambda: claim_run_dir(requested, config, locks, args.resume is not None))
            chosen["out"] = out_dir
            outcome = train_run(config, out_dir, resume=args.resume is not None, started=started)
        finally:
            for lock in locks:
                lock.release()
        summary = outcome.summary
        if summary is None:  # a finished run: nothing to do
            return 0
        if not distributed.is_main_process():
            return STOPPED if summary["stopped"] else 0
        vanished = outcome.trainer.data.vanished()
        if vanished:
            print(f"comatch: warning: {len(vanished)} image(s) could not be read during training and were "
                  f"replaced by others, e.g. {vanished[0]}; all are listed in {out_dir / 'data.json'}",
                  file=sys.stderr)
        if summary["stopped"]:
            return STOPPED
    print(
        f"done: {config.method} on {config.preset}, seed {config.seed}: test accuracy "
        f"{summary['test_accuracy']:.2%} (EMA {summary['test_accuracy_ema']:.2%}) "
        f"in {summary['wall_seconds'] / 60:.1f} min; run directory {out_dir}"
    )
    return 0


def requested_numerics(args: argparse.Namespace) -> str:
    """``run.numerics`` as a ``train`` command asks for it, read before torch loads.

    The typed configuration imports torch, so the raw layers are read here in the same order:
    the last ``run.numerics=`` override, else the resumed run's config.yaml, the ``--config``
    file or the preset. A file that cannot be read gives ``fast``: building the configuration
    then reports the problem.
    """
    from comatch.config_files import load_preset, load_yaml

    for item in reversed(args.overrides):
        key, _, value = item.partition("=")
        if key.strip() == "run.numerics":
            return value.strip()
    source = args.resume / "config.yaml" if args.resume is not None else args.config
    try:
        raw = load_yaml(source) if source is not None else load_preset(
            args.preset or ("folder" if args.labeled is not None else "digits"))
    except UserError:
        return "fast"
    run = raw.get("run")
    return str(run.get("numerics", "fast")) if isinstance(run, dict) else "fast"


def cmd_presets(args: argparse.Namespace) -> int:
    from comatch import config as cfg

    del args
    for name in cfg.preset_names():
        raw = cfg.load_preset(name)
        description = raw.get("description") or ""
        print(f"{name:16s} {description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user error).

    The stop handler is installed first: a SIGINT or SIGTERM while the command is still
    importing and parsing is a request to stop. ``train`` goes on under it (the run stops
    cleanly at its first chance); any other command then ends at once with status 130 or 143.
    """
    # a time budget counts from the command's start: the process's, when this process is the
    # command (no argv given), else this call's
    started = pace.now() - (pace.process_age() if argv is None else 0.0)
    argv = list(sys.argv[1:] if argv is None else argv)
    with StopSignals() as startup:
        parser = build_parser()
        try:
            args = _parse(parser, argv)
        except SystemExit as exit_:  # --help, or a usage error already printed on one line
            return int(exit_.code or 0)
        args.started = started
        if args.command is None:  # a bare `comatch`: what it can do, and no training
            parser.print_help()
            return 0
        openmp.choose()  # before torch loads
        if args.command == "train":
            return _run(args)
    if startup.requested:
        print(f"comatch: interrupted ({startup.name})", file=sys.stderr)
        return 143 if startup.name == "SIGTERM" else 130
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command, turning the errors a user can cause into one line and a status."""
    from comatch.tools.commands import TOOL_COMMANDS

    handlers = {"train": cmd_train, "presets": cmd_presets, **TOOL_COMMANDS}
    try:
        return handlers[args.command](args)
    except UserError as err:
        print(f"comatch: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("comatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `comatch evaluate RUN | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # a full disk or a read-only place met where no check was made
        if err.errno not in WRITE_ERRNOS:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"comatch: error: cannot write{where}: {err.strerror}; free some space or choose a "
              f"writable place, then try again", file=sys.stderr)
        return 2


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; ``key=value`` overrides may stand anywhere after the subcommand."""
    args, unknown = parser.parse_known_args(argv)
    # key=value overrides may stand between options, where argparse cannot place them
    overrides = [a for a in unknown if "=" in a and not a.startswith("-")]
    strays = [a for a in unknown if a not in overrides]
    if strays and not strays[0].startswith("-"):
        parser.error(f"cannot read {strays[0]!r}; write config overrides as key=value, e.g. optim.lr=0.01")
    if strays or (overrides and args.command != "train"):
        parser.error(f"unrecognized arguments: {' '.join(strays or overrides)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args
