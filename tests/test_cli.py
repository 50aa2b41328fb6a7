"""The command line: a tiny real run, and one clear line with exit code 2 for bad input."""

import json
import subprocess
import sys

import pytest
import yaml

from comatch.cli import main

TINY = ["--iterations", "4", "run.log_every=2", "run.eval_every=2", "data.num_workers=0",
        "optim.batch_size=4", "optim.mu=2"]


@pytest.mark.parametrize("method", ["comatch", "fixmatch", "supervised"])
def test_train_writes_a_complete_run_directory(tmp_path, capsys, method):
    out = tmp_path / "run"
    assert main(["train", "--method", method, "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("method", "preset", "seed", "iterations", "test_accuracy", "test_accuracy_ema",
                "best_test_accuracy", "wall_seconds"):
        assert key in summary, key
    assert summary["method"] == method and summary["iterations"] == 4 and summary["preset"] == "digits"
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["method"] == method and config["optim"]["mu"] == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    expected = {"loss", "loss_x", "loss_u", "loss_c", "lr", "images_per_sec"}
    if method == "comatch":
        expected |= {"mask_rate", "graph_edges", "pseudo_label_acc"}
    assert expected <= set(train[0]), set(train[0])
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "tensorboard").is_dir()
    assert len(json.loads((out / "labelled.json").read_text())) == 40
    assert "test accuracy" in capsys.readouterr().out


def test_same_seed_same_labelled_subset_and_metrics(tmp_path):
    runs = []
    for name in ("a", "b"):
        assert main(["train", "--out", str(tmp_path / name), *TINY]) == 0
        runs.append((tmp_path / name / "metrics.jsonl").read_text().splitlines())
    strip = lambda lines: [{k: v for k, v in json.loads(l).items() if k != "images_per_sec"} for l in lines]  # noqa: E731,E741
    assert strip(runs[0]) == strip(runs[1])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["optim.nope=1"], "unknown config key 'optim.nope'"),
        (["optim.lr=-1"], "optim.lr"),
        (["optim.lr=fast"], "optim.lr"),
        (["comatch.threshold=1.5"], "comatch.threshold"),
        (["comatch.temperature=0"], "comatch.temperature"),
        (["optim.mu=0"], "optim.mu"),
        (["comatch.bank_size=10"], "smaller than one step's entries"),
        (["--method", "fixmatch", "comatch.threshold=0.7"],
         "comatch.threshold does not apply to method fixmatch; set fixmatch.threshold=0.7 instead"),
        (["data.labels_per_class=500"], "labels per class"),
        (["novalue"], "key=value"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "data.num_workers=0", "--iterations", "1", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("comatch: error:") and message in err and "\n" not in err
    assert not (out / "summary.json").exists()


def test_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("precious: true\n")
    assert main(["train", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == "precious: true\n"


def test_python_dash_m_entry_point_lists_presets_and_errors_without_traceback():
    ok = subprocess.run([sys.executable, "-m", "comatch", "presets"], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("digits")
    bad = subprocess.run([sys.executable, "-m", "comatch", "train", "optim.lr=-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_show_config_prints_resolved_overrides(capsys):
    assert main(["train", "--show-config", "--seed", "3", "comatch.alpha=0.8"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["seed"] == 3 and shown["comatch"]["alpha"] == 0.8 and shown["method"] == "comatch"
