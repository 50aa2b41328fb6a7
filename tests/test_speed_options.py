"""Speed options: automatic mixed precision and channels-last choices, torch.compile."""

import json

import torch

from comatch.cli import main
from comatch.training.precision import resolve_amp, resolve_channels_last


def test_auto_precision_and_layout_stay_off_on_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == "none"
    assert resolve_amp("bf16", cpu) == "bf16" and resolve_amp("none", cpu) == "none"
    assert resolve_channels_last(None, cpu) is False
    assert resolve_channels_last(True, cpu) is True


def test_compiled_step_trains_and_matches_eager_loss(tmp_path):
    common = ["--iterations", "2", "run.log_every=1", "run.eval_every=2", "data.num_workers=0",
              "optim.batch_size=4", "optim.mu=1", "run.tensorboard=false", "run.report=false"]
    losses = {}
    for name, extra in (("eager", []), ("compiled", ["run.compile=true"])):
        out = tmp_path / name
        assert main(["train", "--out", str(out), *common, *extra]) == 0
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses["compiled"]) == 2
    for eager, compiled in zip(losses["eager"], losses["compiled"]):
        assert abs(eager - compiled) < 1e-3 * max(1.0, abs(eager))


def test_grayscale_data_feeds_an_rgb_network_replicated_after_augmentation(tmp_path, capsys):
    import torch

    from comatch import config as cfg
    from comatch.training.trainer import Trainer

    config = cfg.build_config(overrides=["model.arch=wrn10_1", "model.in_channels=3", "data.image_size=16",
                                         "data.num_workers=0", "optim.batch_size=4", "optim.mu=1"])
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.data.channels == 1 and trainer.model.encoder is not None
    gray = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    rgb = trainer.normalize(gray)
    assert rgb.shape == (2, 3, 16, 16) and torch.equal(rgb[:, 0], rgb[:, 2])
    out = tmp_path / "cli"
    assert main(["train", "--out", str(out), "--iterations", "2", "model.arch=wrn10_1", "model.in_channels=3",
                 "data.image_size=16", "data.num_workers=0", "optim.batch_size=4", "optim.mu=1",
                 "run.eval_every=2", "run.report=false", "run.tensorboard=false"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == summary["test_accuracy_ema"]


def test_deterministic_mode_gives_the_same_run_on_the_cpu(tmp_path):
    common = ["--iterations", "2", "run.log_every=1", "run.eval_every=2", "data.num_workers=0",
              "optim.batch_size=4", "optim.mu=1", "run.tensorboard=false", "run.report=false"]
    try:
        assert main(["train", "--out", str(tmp_path / "a"), *common, "run.deterministic=true"]) == 0
    finally:
        torch.use_deterministic_algorithms(False)
    assert main(["train", "--out", str(tmp_path / "b"), *common]) == 0
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
