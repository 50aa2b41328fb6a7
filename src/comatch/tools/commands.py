"""The subcommands that use a trained run: ``evaluate``, ``predict``, ``export`` and ``report``.

Heavy modules (the models, matplotlib, ONNX) are imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from comatch.errors import UserError
from comatch.tools import arguments as shared
from comatch.tools.trust import commands as trust_commands
from comatch.tools.outputs import writable_file


def add_tool_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate``, ``predict``, ``export``, ``report``, ``baseline``, ``suggest`` and
    ``calibrate`` subcommands."""
    model, device, batch = shared.model_options(), shared.device_options("auto"), shared.batch_options()
    evaluate = subparsers.add_parser(
        "evaluate", help="top-1, top-5, per-class accuracy and confusion matrix as JSON",
        parents=[model, device, batch, shared.out_options("FILE", "write the JSON to FILE (default: stdout)")],
        description="Evaluate a checkpoint; prints JSON on stdout (or writes it to --out). Default data: the "
        "test split of the dataset the run trained on (as its config records it).")
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--data-root", type=Path, metavar="DIR", help="where the run's standard dataset lives")
    source.add_argument("--test", type=Path, metavar="DIR", help="a labelled folder: DIR/CLASS_NAME/images")

    predict = subparsers.add_parser(
        "predict", help="classify image files and folders into a CSV",
        parents=[model, device, batch, shared.out_options("CSV", "the CSV to write (default: stdout)")],
        description="Classify images (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM/PGM; folders are searched recursively, "
        "hidden files and folders skipped). Writes path,class,probability,...,error as CSV; unreadable images get "
        "an error and do not stop the run.")
    predict.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    predict.add_argument("--top-k", type=shared.positive, default=1, metavar="K", help="classes listed per image (default 1)")
    predict.add_argument("--unknown-threshold", type=float, metavar="P",
                         help="label an image 'unknown' when its top (calibrated) probability is below P, e.g. 0.5")
    predict.add_argument("--screen", action="store_true",
                         help="label an image 'unknown' when the run's unknown-class screen flags it (far from every "
                         "class prototype; RUN_DIR/screen.json, fitted on first use; see docs/trust.md) and add its "
                         "unknown_score column")

    export = subparsers.add_parser(
        "export", help="export a uint8-images-to-probabilities model (TorchScript or ONNX)",
        parents=[model, shared.out_options("FILE", "the model file (default: RUN_DIR/export/model.pt or model.onnx)")],
        description="Export the model with normalisation and softmax inside: input uint8 [N, C, S, S], "
        "output class probabilities. FILE.json beside it holds class names and the input contract. "
        "The file is checked against PyTorch before the command succeeds (see docs/using-the-model.md).")
    export.add_argument("--format", required=True, choices=("torchscript", "onnx"), help="the file format")

    report = subparsers.add_parser(
        "report", help="plots and report.html of a run, or several runs compared",
        parents=[shared.out_options("DIR", "the folder of report.html and plots/ (default: RUN_DIR, or "
                                  "FIRST_RUN_DIR/compare for several runs)"), device],
        description="One run: plots in RUN_DIR/plots and RUN_DIR/report.html. Several runs: their curves "
        "overlaid in --out (default FIRST_RUN_DIR/compare).")
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories")
    report.add_argument("--embedding", choices=("pca", "tsne"), default="pca",
                        help="2-D map of the test embeddings (tsne: clearer, slower)")
    add_baseline_parser(subparsers)
    trust_commands.add_parsers(subparsers)


def _non_negative(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def add_baseline_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``baseline`` subcommand."""
    parser = subparsers.add_parser(
        "baseline", help="logistic regression and kNN on frozen features and pixels, beside the run",
        parents=[shared.out_options("FILE", "the JSON to write (default: RUN_DIR/baseline.json, which the "
                                    "run's report shows)"),
                 shared.device_options("cpu", "where the features are computed")],
        description="Fit scikit-learn classifiers on the labelled images only (frozen features of the run's "
        "initial network, and raw pixels of small images) and report their test accuracy beside the run's "
        "own; writes RUN_DIR/baseline.json (or --out).")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory")
    parser.add_argument("--no-pixels", dest="pixels", action="store_false", help="skip the pixel baselines")
    parser.add_argument(*shared.spelled_both_ways("--max-unlabelled"), dest="max_unlabelled", type=_non_negative,
                        default=10000, metavar="N", help="unlabelled images label spreading uses (default 10000)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print the evaluation of a checkpoint as JSON."""
    from comatch.tools.inference.images import LabelledFolder, skipped_line
    from comatch.tools.inference.checkpoint import evaluate, evaluation_data, load_model

    if args.out is not None:
        writable_file(args.out, "--out", "evaluation.json")
    loaded = load_model(args.checkpoint, args.weights, args.device)
    dataset = evaluation_data(loaded, data_root=args.data_root, test_dir=args.test)
    skipped = skipped_line(dataset.scan) if isinstance(dataset, LabelledFolder) else None
    if skipped:
        print(skipped, file=sys.stderr)
    result = evaluate(loaded, dataset, args.batch_size)
    result["data"] = str(args.test) if args.test else f"{loaded.config.data.dataset} test split"
    text = json.dumps(result, indent=2)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text + "\n")
        print(f"evaluation written to {args.out}", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Write the predictions of image files as CSV."""
    from comatch.tools.inference.images import IMAGE_EXTENSIONS, find_images, skipped_line
    from comatch.tools.inference.checkpoint import load_model, predict_files, write_predictions_csv

    missing = [p for p in args.paths if not p.exists()]
    if len(missing) == len(args.paths):
        raise UserError(f"{missing[0]} does not exist; give image files or folders that exist")
    if args.out is not None:
        writable_file(args.out, "--out", "predictions.csv")
    if args.unknown_threshold is not None and not 0 < args.unknown_threshold <= 1:
        raise UserError(f"--unknown-threshold must lie in (0, 1], got {args.unknown_threshold}; e.g. 0.5")
    scan = find_images(args.paths)
    files = [Path(f) for f in scan.files]
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, args.paths))}"
                        + (f" ({scan.summary()})" if scan.ignored else "") + "; give image files or folders")
    loaded = load_model(args.checkpoint, args.weights, args.device)
    screen = None
    if args.screen:
        from comatch.tools.trust.screen import run_screen

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
    if skipped_line(scan):
        print(skipped_line(scan), file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a checkpoint and check it against PyTorch."""
    from comatch.tools.inference.export import export_model
    from comatch.tools.inference.checkpoint import load_model

    from comatch.tools.inference.export import FORMATS, default_output

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
    from comatch.tools.report.build import write_comparison, write_report

    if len(args.runs) == 1:
        report = write_report(args.runs[0], args.out, args.device, args.embedding)
    else:
        report = write_comparison(args.runs, args.out)
    print(f"report: {report.html} ({len(report.figures)} plots)")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """``comatch baseline RUN_DIR`` (numpy and scikit-learn are imported only now)."""
    from comatch.tools.baseline import cmd_baseline as run

    return run(args)


TOOL_COMMANDS = {"evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export, "report": cmd_report,
                 "baseline": cmd_baseline, **trust_commands.COMMANDS}
