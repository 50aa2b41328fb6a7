"""Run length: the budget turned into steps, the start block and the first ETA in piped output."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from comatch.cli import main
from comatch.config import parse_duration
from comatch.training import pace
from comatch.training.pace import Costs, Pacer, duration, steps_within, too_long_advice


def chosen_length(out):
    """The run length recorded in the newest checkpoint (what a resume reads)."""
    import torch

    return torch.load(out / "checkpoints" / "last.pt", weights_only=False)["pace"]["total"]


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


def test_start_block_and_first_eta_come_first_in_piped_output(tmp_path):
    cmd = [sys.executable, "-m", "comatch", "train", "--iterations", "12", "--out", str(tmp_path / "run"),
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
                 "16 labelled + 112 unlabelled x 3 views: 352 images per step", "steps    12;", f"run dir  {tmp_path / 'run'}"):
        assert part in block, part
    timing = next(i for i, line in enumerate(lines) if line.startswith("timing: "))
    first_log = next(i for i, line in enumerate(lines) if line.startswith("[train]"))
    # the loaders augment 8 batches at once: the first timing holds one whole group (steps 2-9)
    assert timing < first_log and "s per step (steps 2-9)" in lines[timing] and "for the 3 steps left" in lines[timing]
    assert "\r" not in proc.stdout and "\x1b" not in proc.stdout


class StepClock:
    """The pacer's clock for a test: each training step takes ``step`` seconds, nothing else any."""

    def __init__(self, step: float) -> None:
        self.seconds, self.step = 0.0, step

    def __call__(self) -> float:
        return self.seconds


def clocked_run(monkeypatch, args, clock, stop_after=None):
    """``comatch train ARGS`` in this process on ``clock`` (SIGTERM after step ``stop_after``)."""
    import signal

    from comatch.training.trainer import Trainer

    step = Trainer.training_step

    def timed(self, batch):
        clock.seconds += clock.step
        out = step(self, batch)
        if stop_after is not None and self.step + 1 == stop_after:
            os.kill(os.getpid(), signal.SIGTERM)  # a request: the loop stops after this step
        return out

    monkeypatch.setattr(pace, "now", clock)
    monkeypatch.setattr(Trainer, "training_step", timed)
    return main(args)


class ChangingClock(StepClock):
    """Steps of ``step`` seconds that take ``slower`` seconds from step ``from_step`` on
    (another job starts on the machine, say)."""

    def __init__(self, step: float, slower: float, from_step: int) -> None:
        super().__init__(step)
        self.slower, self.from_step, self.steps = slower, from_step, 0

    def __call__(self) -> float:
        return self.seconds


def clocked_budget_run(monkeypatch, tmp_path, clock, budget="25s"):
    """A budgeted run on ``clock`` (a ChangingClock's steps counted); (seconds on it, run dir)."""
    from comatch.training.trainer import Trainer

    if isinstance(clock, ChangingClock):
        step = Trainer.training_step

        def counted(self, batch):
            clock.steps += 1
            if clock.steps == clock.from_step:
                clock.step = clock.slower
            return step(self, batch)

        monkeypatch.setattr(Trainer, "training_step", counted)
    out = tmp_path / "run"
    args = ["train", "--budget", budget, "--out", str(out), "run.report=false", "run.tensorboard=false",
            "data.num_workers=0", "run.eval_every=100"]
    assert clocked_run(monkeypatch, args, clock) == 0
    return clock.seconds, out


def test_budget_is_met_within_ten_percent(tmp_path, monkeypatch):
    seconds, out = clocked_budget_run(monkeypatch, tmp_path, StepClock(0.25))
    # met: at most 10% over, and most of it used (2.5 s are kept for the end of the run)
    assert 0.8 * 25 <= seconds <= 1.1 * 25, seconds
    summary = json.loads((out / "summary.json").read_text())
    assert "budget: 25s" in (out / "config.yaml").read_text()
    assert chosen_length(out) == summary["iterations"], "the checkpoint records the length the budget chose"
    assert not summary["stopped"] and summary["iterations"] > 5


@pytest.mark.parametrize("slower_from", [12, 40])
def test_budget_is_fitted_again_when_the_machine_slows_down(tmp_path, monkeypatch, capsys, slower_from):
    """Steps that take 2.6x as long from step 12 (after the first fit) or step 40 (40% in, past
    the first refit at a quarter) would overrun a budget fitted on the earlier steps; fitted
    again, the run still ends within it."""
    seconds, out = clocked_budget_run(monkeypatch, tmp_path, ChangingClock(0.25, 0.65, slower_from))
    printed = capsys.readouterr().out
    assert "steps fit instead of" in printed, printed
    assert "cannot be held" not in printed
    assert 0.8 * 25 <= seconds <= 1.1 * 25, (seconds, printed)
    summary = json.loads((out / "summary.json").read_text())
    assert chosen_length(out) == summary["iterations"]


def test_a_run_that_ends_where_the_budget_timed_an_evaluation_evaluates_once(tmp_path, monkeypatch, capsys):
    """Steps so slow that the budget is spent by its first fit (after step 9, where it times an
    evaluation): the run ends at step 9, and the weights evaluated there are not evaluated again."""
    seconds, out = clocked_budget_run(monkeypatch, tmp_path, StepClock(3.0))
    printed = capsys.readouterr().out
    assert "budget 25s: 9 steps fit" in printed
    # 27 s spent by step 9 (and the end of the run still to come): said, with the way out
    assert "budget 25s cannot be held: the run ends here, about 0:00:" in printed
    assert "a smaller network (model.arch) or a longer --budget trains more" in printed
    evals = [r["step"] for r in metrics(out) if r["kind"] == "eval"]
    assert evals == [9]
    assert json.loads((out / "summary.json").read_text())["iterations"] == 9


def metrics(out):
    return [{k: v for k, v in json.loads(line).items() if k != "images_per_sec"}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["mixmatch", "comatch"])
def test_a_budgeted_run_stopped_and_resumed_keeps_its_length_and_schedules(tmp_path, monkeypatch, method):
    """A 20 s budget at 0.5 s per step (nothing else takes time) fits 34 steps (2.5 s are left
    for the end of the run: the last checkpoint and the process's exit, and 0.2 s held back); stopped by SIGTERM
    after step 12 and resumed, the run keeps the 34 steps, the learning-rate schedule and the method's ramp (MixMatch's unlabelled weight
    spans a share of the run): the same metrics and weights as the run never stopped."""
    import torch

    args = ["train", "--method", method, "--budget", "20s", "run.report=false", "run.tensorboard=false",
            "data.num_workers=0", "run.eval_every=10", "run.log_every=1", "run.checkpoint_every=100"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert clocked_run(monkeypatch, [*args, "--out", str(whole)], StepClock(0.5)) == 0
    assert clocked_run(monkeypatch, [*args, "--out", str(parts)], StepClock(0.5), stop_after=12) == 143
    assert chosen_length(parts) == 34 and json.loads((parts / "summary.json").read_text())["iterations"] == 12
    assert clocked_run(monkeypatch, ["train", "--resume", str(parts)], StepClock(0.5)) == 0
    for out in (whole, parts):
        summary = json.loads((out / "summary.json").read_text())
        assert summary["iterations"] == chosen_length(out) == 34 and not summary["stopped"]
        assert "iterations: 34" not in (out / "config.yaml").read_text(), "the config is not rewritten"
    assert metrics(parts) == metrics(whole)  # losses (the ramp's weight in them) and learning rates
    a, b = (torch.load(out / "checkpoints" / "last.pt", weights_only=False) for out in (whole, parts))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    resumed = [json.loads(line) for line in (parts / "resumes.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [12]


def test_settings_fitted_to_the_length_are_printed_once(tmp_path, monkeypatch, capsys):
    """Steps that slow from 0.5 to 0.8 s after 5 s make the budget fit the length again; the
    settings that follow the length follow it each time, but their lines are printed only at
    the first fit (the refit's own line says the length changed)."""

    class SlowingClock:
        seconds = 0.0

        @property
        def step(self) -> float:
            return 0.5 if self.seconds < 5 else 0.8

        def __call__(self) -> float:
            return self.seconds

    out = tmp_path / "run"
    args = ["train", "--budget", "20s", "--out", str(out), "run.report=false", "run.tensorboard=false",
            "data.num_workers=0", "run.eval_every=100", "run.fit_to_length=[optim.ema_decay,run.log_every]"]
    assert clocked_run(monkeypatch, args, SlowingClock()) == 0
    printed = capsys.readouterr().out
    assert printed.count("steps fit instead of") >= 1, printed
    assert printed.count("defaults: optim.ema_decay=") == 1 and printed.count("defaults: run.log_every=") == 1, printed


def test_a_resume_of_a_finished_budgeted_run_records_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["train", "--budget", "10s", "--out", str(out), "run.report=false", "run.tensorboard=false",
            "data.num_workers=0", "run.eval_every=100"]
    assert clocked_run(monkeypatch, args, StepClock(0.5)) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    assert main(["train", "--resume", str(out), "--budget", "15s"]) == 0
    printed = capsys.readouterr().out
    assert f"{out} is finished (14 of 14 steps); nothing to resume" in printed, printed
    assert not (out / "resumes.jsonl").exists()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == before


def test_budget_and_iterations_together_are_refused(tmp_path, capsys):
    assert main(["train", "--budget", "20s", "--iterations", "20", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == ("comatch: error: --budget and --iterations both set the run's length; give one of them "
                   "(a budget chooses the number of steps that fits)\n")
    assert not (tmp_path / "run").exists()


def test_the_pacer_hands_its_length_to_every_listener_and_saves_it(monkeypatch):
    clock = StepClock(1.0)
    monkeypatch.setattr(pace, "now", clock)
    pacer = Pacer(1000, 10, "60s", finish=lambda evaluation: 2.0 + evaluation)
    heard = []
    pacer.follow(heard.append)
    pacer.begin(0)
    lines = []
    for step in range(1, 6):
        clock.seconds += 1.0
        lines += pacer.after_step(step, lambda: 0.0)
    # 5 s spent; 1 s per step, 2 s to finish, 1% of the budget (0.6 s) held back: 52 more steps fit
    assert pacer.total == 57 and heard == [57] and pacer.requested == 1000
    assert lines[0].startswith("budget 60s: 57 steps fit") and lines[1].startswith("timing: 1 s per step")
    assert pacer.state_dict() == {"total": 57, "budget": "60s", "spent": 5.0, "evaluation": 0.0}
    again = Pacer(1000, 10, "60s")
    again.follow(heard.append)
    again.load_state_dict(pacer.state_dict())
    assert again.total == 57 and heard == [57, 57] and again.elapsed() == 5.0
    fixed = Pacer(200, 10)
    fixed.load_state_dict({"total": 100, "budget": None, "spent": 3.0})
    assert fixed.total == 200, "without a budget the steps asked for now count (a resume may add some)"


def test_the_first_timing_holds_whole_groups_of_augmented_batches(monkeypatch):
    """Loaders that augment 8 batches at once pay for them in steps 1, 9, 17...: the pacer then
    times steps 2-9 (one whole group) instead of 2-5, which would miss the augmentation."""
    assert [Pacer(100, 10).probe_steps] == [5]
    for group, probe in ((1, 5), (2, 5), (4, 5), (8, 9), (16, 17)):
        pacer = Pacer(100, 10)
        pacer.set_probe(group)
        assert pacer.probe_steps == probe, group
    clock = StepClock(1.0)
    monkeypatch.setattr(pace, "now", clock)
    pacer = Pacer(1000, 10)
    pacer.set_probe(8)
    pacer.begin(0)
    said = {}
    for step in range(1, 10):
        clock.seconds += 2.6 if step in (1, 9) else 1.0  # the steps that augment 8 batches cost 1.6 s more
        said[step] = pacer.after_step(step, lambda: 0.0)
    assert all(not said[k] for k in range(1, 9))
    assert said[9][0].startswith("timing: 1.2 s per step (steps 2-9)")  # (7 x 1 + 2.6) / 8


def test_a_pacer_that_falls_behind_fits_again_before_its_next_scheduled_fit(monkeypatch):
    """1 s steps fit 99 steps in 100 s (1 s held back); from step 6 on each takes 2 s. The next
    scheduled fit (a quarter in, step 28) would come too late; checked every 5 steps, the run is
    6 s behind at step 11 and fitted again at once on the 1.6 s per step since step 1: 62 steps."""
    clock = StepClock(1.0)
    monkeypatch.setattr(pace, "now", clock)
    pacer = Pacer(1000, 1000, "100s")
    pacer.begin(0)
    said = {}
    for step in range(1, 12):
        clock.seconds += 1.0 if step <= 5 else 2.0
        said[step] = pacer.after_step(step, lambda: 0.0)
        if step == 5:
            assert pacer.total == 99 and pacer.refit_at == 28
    assert said[6] == [] and pacer.total == 62
    assert said[11] == ["budget 100s: 1.6 s per step over the last 10 steps: 62 steps fit instead of 99"]


@pytest.mark.parametrize("load", ["burst", "lasting"])
def test_a_burst_of_load_does_not_halve_a_budgeted_run_and_a_lasting_one_is_followed(monkeypatch, load):
    """20 s of another job (steps of 1 s instead of 0.1 s) in a 900 s budget: each check 5 steps
    after a fit found the run behind and fitted it on those 5 slow steps alone (a 15-minute run
    went from 10,986 planned steps to 3,390 and back). A fit less than 45 s (5% of the budget)
    after the last now takes the mean of those seconds' groups of 8 steps (one of which
    augments all 8 batches) that took at most twice the median group: the length gives up the
    lost time, not two thirds of the run. A lasting slow-down (3x from step 3,000) is
    followed, and either way the run ends within its budget."""
    clock = StepClock(0.1)
    monkeypatch.setattr(pace, "now", clock)
    pacer = Pacer(10**6, 10**6, "900s")
    pacer.set_probe(8)
    pacer.begin(0)

    def seconds(k: int) -> float:  # 0.1 s a step on average: 0.08, and 0.16 more where 8 batches are augmented
        quiet = 0.08 + (0.16 if k % 8 == 1 else 0.0)
        if load == "burst":
            return 1.0 if 1001 <= k <= 1020 else quiet
        return 3 * quiet if k > 3000 else quiet

    totals, lines, step = [], [], 0
    while step < pacer.total:
        step += 1
        clock.seconds += seconds(step)
        lines += pacer.after_step(step, lambda: 0.0)
        totals.append(pacer.total)
    assert totals[20] == 8908  # fitted after step 9: 9 + (891 s - 1.04 s) / 0.1 s
    if load == "burst":
        # the first fit after the burst begins averages its first 8 steps into the 1,000 since the
        # last fit (8,256); the next ones leave the burst out, and the run gives up the 18 s it lost
        assert min(totals[20:]) >= 8908 - 700, min(totals)
        assert 8908 - 250 <= step <= 8908 - 150, step
        assert any("s per step (bursts left out) over the last" in line for line in lines), lines
    else:
        assert 4900 <= step <= 4970, step  # 3,000 steps in 300 s, then (891 - 300) s / 0.3 s
    assert 891 - 2 <= clock.seconds <= 900, clock.seconds


def test_budget_windows_hold_whole_groups_of_augmented_batches(monkeypatch):
    """On a loaded machine the step that augments 8 batches took 15 s against 1 s for the
    others. A check for falling behind every 5 steps then timed 5-step windows with or without
    that step: one with it said 3.9 s a step, the fit cut the run to 40 steps, too few left to
    fit again, and a 2-minute run ended at 82 s. Every window now holds whole groups of 8."""
    import random

    jitter = random.Random(0)
    clock = StepClock(0.0)
    clock.seconds = 16.0  # the command's start: imports, the scan of 6,000 files
    monkeypatch.setattr(pace, "now", clock)
    pacer = Pacer(10**6, 300, "120s", started=0.0)
    pacer.set_probe(8)
    pacer.begin(0)
    step = 0
    while step < pacer.total:
        step += 1
        clock.seconds += (15.0 if step % 8 == 1 else 1.0) * jitter.uniform(0.7, 1.4)
        pacer.after_step(step, lambda: 1.0)
    clock.seconds += 6.0  # the end of the run: last evaluation, checkpoint, report
    assert 0.9 * 120 <= clock.seconds <= 120, (clock.seconds, step)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="the process's start time is read from Linux's /proc")
def test_a_budget_counts_from_the_process_start():
    """process_age covers what ran before the command's code (the interpreter's start-up, the
    imports): a process that waited half a second before asking is at least that old."""
    code = "import time; time.sleep(0.5); from comatch.training import pace; print(pace.process_age())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}).stdout
    assert 0.5 <= float(out) < 600
