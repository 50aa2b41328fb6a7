"""SIGINT or SIGTERM to the whole process group, at three moments: the run stops cleanly
(no traceback), leaves a resumable run, says how to continue and exits 130 (SIGINT) or 143
(SIGTERM), so that `comatch train && comatch export` exports no half-trained model."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

COMMON = ["run.tensorboard=false", "run.log_every=1", "optim.batch_size=4", "optim.mu=2", "data.num_workers=1"]


def start(out, iterations, *extra):
    cmd = [sys.executable, "-m", "comatch", "train", "--out", str(out), "--iterations", str(iterations), *COMMON, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(proc, prefix, timeout=900):  # a hang guard: loaded machines are slow
    """Read stdout up to the first line starting with ``prefix``; returns the lines read."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no line starting with {prefix!r} in {''.join(lines)}")


def wait_for_stop_handler(proc, timeout=900):
    """Wait until the process catches SIGTERM (its stop handler is installed: the command line does
    it before any heavy import), read from /proc/PID/status; not a number of seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before its stop handler was seen"
        with open(f"/proc/{proc.pid}/status") as status:
            caught = int(next(line for line in status if line.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.001)
    raise AssertionError("the stop handler was never installed")


def finish(proc, lines):
    out, err = proc.communicate(timeout=900)
    return "".join(lines) + out, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", ["first-second", "mid-training"])
def test_a_signal_to_the_group_leaves_a_resumable_run(tmp_path, sig, moment):
    out = tmp_path / "run"
    proc = start(out, 8, "run.report=false", "run.eval_every=2")
    if moment == "first-second":
        wait_for_stop_handler(proc)  # python is still importing (torch, numpy) or loading the data
        lines = []
    else:
        lines = wait_for(proc, "[eval] step=2/8")  # evaluations every 2 steps: it may land in one
    os.killpg(proc.pid, sig)
    stdout, stderr = finish(proc, lines)
    assert proc.returncode == 128 + sig, stderr  # 130 for SIGINT, 143 for SIGTERM
    assert "Traceback" not in stderr and "killed by signal" not in stderr, stderr
    assert f"checkpoint saved. Continue with: comatch train --resume {out}" in stdout
    done = subprocess.run([sys.executable, "-m", "comatch", "train", "--resume", str(out), "run.report=false"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text())["iterations"] == 8


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_end_of_run_report_leaves_a_complete_run(tmp_path, sig):
    out = tmp_path / "run"
    proc = start(out, 4, "run.report=true", "run.eval_every=4", "run.report_embedding=tsne")
    lines = wait_for(proc, "[eval] step=4/4")  # the summary is written, the report begins
    os.killpg(proc.pid, sig)
    stdout, stderr = finish(proc, lines)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    # the signal lands while the run is calibrated or its report drawn (t-SNE: seconds): no report is written
    assert f"the end-of-run report was not written (stopped by {sig.name}); the run is complete" in stdout
    assert not (out / "report.html").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] is False and summary["iterations"] == 4
