"""The command line: a tiny real run, and one clear line with exit code 2 for bad input."""

import json
import re
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


# ------------------------------------------------------------------ conventions
def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    shown = subprocess.run([sys.executable, "-m", "comatch", "--version"], capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.strip() == f"comatch {version('comatch')}"


def test_a_bare_comatch_prints_help_and_trains_nothing(tmp_path):
    bare = subprocess.run([sys.executable, "-m", "comatch"], capture_output=True, text=True, cwd=tmp_path)
    assert bare.returncode == 0 and bare.stdout.startswith("usage: comatch")
    assert "train" in bare.stdout and "--version" in bare.stdout
    assert list(tmp_path.iterdir()) == []  # no runs/ folder


def test_labelled_flags_take_both_spellings():
    from comatch.cli import build_parser, data_overrides

    parser = build_parser()
    us = parser.parse_args(["train", "--labeled", "a", "--unlabeled", "b", "--labeled-list", "c"])
    british = parser.parse_args(["train", "--labelled", "a", "--unlabelled", "b", "--labelled-list", "c"])
    assert data_overrides(us) == data_overrides(british)
    assert any(o.startswith("data.labeled=") for o in data_overrides(british))
    assert parser.parse_args(["baseline", "run", "--max-unlabeled", "7"]).max_unlabelled == 7
    assert parser.parse_args(["baseline", "run", "--max-unlabelled", "8"]).max_unlabelled == 8


def test_a_config_key_spelt_the_other_way_gets_a_hint(capsys):
    assert main(["train", "--show-config", "data.labelled=x"]) == 2
    assert capsys.readouterr().err.strip() == ("comatch: error: unknown config key 'data.labelled'; "
                                               "the field is spelt 'data.labeled'")


@pytest.mark.parametrize("command", [
    ["train"], ["evaluate", "run"], ["predict", "run", "x.png"], ["export", "run", "--format", "onnx"],
    ["report", "run"], ["baseline", "run"], ["suggest", "run", "--n", "3"]])
def test_every_command_that_writes_takes_dash_o(command, tmp_path):
    from comatch.cli import build_parser

    args = build_parser().parse_args([*command, "-o", str(tmp_path / "x")])
    assert args.out == tmp_path / "x"


def test_shared_options_are_declared_once():
    from pathlib import Path

    import comatch

    sources = "".join(p.read_text() for p in Path(comatch.__file__).parent.rglob("*.py"))
    for flag in ("--device", "--batch-size", "--out", "--ema"):
        assert len(re.findall(rf'add_argument\((?:"-\w", )?"{flag}"', sources)) == 1, flag


def test_show_config_describe_puts_descriptions_above_the_same_values(capsys):
    assert main(["train", "--show-config", "--seed", "3"]) == 0
    plain = capsys.readouterr().out
    assert main(["train", "--show-config", "--describe", "--seed", "3"]) == 0
    described = capsys.readouterr().out
    assert yaml.safe_load(described) == yaml.safe_load(plain)
    lines = described.splitlines()
    lr = next(i for i, line in enumerate(lines) if line.strip().startswith("lr:"))
    assert lines[lr - 1].strip().startswith("# Initial learning rate")
    assert sum(line.lstrip().startswith("#") for line in lines) > 100


def test_images_per_sec_leaves_evaluations_and_checkpoints_out(tmp_path, monkeypatch):
    """An evaluation or a checkpoint between two log lines is not training: the rate logged
    after it counts only the steps' time. On the trainer's clock here each step takes 0.5 s and
    each evaluation and checkpoint 1,000 s, so the rate is the images of a step over 0.5 s."""
    from comatch.training import pace
    from comatch.training import trainer as trainer_module

    clock = {"now": 0.0}
    images_per_step = []
    Trainer = trainer_module.Trainer
    step, evaluate, save = Trainer.training_step, Trainer.evaluate, Trainer.save_checkpoint

    def timed(method, seconds):
        def run(self, *args, **kwargs):
            clock["now"] += seconds
            images_per_step.append(self.images_per_step)
            return method(self, *args, **kwargs)
        return run

    monkeypatch.setattr(pace, "now", lambda: clock["now"])
    monkeypatch.setattr(Trainer, "training_step", timed(step, 0.5))
    monkeypatch.setattr(Trainer, "evaluate", timed(evaluate, 1000.0))
    monkeypatch.setattr(Trainer, "save_checkpoint", timed(save, 1000.0))
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "--iterations", "6", "run.eval_every=2",
                 "run.checkpoint_every=2"]) == 0
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = {r["step"]: r["images_per_sec"] for r in train if r["kind"] == "train"}
    assert list(rates) == [2, 4, 6]
    assert list(rates.values()) == pytest.approx([images_per_step[0] / 0.5] * 3), rates
