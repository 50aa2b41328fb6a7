"""Automatic settings for the user's own folders: network, batch, run-length settings, workers."""

from __future__ import annotations

import os

import pytest

from comatch.config import build_config
from comatch.training.defaults import (
    Situation, activation_mib, choose_defaults, choose_network, choose_workers, default_workers, run_length_settings,
    step_images, workers_for,
)

LAPTOP_DIGITS = Situation(device="cpu", cpu_cores=2, image_size=28, channels=1, num_labelled=100,
                          num_unlabelled=20000, iterations=1500)


def test_small_grayscale_images_on_two_cores():
    chosen = choose_defaults(LAPTOP_DIGITS)
    assert chosen.overrides == {
        "data.channels": 1, "data.image_size": 28, "model.arch": "wrn10_1", "views.crop_padding": 4,
        "optim.batch_size": 16, "optim.mu": 7,
        "model.bn_momentum": pytest.approx(20 / 1500, abs=1e-5), "optim.ema_decay": pytest.approx(1 - 10 / 1500, abs=1e-5),
        "run.eval_every": 150, "run.log_every": 50, "views.flip": True, "views.rotate": True, "data.num_workers": 0,
        "run.threads": 2,
    }
    assert len(chosen.reasons) == len(chosen.overrides)
    assert "model.arch=wrn10_1: small WideResNet on a CPU (28 px)" in chosen.reasons


@pytest.mark.parametrize("device,size,classes,arch,side", [
    ("cpu", 8, 10, "digits_cnn", 8),
    ("cpu", 32, 10, "wrn10_1", 32),
    ("cpu", 12, 10, "digits_cnn", 12),
    ("cpu", 64, 10, "wrn10_1", 64),
    ("cpu", 224, 10, "wrn10_1", 64),  # scaled down on a CPU
    ("cuda", 32, 10, "wrn28_2", 32),
    ("cuda", 32, 100, "wrn28_8", 32),
    ("cuda", 96, 10, "wrn37_2", 96),
    ("cuda", 128, 1000, "resnet50", 128),
])
def test_network_by_device_and_image_size(device, size, classes, arch, side):
    assert choose_network(device, size, classes)[:2] == (arch, side)


def test_cpu_batch_keeps_activations_within_budget_and_the_data():
    big = Situation("cpu", 2, 64, 3, 100, 20000, 2000)
    chosen = choose_defaults(big)
    assert [chosen.overrides[k] for k in ("model.arch", "optim.batch_size", "optim.mu")] == ["wrn10_1", 16, 7]
    assert activation_mib("wrn10_1", 64, step_images(16, 7, 3)) == pytest.approx(1.6 * 4 * 352)  # 2253 <= 2500 MiB
    heavy = choose_defaults(big, {"model.arch": "resnet18"})
    b, mu = heavy.overrides["optim.batch_size"], heavy.overrides["optim.mu"]
    assert (b, mu) == (8, 3)  # (8, 5): 128 images x 19.6 MiB = 2509 MiB > 2500
    assert activation_mib("resnet18", 64, step_images(b, mu, 3)) == pytest.approx(19.6 * 80)
    few = choose_defaults(Situation("cpu", 2, 28, 1, num_labelled=6, num_unlabelled=20, iterations=100))
    assert few.overrides["optim.batch_size"] == 6 and few.overrides["optim.mu"] == 3  # 20 // 6


def test_explicit_settings_win_and_steer_the_other_choices():
    chosen = choose_defaults(LAPTOP_DIGITS, {"model.arch": "resnet18", "data.image_size": 64, "optim.batch_size": 4,
                                             "optim.iterations": 200})
    assert not {"model.arch", "data.image_size", "optim.batch_size"} & set(chosen.overrides)
    assert chosen.overrides["optim.mu"] == 7  # 4 x (1 + 7 x 3) = 88 images x 19.6 MiB fits 2500 MiB
    assert chosen.overrides["run.eval_every"] == 20  # from the user's 200 steps
    assert "model.arch=resnet18: your setting" in chosen.reasons
    forced = choose_defaults(LAPTOP_DIGITS, {"optim.batch_size": 64, "model.arch": "resnet18", "data.image_size": 64})
    assert forced.overrides["optim.mu"] == 1  # nothing fits: the smallest mu for the user's batch


def test_the_batch_reason_describes_the_step_that_runs():
    """The reason names the images a step really takes: with the user's ``mu``, and after the
    data's caps (it once described the chooser's own 16 x (1 + 7 x 3) = 352 either way)."""
    own_mu = choose_defaults(LAPTOP_DIGITS, {"optim.mu": 3})
    assert "optim.mu" not in own_mu.overrides and own_mu.overrides["optim.batch_size"] == 16
    # 16 x (1 + 3 x 3) = 160 images x 1.6 MiB x (28 / 32)^2
    assert "optim.batch_size=16: a CPU step of 160 images needs about 196 MiB of activations" in own_mu.reasons
    heavy = choose_defaults(Situation("cpu", 2, 64, 3, 100, 20000, 2000), {"model.arch": "resnet18", "optim.mu": 1})
    assert heavy.overrides["optim.batch_size"] == 16  # 16 x (1 + 1 x 3) = 64 images x 19.6 MiB fit
    few = choose_defaults(Situation("cpu", 2, 32, 1, num_labelled=6, num_unlabelled=20, iterations=100))
    assert "optim.batch_size=6: a CPU step of 60 images needs about 96 MiB of activations" in few.reasons  # 6 x 10


def test_run_length_settings_match_the_paper_for_long_runs_and_shrink_for_short_ones():
    long = {k: v for k, (v, _) in run_length_settings(1 << 20).items()}
    assert long["model.bn_momentum"] == 0.001 and long["optim.ema_decay"] == 0.999
    short = {k: v for k, (v, _) in run_length_settings(20).items()}
    assert short == {"model.bn_momentum": 0.1, "optim.ema_decay": 0.9, "run.eval_every": 2, "run.log_every": 1}


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16, 64])
def test_workers_and_threads_never_exceed_the_cores(cores):
    for device in ("cpu", "cuda"):
        workers, threads, _ = choose_workers(device, cores)
        assert 1 + 2 * workers <= max(cores, 1) and workers <= 6
        if threads is not None:
            assert 2 * workers + threads <= max(cores, 1) and threads >= 1


def test_the_choices_are_valid_config_overrides():
    chosen = choose_defaults(LAPTOP_DIGITS)
    config = build_config("folder", overrides=chosen.as_override_strings())
    assert config.model.arch == "wrn10_1" and config.data.channels == 1 and config.run.threads == 2


def test_own_folder_defaults_from_the_command_line(tmp_path, capsys):
    """What `comatch train --labeled ... --unlabeled ...` resolves to: settings from the files and
    the machine, a CPU budget, the user's own settings kept; the momentum variant too."""
    import yaml

    from datafiles import write_class_folder

    from comatch.cli import main

    write_class_folder(tmp_path / "lab", ["a", "b"], 3, size=(20, 24))
    write_class_folder(tmp_path / "unl", ["x"], 6, size=(20, 24))
    common = ["train", "--labeled", str(tmp_path / "lab"), "--unlabeled", str(tmp_path / "unl"), "--show-config",
              "run.device=cpu"]
    assert main([*common, "optim.mu=3", "comatch.momentum=0.99"]) == 0
    out = capsys.readouterr().out
    shown = yaml.safe_load(out[out.index("preset:"):])
    assert shown["data"]["image_size"] == 20 and shown["data"]["channels"] == 3, "from the files"
    assert shown["model"]["arch"] == "wrn10_1" and shown["optim"]["mu"] == 3, "the user's mu is kept"
    assert shown["run"]["budget"] == "15m" and "run.eval_every" in shown["run"]["fit_to_length"]
    assert "defaults: data.image_size=20: from the files" in out
    assert shown["description"].startswith("your own folders (--labeled, --unlabeled): wrn10_1 at 20 px")
    assert "ResNet-18" not in out  # the folder preset's own line names a network this run does not use
    assert main([*common, "--iterations", "50"]) == 0
    shown = yaml.safe_load((out := capsys.readouterr().out)[out.index("preset:"):])
    assert shown["run"]["budget"] is None and shown["optim"]["iterations"] == 50


def test_a_budget_the_user_gives_fits_the_length_settings_too(tmp_path, capsys):
    """`--budget 2m` on own folders gets what the default budget gets: a provisional length to
    choose the settings with, and the settings that depend on the length (evaluations, EMA and
    BatchNorm horizons) fitted again once the budget fixes the steps; the user's own kept."""
    import yaml

    from datafiles import write_class_folder

    from comatch.cli import main

    write_class_folder(tmp_path / "lab", ["a", "b"], 3, size=(20, 24))
    write_class_folder(tmp_path / "unl", ["x"], 6, size=(20, 24))
    common = ["train", "--labeled", str(tmp_path / "lab"), "--unlabeled", str(tmp_path / "unl"), "--show-config",
              "run.device=cpu", "--budget", "2m"]
    assert main(common) == 0
    out = capsys.readouterr().out
    shown = yaml.safe_load(out[out.index("preset:"):])
    assert shown["run"]["budget"] == "2m"
    assert set(shown["run"]["fit_to_length"]) == {"model.bn_momentum", "optim.ema_decay", "run.eval_every",
                                                  "run.log_every"}
    assert shown["run"]["eval_every"] < 2000, "evaluations spread over a provisional length, not the preset's 20,000 steps"
    assert main([*common, "optim.ema_decay=0.99"]) == 0
    shown = yaml.safe_load((out := capsys.readouterr().out)[out.index("preset:"):])
    assert "optim.ema_decay" not in shown["run"]["fit_to_length"] and shown["optim"]["ema_decay"] == 0.99


def test_preset_runs_augment_in_the_training_process_on_small_cpus():
    """A preset run (no folder defaults) picks its workers with the same rule: none on a CPU
    with up to 4 cores, where loader workers would take the cores the network needs."""
    assert [workers_for("cpu", n) for n in (1, 2, 4, 5, 9, 64)] == [0, 0, 0, 1, 2, 2]
    assert [workers_for("cuda", n) for n in (1, 2, 3, 8, 64)] == [0, 0, 1, 3, 6]
    assert default_workers(3, "cpu") == 3  # asked for: as asked
    assert default_workers(None, "cpu") == workers_for("cpu", os.cpu_count() or 1)
