"""Speed options: automatic mixed precision and channels-last choices, torch.compile."""

import json

import torch

from comatch.cli import main
from comatch.precision import resolve_amp, resolve_channels_last


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
