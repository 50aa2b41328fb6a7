"""`comatch baseline`: scikit-learn baselines on frozen features and pixels, beside the run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from comatch.cli import main
from comatch.tools.baseline import fit_feature_baselines, fit_pixel_baselines, run_baselines


def test_separable_features_give_every_baseline_full_accuracy():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0], [0.0, 50.0, 0.0]])
    train_y, test_y = np.repeat(np.arange(3), 5), np.repeat(np.arange(3), 20)
    train_x = centres[train_y] + rng.normal(size=(15, 3))
    test_x = centres[test_y] + rng.normal(size=(60, 3))
    assert fit_feature_baselines(train_x, train_y, test_x, test_y) == {
        "logistic_regression": 1.0, "knn_1": 1.0, "knn_5": 1.0}


def test_nearest_neighbour_by_hand():
    # train: 0 -> class 0, 10 -> class 1; test 1 (near 0), 9 (near 10), 6 (near 10, but class 0)
    train_x, train_y = np.array([[0.0], [10.0]]), np.array([0, 1])
    test_x, test_y = np.array([[1.0], [9.0], [6.0]]), np.array([0, 1, 0])
    result = fit_feature_baselines(train_x, train_y, test_x, test_y)
    assert result["knn_1"] == pytest.approx(2 / 3)
    assert "knn_5" not in result  # k larger than the 2 labelled rows is skipped


def test_label_spreading_follows_the_unlabelled_chains_where_1nn_cannot():
    # two parallel chains of points 1 apart, 5 apart from each other; one label at opposite ends
    xs = np.arange(8, dtype=float)
    chain0, chain1 = np.stack([xs, 0 * xs], 1), np.stack([xs, 5 + 0 * xs], 1)
    train_x, train_y = np.array([[0.0, 0.0], [7.0, 5.0]]), np.array([0, 1])
    unlabelled = np.concatenate([chain0[1:-1], chain1[1:-1]])
    test_x, test_y = np.array([[7.0, 0.0], [0.0, 5.0]]), np.array([0, 1])
    result = fit_pixel_baselines(train_x, train_y, test_x, test_y, unlabelled)
    assert result["knn_1"] == 0.0  # each test point is 5 from the other class's label, 7 from its own
    assert result["label_spreading"] == 1.0
    assert "label_spreading" not in fit_pixel_baselines(train_x, train_y, test_x, test_y, None)


def test_baseline_command_writes_the_json_beside_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--iterations", "2", "data.num_workers=0", "run.eval_every=2",
                 "run.tensorboard=false", "run.report=false"]) == 0
    capsys.readouterr()
    assert main(["baseline", str(run), "--max-unlabelled", "300"]) == 0
    out = capsys.readouterr().out
    result = json.loads((run / "baseline.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert result["run"]["test_accuracy_ema"] == summary["test_accuracy_ema"]
    assert result["num_labelled"] == 40 and result["num_test"] == summary.get("num_test", result["num_test"])
    assert result["features"]["source"] == "random initialisation (seed 0)" and result["features"]["dim"] > 0
    assert set(result["pixels"]) == {"logistic_regression", "knn_1", "label_spreading", "unlabelled_used"}
    assert result["pixels"]["unlabelled_used"] == 300
    scores = [v for part in ("features", "pixels") for k, v in result[part].items()
              if k in ("logistic_regression", "knn_1", "knn_5", "label_spreading")]
    assert all(0.0 <= s <= 1.0 for s in scores) and result["best_baseline"]["test_accuracy"] == max(scores)
    assert result["gain_over_best"] == pytest.approx(summary["test_accuracy_ema"] - max(scores), abs=1e-6)
    assert "CoMatch run (EMA)" in out and "label_spreading on pixels" in out
    again = run_baselines(run, pixels=False, write=False)  # rebuilt with the run's seed: same features
    assert again["features"] == result["features"] and again["pixels"] == {"skipped": "not requested"}
    assert main(["baseline", str(run), "--no-pixels", "-o", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["features"] == result["features"]
    assert json.loads((run / "baseline.json").read_text()) == result  # the run's own file left as it was


def test_baseline_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    assert main(["baseline", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"comatch: error: {tmp_path} holds no config.yaml; give a run directory written by `comatch train`"


def test_the_report_shows_the_run_beside_its_baselines():
    from comatch.tools.report.html import baseline_section

    found = {"run": {"test_accuracy_ema": 0.9593}, "features": {"source": "random", "dim": 64, "knn_1": 0.2072},
             "pixels": {"label_spreading": 0.8676, "unlabelled_used": 10000},
             "best_baseline": {"name": "pixels.label_spreading", "test_accuracy": 0.8676}, "gain_over_best": 0.0917}
    page = baseline_section(found)
    assert "this run (EMA model)" in page and "pixels: label_spreading" in page and "features: knn_1" in page
    assert "+9.2 points from the best baseline (pixels.label_spreading)" in page
    assert "unlabelled_used" not in page and baseline_section({}) == ""
