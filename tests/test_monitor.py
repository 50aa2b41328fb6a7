"""Progress while training: a bar on a terminal, plain lines in a pipe; TensorBoard scalars."""

import io
import json
import math
import re
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from comatch.training import monitor as monitor_module
from comatch.training.monitor import RunMonitor

CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # every control character but the newline


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_training_in_a_pipe_prints_plain_lines_and_every_metric_reaches_tensorboard(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "comatch", "train", "--out", str(out), "--iterations", "4", "run.log_every=2",
           "run.eval_every=2", "data.num_workers=0", "optim.batch_size=4", "optim.mu=2", "run.report=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert not CONTROL.search(proc.stdout) and not CONTROL.search(proc.stderr)
    lines = proc.stdout.splitlines()
    assert lines[0] == "comatch: comatch on digits, seed 0", "the start block comes first"
    lines = [line for line in lines if line.startswith("[") or line.startswith("done:")]
    assert [line.split(" ", 2)[:2] for line in lines[:4]] == [
        ["[train]", "step=2/4"], ["[eval]", "step=2/4"], ["[train]", "step=4/4"], ["[eval]", "step=4/4"]]
    assert " eta=" not in lines[0] and "mask_rate=" in lines[0]  # no rate measured yet: no eta
    assert re.search(r" eta=\d+:\d\d:\d\d loss=", lines[2])
    assert lines[-1].startswith("done:")

    accumulator = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    expected = {f"{r['kind']}/{k}" for r in records for k, v in r.items() if k != "step" and isinstance(v, (int, float))}
    # per-class shares are tagged by class name (the digits' names are "0".."9")
    expected = {re.sub(r"^train/pseudo_label_share_(\d+)$", r"train/pseudo_label_share/\1", tag) for tag in expected}
    assert expected == tags
    assert {"train/loss_c", "train/mask_rate", "train/graph_edges", "eval/test_acc_ema"} <= tags
    for record in records:
        for key, value in record.items():
            if key in ("step", "kind"):
                continue
            tag = re.sub(r"^(pseudo_label_share)_(\d+)$", r"\1/\2", key)  # by class name: "0".."9" here
            logged = {e.step: e.value for e in accumulator.Scalars(f"{record['kind']}/{tag}")}
            if math.isnan(value):
                assert math.isnan(logged[record["step"]])
            else:
                assert logged[record["step"]] == pytest.approx(value, rel=1e-6, abs=1e-7), key


def drive(monitor: RunMonitor) -> None:
    monitor.advance(2)
    monitor.log({"step": 2, "kind": "train", "loss": 1.5, "mask_rate": 0.25, "lr": 0.03})
    monitor.log({"step": 2, "kind": "eval", "test_acc": 0.5, "test_acc_ema": 0.625})
    monitor.advance(2)
    monitor.log({"step": 4, "kind": "train", "loss": 1.0, "mask_rate": 0.5, "lr": 0.01})
    monitor.close()


def test_a_terminal_gets_a_bar_with_losses_mask_rate_and_test_accuracy(tmp_path):
    stream = Terminal()
    drive(RunMonitor(tmp_path, total=4, stream=stream, tensorboard=False))
    text = stream.getvalue()
    assert "\r" in text and "4/4" in text
    final = text.split("\r")[-1]
    assert "loss=1" in final and "mask_rate=0.5" in final and "test_ema=62.50%" in final


def test_a_pipe_gets_one_plain_line_per_record(tmp_path):
    stream = io.StringIO()
    drive(RunMonitor(tmp_path, total=4, stream=stream, tensorboard=False))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and not CONTROL.search(stream.getvalue())
    assert lines[1] == "[eval] step=2/4 test_acc=0.5 test_acc_ema=0.625"
    assert lines[2].startswith("[train] step=4/4 eta=0:00:00 loss=1 mask_rate=0.5 lr=0.01")
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2, 2, 4]


def test_the_eta_in_a_pipe_leaves_out_the_start_of_the_run(tmp_path, monkeypatch):
    """The first steps, the budget's timing evaluation and the loaders' start are paid once: an
    eta averaged from the start said 25 minutes where 14 were left. It is measured from the
    first train line on, and the first line has none."""
    clock = {"now": 0.0}
    monkeypatch.setattr(monitor_module.time, "monotonic", lambda: clock["now"])
    stream = io.StringIO()
    monitor = RunMonitor(tmp_path, total=1000, stream=stream, tensorboard=False)
    clock["now"] = 30.0  # 100 steps and 20 s of one-off costs
    monitor.log({"step": 100, "kind": "train", "loss": 1.0})
    clock["now"] = 40.0  # then 100 steps in 10 s
    monitor.log({"step": 200, "kind": "train", "loss": 1.0})
    monitor.log({"step": 200, "kind": "eval", "test_acc": 0.5})
    clock["now"] = 52.0  # 100 steps and the evaluation: 12 s
    monitor.log({"step": 300, "kind": "train", "loss": 1.0})
    monitor.close()
    assert stream.getvalue().splitlines() == [
        "[train] step=100/1000 loss=1",
        "[train] step=200/1000 eta=0:01:20 loss=1",  # 800 steps x 0.1 s
        "[eval] step=200/1000 test_acc=0.5",
        "[train] step=300/1000 eta=0:01:17 loss=1",  # 700 steps x 22 s / 200 steps
    ]


class LeftPipe(io.StringIO):
    """stdout whose reader has gone (killed with the process group, or `| head` done)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_pipe_whose_reader_left_does_not_stop_the_run_and_messages_go_to_stderr(tmp_path, capsys):
    """A signal to the process group also kills the reader of `comatch train | tee log`: the
    lines logged after it must not end the run before its checkpoint, and the resume hint
    still reaches the user on stderr."""
    monitor = RunMonitor(tmp_path, total=4, stream=LeftPipe(), tensorboard=False)
    monitor.advance(2)
    monitor.log({"step": 2, "kind": "train", "loss": 1.5, "mask_rate": 0.25, "lr": 0.03})
    monitor.log({"step": 2, "kind": "eval", "test_acc": 0.5, "test_acc_ema": 0.625})
    monitor.message("stopped at step 2 of 4; checkpoint saved. Continue with: comatch train --resume R")
    monitor.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2, 2]
    assert capsys.readouterr().err == "stopped at step 2 of 4; checkpoint saved. Continue with: comatch train --resume R\n"


def test_training_goes_on_to_the_end_when_the_reader_of_its_output_leaves(tmp_path):
    """`comatch train | head -1`: the run still trains every step and writes its summary."""
    cmd = [sys.executable, "-m", "comatch", "train", "--iterations", "30", "--out", str(tmp_path / "run"),
           "run.report=false", "run.tensorboard=false", "run.log_every=5", "run.eval_every=10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader leaves
    _, err = proc.communicate(timeout=300)
    assert first.startswith(b"comatch: comatch on digits")
    assert proc.returncode == 0, err.decode()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["iterations"] == 30 and not summary["stopped"]
    assert b"Traceback" not in err
