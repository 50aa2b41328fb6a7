"""Run length: the budget turned into steps, the start block and the first ETA in piped output."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from comatch.cli import main
from comatch.config import parse_duration
from comatch.training.pace import Costs, duration, steps_within, too_long_advice


def test_steps_within_a_budget_by_hand():
    costs = Costs(step=1.0, evaluation=5.0, finish=3.0)
    # 67 steps: 67 s + 4 evaluations (after 20, 40, 60 and at the end) 20 s + 3 s = 90 s, from 10 s: 100 s
    assert costs.remaining(0, 67, 20) == 90.0
    assert steps_within(100.0, 10.0, 0, costs, 20) == 67
    assert steps_within(100.0, 10.0, 5, costs, 20) == 72, "5 steps done within the 10 s: 67 more fit"
    assert steps_within(5.0, 10.0, 5, costs, 20) == 5, "never below what is done"
    assert steps_within(1000.0, 0.0, 0, Costs(step=0.5), 1000) == 2000


def test_durations_and_the_too_long_warning():
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90 and parse_duration("2d") == 172800
    with pytest.raises(ValueError, match="write it like"):
        parse_duration("15")
    assert duration(3725) == "1:02:05" and duration(90000) == "1 day, 1:00:00"
    assert too_long_advice(3600, 1000, 3.6, "cpu") is None
    advice = too_long_advice(2 * 86400, 48000, 3.6, "cpu")
    assert "2 days" in advice and "--iterations 24000" in advice and "--device cuda" in advice


def test_budget_is_met_within_ten_percent(tmp_path):
    out = tmp_path / "run"
    t0 = time.perf_counter()
    assert main(["train", "--budget", "25s", "--out", str(out), "run.report=false", "run.tensorboard=false",
                 "data.num_workers=0", "run.eval_every=100"]) == 0
    wall = time.perf_counter() - t0
    assert 0.6 * 25 <= wall <= 1.1 * 25, wall  # met: at most 10% over, and most of it used
    summary = json.loads((out / "summary.json").read_text())
    saved = (out / "config.yaml").read_text()
    assert f"iterations: {summary['iterations']}" in saved and "budget: 25s" in saved
    assert not summary["stopped"] and summary["iterations"] > 5


def test_start_block_and_first_eta_come_first_in_piped_output(tmp_path):
    cmd = [sys.executable, "-m", "comatch", "train", "--iterations", "8", "--out", str(tmp_path / "run"),
           "run.report=false", "run.tensorboard=false", "data.num_workers=0", "run.log_every=50"]
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "COMATCH_OPENMP_CHOSEN")}
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # the user's choice, which the block names
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "comatch: comatch on digits, seed 0"
    block = "\n".join(lines[:8])
    assert re.search(r"device   cpu \(\d+ threads; as the environment sets: OMP_WAIT_POLICY=PASSIVE; "
                     r"fast numerics on [^)]+\), ", block), block
    for part in ("labelled 40, unlabelled", "10 classes; 8x8 px, 1 channel(s)", "digits_cnn", "device   cpu",
                 "16 labelled + 112 unlabelled x 3 views: 352 images per step", "steps    8;", f"run dir  {tmp_path / 'run'}"):
        assert part in block, part
    timing = next(i for i, line in enumerate(lines) if line.startswith("timing: "))
    first_log = next(i for i, line in enumerate(lines) if line.startswith("[train]"))
    assert timing < first_log and "s per step (steps 2-5)" in lines[timing] and "for the 3 steps left" in lines[timing]
    assert "\r" not in proc.stdout and "\x1b" not in proc.stdout


def _budget_run_with_slower_steps(tmp_path, monkeypatch, slower_from):
    """A 20 s budget run whose steps become 40 ms slower from step ``slower_from(trainer)`` on
    (another job starts, say); (wall seconds, run directory)."""
    from comatch.training.trainer import Trainer

    step = Trainer.training_step

    def slower(self, batch):
        if self.step >= slower_from(self):
            time.sleep(0.04)
        return step(self, batch)

    monkeypatch.setattr(Trainer, "training_step", slower)
    out = tmp_path / "run"
    t0 = time.perf_counter()
    assert main(["train", "--budget", "20s", "--out", str(out), "run.report=false", "run.tensorboard=false",
                 "data.num_workers=0", "run.eval_every=100"]) == 0
    return time.perf_counter() - t0, out


def test_budget_is_fitted_again_when_the_machine_slows_down(tmp_path, monkeypatch, capsys):
    """Steps that become 40 ms slower after the probe would overrun a budget fitted on the first
    steps by about half; fitted again a quarter into the run, the run still ends within it."""
    wall, out = _budget_run_with_slower_steps(tmp_path, monkeypatch, lambda trainer: 8)
    printed = capsys.readouterr().out
    assert "steps fit instead of" in printed, printed
    assert 0.6 * 20 <= wall <= 1.1 * 20, wall
    summary = json.loads((out / "summary.json").read_text())
    assert f"iterations: {summary['iterations']}" in (out / "config.yaml").read_text()


def test_budget_is_fitted_again_when_the_machine_slows_down_late(tmp_path, monkeypatch, capsys):
    """Steps that become 40 ms slower after 40% of the run (past the first refit at a quarter)
    would overrun the budget (CI once took 29.0 s for 25 s this way); fitted again on the steps
    since the last fit, halfway through what is left each time, the run still ends within it."""
    wall, _ = _budget_run_with_slower_steps(
        tmp_path, monkeypatch, lambda trainer: 0.4 * trainer.config.optim.iterations)
    assert 0.6 * 20 <= wall <= 1.1 * 20, (wall, capsys.readouterr().out)
