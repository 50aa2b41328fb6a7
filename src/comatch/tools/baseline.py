"""``comatch baseline RUN_DIR``: what the labelled images alone achieve, beside the CoMatch run.

Semi-supervised training pays off only if it beats simple classifiers fitted on the labelled
images alone. For a run directory this module fits, with scikit-learn:

* on **frozen features** of the run's *initial* network (rebuilt from ``config.yaml`` with the
  run's seed: random initialisation, or the pretrained backbone from ``model.init`` /
  ``model.pretrained``), a logistic regression and k-nearest-neighbour classifiers;
* on **raw pixels**, when the images are small (at most :data:`PIXEL_LIMIT` values each), a
  logistic regression, 1-nearest-neighbour and label spreading (the one semi-supervised
  baseline: it also sees up to ``max_unlabelled`` unlabelled images);

and reports their test accuracy next to the run's own (``summary.json``), in
``RUN_DIR/baseline.json``. :func:`run_baselines` is also what the trainer calls at the end of
a run with ``run.baseline=true``.
"""

from __future__ import annotations

import warnings

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from comatch.errors import UserError
from comatch.tools.quiet import quiet_libraries

PIXEL_LIMIT = 64 * 64 * 3
"""Largest number of values per image (C * S * S) for which the pixel baselines run."""
KNN_K = (1, 5)
"""Neighbour counts of the kNN baselines."""


def _accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``predicted`` equal to ``labels``."""
    return float(np.mean(np.asarray(predicted) == np.asarray(labels))) if len(labels) else float("nan")


def fit_feature_baselines(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                          test_y: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Test accuracy of logistic regression and kNN fitted on ``(train_x, train_y)``.

    The logistic regression sees features standardised with the training images' mean and
    std (frozen random features have arbitrary scales, and the solver converges on unit
    scales). kNN uses Euclidean distance on the features as they are (standardising would
    blow up dimensions that hold only noise), with k in :data:`KNN_K` (k larger than the
    training set is skipped).

    Args:
        train_x: ``[N, F]`` features of the labelled images.
        train_y: ``[N]`` their classes.
        test_x: ``[M, F]`` features of the test images.
        test_y: ``[M]`` their classes.
        seed: seed of the logistic regression's solver.

    Returns:
        ``{"logistic_regression": acc, "knn_1": acc, "knn_5": acc}`` in [0, 1].
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    train_s, test_s = scaler.transform(train_x), scaler.transform(test_x)
    result: dict[str, float] = {}
    if len(np.unique(train_y)) > 1:
        logistic = LogisticRegression(max_iter=2000, random_state=seed).fit(train_s, train_y)
        result["logistic_regression"] = _accuracy(logistic.predict(test_s), test_y)
    for k in KNN_K:
        if k <= len(train_y):
            knn = KNeighborsClassifier(n_neighbors=k).fit(train_x, train_y)
            result[f"knn_{k}"] = _accuracy(knn.predict(test_x), test_y)
    return result


def spread_labels(train_x: np.ndarray, train_y: np.ndarray, unlabelled_x: np.ndarray) -> Any:
    """scikit-learn's LabelSpreading (7-NN graph) fitted on labelled + unlabelled rows.

    Args:
        train_x, train_y: labelled rows ``[N, F]`` and classes ``[N]``.
        unlabelled_x: unlabelled rows ``[U, F]`` (label -1 in the graph).

    Returns:
        The fitted model: ``predict`` for new rows, ``label_distributions_`` ``[N + U, C]``
        for the graph's rows (an isolated row's is NaN: it stays unlabelled).
    """
    from sklearn.semi_supervised import LabelSpreading

    rows = np.concatenate([train_x, unlabelled_x])  # [N + U, F]
    labels = np.concatenate([train_y, -np.ones(len(unlabelled_x), dtype=np.int64)])
    with warnings.catch_warnings():  # isolated rows of the kNN graph divide 0 by 0: they stay unlabelled
        warnings.simplefilter("ignore", RuntimeWarning)
        return LabelSpreading(kernel="knn", n_neighbors=min(7, len(rows) - 1), max_iter=100).fit(rows, labels)


def fit_label_spreading(train_x: np.ndarray, train_y: np.ndarray, unlabelled_x: np.ndarray,
                        test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Test accuracy of :func:`spread_labels` on labelled + unlabelled rows; ``test_x``,
    ``test_y`` (``[M, F]``, ``[M]``) are not in the graph. Returns it in [0, 1]."""
    return _accuracy(spread_labels(train_x, train_y, unlabelled_x).predict(test_x), test_y)


def fit_pixel_baselines(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                        unlabelled_x: np.ndarray | None = None, seed: int = 0) -> dict[str, float]:
    """Logistic regression and 1-NN on raw pixels in [0, 1]; label spreading when unlabelled rows are given.

    Args:
        train_x, train_y: labelled pixels ``[N, C*S*S]`` in [0, 1] and classes.
        test_x, test_y: test pixels and classes.
        unlabelled_x: unlabelled pixels ``[U, C*S*S]``, or None to skip label spreading.
        seed: seed of the logistic regression's solver.

    Returns:
        ``{"logistic_regression", "knn_1"[, "label_spreading"]}`` test accuracies.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    result: dict[str, float] = {}
    if len(np.unique(train_y)) > 1:
        logistic = LogisticRegression(max_iter=2000, random_state=seed).fit(train_x, train_y)
        result["logistic_regression"] = _accuracy(logistic.predict(test_x), test_y)
    result["knn_1"] = _accuracy(KNeighborsClassifier(n_neighbors=1).fit(train_x, train_y).predict(test_x), test_y)
    if unlabelled_x is not None and len(unlabelled_x):
        result["label_spreading"] = fit_label_spreading(train_x, train_y, unlabelled_x, test_x, test_y)
    return result


def _pixels(dataset: Any, index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flattened pixels in [0, 1] ``[N, C*S*S]`` and labels of (a subset of) a uint8 image dataset."""
    index = np.arange(len(dataset)) if index is None else index
    rows, labels = [], []
    for i in index:
        image, label = dataset[int(i)]
        rows.append(image.reshape(-1).numpy().astype(np.float32) / 255.0)
        labels.append(int(label))
    width = rows[0].shape[0] if rows else 0
    return np.stack(rows) if rows else np.zeros((0, width), np.float32), np.asarray(labels, dtype=np.int64)


def _initial_network(config: Any, num_classes: int, in_channels: int) -> tuple[Any, str]:
    """The run's network as training started: built with the run's seed, pretrained weights loaded.

    Returns:
        ``(model, source)``: the network and a few words on where its weights come from.
    """
    from comatch.models import build_model
    from comatch.models.pretrained import load_encoder_weights
    from comatch.training.runtime import seed_everything

    m = config.model
    seed_everything(config.seed)
    model = build_model(m.arch, num_classes, in_channels=in_channels, proj_dim=m.proj_dim,
                        bn_momentum=m.bn_momentum, pretrained=m.pretrained)
    source = f"random initialisation (seed {config.seed})"
    if m.pretrained:
        source = "pretrained weights from timm's cache"
    if m.init:
        load_encoder_weights(model.encoder, m.init)
        source = f"weights of {m.init}"
    return model, source


def _features(model: Any, dataset: Any, view: Any, normalize: Any, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Encoder features ``[N, F]`` and labels ``[N]`` of a dataset, in eval mode."""
    from comatch.data.loaders import eval_loader
    from comatch.training.evaluation import network_outputs

    feats, _, _, labels = network_outputs(model, eval_loader(dataset, view, batch_size), normalize)
    return feats.numpy(), labels.numpy()


def read_run_config(run_dir: Path) -> Any:
    """The validated ``config.yaml`` of a run directory.

    Raises:
        UserError: the directory or its config.yaml is missing.
    """
    from comatch import config as cfg

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} holds no config.yaml; give a run directory written by `comatch train`")
    return cfg.validate(cfg.load_yaml(path))


def _run_accuracy(run_dir: Path) -> dict[str, float | None]:
    """The run's own test accuracies from ``summary.json`` (None before the run has finished)."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    return {"test_accuracy_ema": summary.get("test_accuracy_ema"), "test_accuracy": summary.get("test_accuracy")}


@quiet_libraries()
def run_baselines(run_dir: str | Path, *, device: str = "cpu", batch_size: int = 256, pixels: bool = True,
                  max_unlabelled: int = 10000, data: Any = None, write: bool = True) -> dict[str, Any]:
    """Fit the frozen-feature and pixel baselines of a run and write ``RUN_DIR/baseline.json``.

    Args:
        run_dir: a run directory (its ``config.yaml``; ``summary.json`` when finished).
        device: where the initial network computes the features ("cpu", "cuda", "auto").
        batch_size: images per forward pass.
        pixels: also fit the pixel baselines when the images are small.
        max_unlabelled: unlabelled images label spreading may use (a seeded sample).
        data: the run's :class:`~comatch.data.RunData` when the caller has it (the trainer);
            None: built from the config.
        write: write ``baseline.json``.

    Returns:
        The content of ``baseline.json``: ``run`` (its test accuracies), ``features``
        (source, dimension and accuracies), ``pixels`` (accuracies, or None and why not),
        ``best_baseline`` and ``gain_over_best`` (run EMA accuracy minus the best baseline).

    Raises:
        UserError: not a run directory, or its data cannot be read.
    """
    import torch

    from comatch.data.preprocessing import Normalizer, eval_view, run_data
    from comatch.training.runtime import atomic_write_text

    run_dir, started = Path(run_dir), time.perf_counter()
    config = read_run_config(run_dir)
    data = data if data is not None else run_data(config)
    target = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          ("cpu" if device == "auto" else device))
    in_channels = config.model.in_channels or data.channels
    model, source = _initial_network(config, data.num_classes, in_channels)
    model = model.to(target)
    view = eval_view(config, data.image_size)
    normalize = Normalizer(data.mean, data.std, in_channels, target)
    train_x, train_y = _features(model, data.labelled, view, normalize, batch_size)
    test_x, test_y = _features(model, data.test, view, normalize, batch_size)
    features = {"source": source, "arch": config.model.arch, "dim": int(train_x.shape[1]),
                **fit_feature_baselines(train_x, train_y, test_x, test_y, config.seed)}
    result: dict[str, Any] = {
        "run": _run_accuracy(run_dir), "num_labelled": len(train_y), "num_test": len(test_y),
        "features": features, "pixels": _pixel_part(data, pixels, max_unlabelled, config.seed),
    }
    result.update(_best(result))
    result["seconds"] = round(time.perf_counter() - started, 2)
    if write:
        atomic_write_text(run_dir / "baseline.json", json.dumps(result, indent=2) + "\n")
    return result


def _pixel_part(data: Any, wanted: bool, max_unlabelled: int, seed: int) -> dict[str, Any]:
    """The pixel baselines of small images, or why they were not run."""
    values = data.channels * data.image_size**2
    if not wanted:
        return {"skipped": "not requested"}
    if values > PIXEL_LIMIT:
        return {"skipped": f"images of {values} values exceed {PIXEL_LIMIT}: pixels are no useful features"}
    train_x, train_y = _pixels(data.labelled)
    test_x, test_y = _pixels(data.test)
    count = min(max_unlabelled, len(data.unlabelled))
    index = np.sort(np.random.default_rng(seed).choice(len(data.unlabelled), size=count, replace=False))
    unlabelled_x = _pixels(data.unlabelled, index)[0] if count else None
    scores = fit_pixel_baselines(train_x, train_y, test_x, test_y, unlabelled_x, seed)
    return {**scores, "unlabelled_used": count}


def _best(result: dict[str, Any]) -> dict[str, Any]:
    """The best baseline accuracy, its name, and how far the run's EMA accuracy is above it."""
    scores = {f"features.{k}": v for k, v in result["features"].items() if isinstance(v, float)}
    scores.update({f"pixels.{k}": v for k, v in result["pixels"].items() if isinstance(v, float)})
    if not scores:
        return {"best_baseline": None, "gain_over_best": None}
    name = max(scores, key=lambda k: scores[k])
    run = result["run"]["test_accuracy_ema"]
    gain = None if run is None else round(run - scores[name], 6)
    return {"best_baseline": {"name": name, "test_accuracy": scores[name]}, "gain_over_best": gain}


def format_table(result: dict[str, Any]) -> str:
    """The baselines and the run as aligned text lines, best first within each part."""
    lines = [f"labelled images: {result['num_labelled']}, test images: {result['num_test']}"]
    run = result["run"]
    if run["test_accuracy_ema"] is not None:
        lines.append(f"{'CoMatch run (EMA)':34s} {run['test_accuracy_ema']:.2%}")
    feats = result["features"]
    for key, value in result["features"].items():
        if isinstance(value, float):
            lines.append(f"{key + ' on frozen features':34s} {value:.2%}")
    lines.append(f"  (features: {feats['arch']}, {feats['dim']} dims, {feats['source']})")
    pix = result["pixels"]
    if "skipped" in pix:
        lines.append(f"pixel baselines skipped: {pix['skipped']}")
    for key, value in pix.items():
        if isinstance(value, float):
            lines.append(f"{key + ' on pixels':34s} {value:.2%}")
    if result.get("gain_over_best") is not None:
        lines.append(f"run minus best baseline ({result['best_baseline']['name']}): "
                     f"{result['gain_over_best'] * 100:+.1f} points")
    return "\n".join(lines)


def cmd_baseline(args: argparse.Namespace) -> int:
    """Run the baselines of a run directory, print them and write them as JSON."""
    import sys

    from comatch.data.preprocessing import run_data
    from comatch.tools.inference.images import data_skipped_line
    from comatch.tools.outputs import writable_file
    from comatch.training.runtime import atomic_write_text

    if args.out is not None:
        writable_file(args.out, "--out", "baseline.json")
    data = run_data(read_run_config(args.run_dir))
    if data_skipped_line(data):
        print(data_skipped_line(data), file=sys.stderr)
    result = run_baselines(args.run_dir, device=args.device, pixels=args.pixels, max_unlabelled=args.max_unlabelled,
                           data=data, write=args.out is None)
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"written to {args.out or args.run_dir / 'baseline.json'}")
    return 0
