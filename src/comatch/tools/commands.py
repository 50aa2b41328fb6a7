"""The subcommands that use a trained run: ``evaluate``, ``predict``, ``export`` and ``report``.

Heavy modules (the models, matplotlib, ONNX) are imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from comatch.errors import UserError
from comatch.tools.baseline import add_baseline_parser, cmd_baseline
from comatch.tools import trust_commands


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def writable_file(path: Path, flag: str, example: str) -> None:
    """Check, before any work, that ``path`` can be written as a file.

    Args:
        path: the file to write.
        flag: the option that named it (for messages).
        example: a file name to suggest when ``path`` is a folder.

    Raises:
        UserError: ``path`` is a folder, or it (or its folder) cannot be created or written.
    """
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name, e.g. {path / example}")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab"):
            pass
    except OSError as err:
        raise UserError(f"cannot write {flag} {path}: {err.strerror}; choose a writable place") from None
    if not existed:
        path.unlink()


def _add_model_options(parser: argparse.ArgumentParser, device: bool = True) -> None:
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT",
                        help="a checkpoint .pt file, or a run directory (its newest checkpoint)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--ema", dest="weights", action="store_const", const="ema",
                         help="use the EMA weights, the ones the trainer evaluates (default)")
    weights.add_argument("--raw", dest="weights", action="store_const", const="raw",
                         help="use the raw (non-averaged) weights")
    parser.set_defaults(weights="ema")
    if device:
        parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                            help="where to run the model (default: auto, CUDA when available)")
        parser.add_argument("--batch-size", type=_positive, default=256, help="images per forward pass")


def add_tool_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate``, ``predict``, ``export`` and ``report`` subcommands."""
    evaluate = subparsers.add_parser(
        "evaluate", help="top-1, top-5, per-class accuracy and confusion matrix as JSON",
        description="Evaluate a checkpoint; prints JSON on stdout. Default data: the test split of the "
        "dataset the run trained on (as its config records it).")
    _add_model_options(evaluate)
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--data-root", type=Path, metavar="DIR", help="where the run's standard dataset lives")
    source.add_argument("--test", type=Path, metavar="DIR", help="a labelled folder: DIR/CLASS_NAME/images")

    predict = subparsers.add_parser(
        "predict", help="classify image files and folders into a CSV",
        description="Classify images (PNG, JPEG, BMP, WebP; folders are searched recursively). Writes "
        "path,class,probability,...,error as CSV; unreadable images get an error and do not stop the run.")
    _add_model_options(predict)
    predict.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    predict.add_argument("--out", type=Path, metavar="CSV", help="the CSV to write (default: stdout)")
    predict.add_argument("--top-k", type=_positive, default=1, metavar="K", help="classes listed per image (default 1)")
    predict.add_argument("--unknown-threshold", type=float, metavar="P",
                         help="label an image 'unknown' when its top (calibrated) probability is below P, e.g. 0.5")
    predict.add_argument("--screen", action="store_true",
                         help="label an image 'unknown' when the run's unknown-class screen flags it (far from every "
                         "class prototype; RUN_DIR/screen.json, fitted on first use; see docs/trust.md) and add its "
                         "unknown_score column")

    export = subparsers.add_parser(
        "export", help="export a uint8-images-to-probabilities model (TorchScript or ONNX)",
        description="Export the model with normalisation and softmax inside: input uint8 [N, C, S, S], "
        "output class probabilities. FILE.json beside it holds class names and the input contract. "
        "The file is checked against PyTorch before the command succeeds.")
    _add_model_options(export, device=False)
    export.add_argument("--format", required=True, choices=("torchscript", "onnx"), help="the file format")
    export.add_argument("--out", type=Path, metavar="FILE",
                        help="the model file (default: RUN_DIR/export/model.pt or model.onnx)")

    report = subparsers.add_parser(
        "report", help="plots and report.html of a run, or several runs compared",
        description="One run: plots in RUN_DIR/plots and RUN_DIR/report.html. Several runs: their curves "
        "overlaid in --out (default FIRST_RUN_DIR/compare).")
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories")
    report.add_argument("--out", type=Path, metavar="DIR", help="where to write (see above)")
    report.add_argument("--embedding", choices=("pca", "tsne"), default="pca",
                        help="2-D map of the test embeddings (tsne: clearer, slower)")
    report.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run the model")
    add_baseline_parser(subparsers)
    trust_commands.add_parsers(subparsers, _positive)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print the evaluation of a checkpoint as JSON."""
    from comatch.tools.inference import evaluate, evaluation_data, load_model

    loaded = load_model(args.checkpoint, args.weights, args.device)
    dataset = evaluation_data(loaded, data_root=args.data_root, test_dir=args.test)
    result = evaluate(loaded, dataset, args.batch_size)
    result["data"] = str(args.test) if args.test else f"{loaded.config.data.dataset} test split"
    print(json.dumps(result, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Write the predictions of image files as CSV."""
    from comatch.tools.images import find_images
    from comatch.tools.inference import load_model, predict_files, write_predictions_csv

    missing = [p for p in args.paths if not p.exists()]
    if len(missing) == len(args.paths):
        raise UserError(f"{missing[0]} does not exist; give image files or folders that exist")
    if args.out is not None:
        writable_file(args.out, "--out", "predictions.csv")
    if args.unknown_threshold is not None and not 0 < args.unknown_threshold <= 1:
        raise UserError(f"--unknown-threshold must lie in (0, 1], got {args.unknown_threshold}; e.g. 0.5")
    files = find_images(args.paths)
    if not files:
        raise UserError(f"no images (.png, .jpg, .jpeg, .bmp, .webp) in {', '.join(map(str, args.paths))}")
    loaded = load_model(args.checkpoint, args.weights, args.device)
    screen = None
    if args.screen:
        from comatch.tools.screen import run_screen

        run_dir = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent.parent
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"--screen needs the run directory of {args.checkpoint} (its config.yaml and data); "
                            "give the run directory as CHECKPOINT")
        screen = run_screen(run_dir, args.device)
    predictions = predict_files(loaded, files, args.batch_size, args.top_k, screen=screen)
    k = min(args.top_k, len(loaded.class_names))
    if args.out is None:
        write_predictions_csv(predictions, sys.stdout, k, args.unknown_threshold)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as handle:
            write_predictions_csv(predictions, handle, k, args.unknown_threshold)
    failed = sum(1 for p in predictions if p.error)
    where = f"; written to {args.out}" if args.out else ""
    print(f"predicted {len(predictions) - failed} image(s); {failed} could not be read"
          f"{' (see the error column)' if failed else ''}{where}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a checkpoint and check it against PyTorch."""
    from comatch.tools.export import export_model
    from comatch.tools.inference import load_model

    from comatch.tools.export import FORMATS, default_output

    if args.out is not None:
        writable_file(args.out, "--out", f"model{FORMATS[args.format]}")
    loaded = load_model(args.checkpoint, args.weights, "cpu")
    if args.out is None:
        writable_file(default_output(loaded, args.format), "the export file", f"model{FORMATS[args.format]}")
    model_file, info = export_model(loaded, args.format, args.out)
    diff = json.loads(info.read_text())["check"]["max_abs_diff"]
    print(f"exported {args.format} model to {model_file} (classes and input format in {info}); "
          f"it matches PyTorch within {diff:.2g}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write a run's report, or compare runs."""
    from comatch.tools.report import write_comparison, write_report

    if len(args.runs) == 1:
        report = write_report(args.runs[0], args.out, args.device, args.embedding)
    else:
        report = write_comparison(args.runs, args.out)
    print(f"report: {report.html} ({len(report.figures)} plots)")
    return 0


TOOL_COMMANDS = {"evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export, "report": cmd_report,
                 "baseline": cmd_baseline, **trust_commands.COMMANDS}
