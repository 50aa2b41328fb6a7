"""Never lose a run: exact resume after SIGKILL, SIGTERM, damaged checkpoints, NaNs, bad resumes."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from comatch import CoMatchCriterion
from comatch.cli import main

TINY = ["run.log_every=1", "run.eval_every=5", "run.checkpoint_every=3", "data.num_workers=0",
        "optim.batch_size=4", "optim.mu=2", "run.tensorboard=false", "run.report=false"]


def train_cmd(out: Path, iterations: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "comatch", "train", "--out", str(out), "--iterations", str(iterations), *TINY, *extra]


def resume_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "comatch", "train", "--resume", str(out), *extra]


def logged_steps(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


def run_until(cmd: list[str], out: Path, step: int, sig: int, timeout: float = 120) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while logged_steps(out) < step:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not reach the step in time"
        time.sleep(0.02)
    proc.send_signal(sig)
    return proc


def comparable_metrics(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in records]


def final_state(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.pt", weights_only=False)


def test_sigkill_twice_then_resume_is_bit_identical(tmp_path):
    total = 30
    reference = tmp_path / "reference"
    subprocess.run(train_cmd(reference, total), check=True, capture_output=True)

    killed = tmp_path / "killed"
    for kill_after in (7, 17):
        cmd = train_cmd(killed, total) if kill_after == 7 else resume_cmd(killed)
        proc = run_until(cmd, killed, kill_after, signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        assert logged_steps(killed) < total, "the kill must land before the end"
    done = subprocess.run(resume_cmd(killed), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    a, b = final_state(reference), final_state(killed)
    assert a["step"] == b["step"] == total
    for part in ("model", "ema", "method"):
        for key, tensor in a[part].items():
            assert torch.equal(tensor, b[part][key]), f"{part}.{key} differs"
    assert comparable_metrics(reference) == comparable_metrics(killed)
    resumes = [json.loads(line) for line in (killed / "resumes.jsonl").read_text().splitlines()]
    assert len(resumes) == 2 and all(r["step"] % 3 == 0 for r in resumes)


def test_sigterm_finishes_the_step_checkpoints_and_exits_143(tmp_path):
    out = tmp_path / "run"
    proc = run_until(train_cmd(out, 2000), out, 4, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr  # 128 + SIGTERM: `train && export` exports nothing half-trained
    assert f"comatch train --resume {out}" in stdout
    state = final_state(out)
    assert 4 <= state["step"] < 2000
    assert logged_steps(out) == state["step"], "the checkpoint is at the last finished step"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] is True and summary["iterations"] == state["step"]


def test_truncated_newest_checkpoint_falls_back_to_previous(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--iterations", "7", *TINY]) == 0
    folder = out / "checkpoints"
    previous_step = torch.load(folder / "previous.pt", weights_only=False)["step"]
    assert previous_step == 6
    data = (folder / "last.pt").read_bytes()
    (folder / "last.pt").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--iterations", "9"]) == 0
    err = capsys.readouterr().err
    assert "last.pt is damaged" in err and "trying the previous checkpoint" in err
    resumes = [json.loads(line) for line in (out / "resumes.jsonl").read_text().splitlines()]
    assert resumes[-1]["step"] == 6 and resumes[-1]["checkpoint"] == "previous.pt"
    assert resumes[-1]["changes"] == {"optim.iterations": [7, 9]}
    assert final_state(out)["step"] == 9


def test_resume_refuses_changes_to_the_runs_meaning(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--iterations", "3", *TINY]) == 0
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--method", "fixmatch", "fixmatch.threshold=0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "fixmatch.threshold (0.95 -> 0.5)" in err and "method ('comatch' -> 'fixmatch')" in err
    assert "\n" not in err
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before


def test_resume_of_a_directory_without_checkpoint(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--resume", str(empty)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    (empty / "config.yaml").write_text("preset: digits\n")
    assert main(["train", "--resume", str(empty)]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err


def poison_loss_at(monkeypatch, bad_calls: set[int]) -> None:
    original = CoMatchCriterion.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] in bad_calls:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(CoMatchCriterion, "forward", forward)


def test_nan_step_is_skipped_and_counted(tmp_path, monkeypatch):
    poison_loss_at(monkeypatch, {3})
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--iterations", "6", *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_steps"] == 1
    assert all(torch.isfinite(t).all() for t in final_state(out)["model"].values() if t.is_floating_point())


@pytest.mark.parametrize("policy, bad, stop_step", [("stop", {5}, 5), ("skip", {4, 5, 6}, 6)])
def test_nan_policy_stops_with_last_good_checkpoint_intact(tmp_path, monkeypatch, capsys, policy, bad, stop_step):
    poison_loss_at(monkeypatch, bad)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--iterations", "10", *TINY, f"run.nonfinite={policy}"]) == 1
    err = capsys.readouterr().err
    assert f"not finite at step {stop_step}" in err and "last good checkpoint" in err
    state = final_state(out)
    assert state["step"] == 3
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_disk_full_while_checkpointing_keeps_previous(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert main(["train", "--out", str(out), "--iterations", "9", *TINY]) == 2
    assert "no space left" in capsys.readouterr().err
    files = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert files == ["last.pt"], files
    assert final_state(out)["step"] == 3
