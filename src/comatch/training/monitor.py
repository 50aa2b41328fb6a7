"""What a run reports while it trains: metrics.jsonl, TensorBoard scalars and progress.

On a terminal the progress is a tqdm bar (step, rate, ETA, losses, mask rate, last test
accuracy); otherwise (a pipe, a log file, CI) it is a plain line per logged step
(``run.log_every``) and per evaluation, with the step out of the total and the ETA, and no
control characters. TensorBoard gets one scalar ``KIND/FIELD`` for every numeric field of
every metrics.jsonl record, at the record's step.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from comatch.errors import UserError
from comatch.training.pace import duration

from comatch.training.runtime import atomic_write_text

SHOWN = ("loss", "loss_x", "loss_u", "loss_c", "mask_rate", "pseudo_label_acc")


def parse_records(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The complete JSON records of metrics.jsonl bytes, and how many lines were dropped.

    A line counts when it ends in a newline and holds a JSON object with ``step`` and
    ``kind``; a truncated last line (what SIGKILL or a power cut leaves), NUL bytes or other
    damage are dropped.
    """
    lines = data.split(b"\n")
    records, dropped = [], 0
    for i, line in enumerate(lines):
        if not line.strip(b"\x00 \t\r"):
            continue
        complete = i < len(lines) - 1
        try:
            record = json.loads(line) if complete else None
        except ValueError:
            record = None
        if isinstance(record, dict) and "step" in record and "kind" in record:
            records.append(record)
        else:
            dropped += 1
    return records, dropped


def recover_metrics(path: Path, offset: int, step: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Make metrics.jsonl hold exactly the records up to a checkpoint; return them.

    A resume keeps the first ``offset`` bytes (what the checkpoint saw). When the file is
    shorter than that (a power cut: checkpoints are fsynced, metrics lines only flushed) or
    gone, the lines that are there are kept and the loss is reported, and training continues.

    Args:
        path: the run's metrics.jsonl.
        offset: bytes the checkpoint recorded (0 for a new run).
        step: the checkpoint's step, for messages.

    Returns:
        ``(records, notes)``: the records kept, and one line per loss for the user.
    """
    data = path.read_bytes() if path.exists() else b""
    notes = []
    if offset and not path.exists():
        notes.append(f"{path} was missing: the metrics of steps 1-{step} are lost (the checkpoint "
                     f"is intact); training continues and logs from step {step + 1}")
    elif len(data) < offset:
        notes.append(f"{path} is shorter than its checkpoint expects ({len(data)} of {offset} bytes, "
                     f"e.g. after a power cut): some metrics up to step {step} are lost; the "
                     f"complete lines are kept and training continues")
    records, dropped = parse_records(data[:offset])
    if dropped and not notes:  # (a short file's cut line is part of the loss already reported)
        notes.append(f"{path}: {dropped} damaged line(s) dropped")
    if data[:offset] != data or notes:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return records, notes


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


PER_CLASS = re.compile(r"(pseudo_label_share)_(\d+)$")
"""Metric keys that hold one value per class, by class index."""


def tensorboard_tag(kind: str, key: str, class_names: Sequence[str]) -> str:
    """The TensorBoard tag of a metric: ``kind/key``, a per-class key under its class's name
    (``pseudo_label_share_3`` -> ``train/pseudo_label_share/cat``)."""
    found = PER_CLASS.match(key)
    if found and int(found[2]) < len(class_names):
        return f"{kind}/{found[1]}/{class_names[int(found[2])]}"
    return f"{kind}/{key}"


class RunMonitor:
    """Writes every record to metrics.jsonl and TensorBoard and shows progress.

    Args:
        out_dir: the run directory.
        total: total steps of the run.
        start: the step the run starts (or resumes) at.
        metrics_offset: bytes of metrics.jsonl to keep (a resume drops what came after its
            checkpoint, so the file reads as if the run had never stopped).
        stream: where progress goes (default stdout).
        tensorboard: write TensorBoard event files.
        class_names: the classes' names, for the per-class TensorBoard tags (metrics.jsonl keeps
            its keys, ``pseudo_label_share_c`` by class index).
    """

    def __init__(
        self,
        out_dir: Path,
        total: int,
        start: int = 0,
        metrics_offset: int = 0,
        stream: TextIO | None = None,
        tensorboard: bool = True,
        class_names: Sequence[str] = (),
    ) -> None:
        self.path = out_dir / "metrics.jsonl"
        self.records, self.notes = recover_metrics(self.path, metrics_offset, start)
        self.handle = self.path.open("a")
        self.stream = stream or sys.stdout
        self.stream_lost = False
        self.lost = False  # the run directory was deleted or moved
        self.writer = None
        self.class_names = list(class_names)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start or None)
        self.last_eval: dict[str, Any] = next(
            (r for r in reversed(self.records) if r["kind"] == "eval"), {}
        )
        self.total, self.start = total, start
        self.rate_from: tuple[float, int] | None = None
        """(time, step) of the first train line: the eta's rate starts there, after the one-off costs
        of a run's start (the first steps, the budget's timing evaluation), evaluations since included."""
        self.bar = None
        if self.stream.isatty():
            self.bar = tqdm(total=total, initial=start, file=self.stream, dynamic_ncols=True, unit="step")
        for note in self.notes:
            print(f"comatch: warning: {note}", file=sys.stderr, flush=True)

    @property
    def offset(self) -> int:
        """Bytes written to metrics.jsonl so far (saved in checkpoints)."""
        self.handle.flush()
        return self.handle.tell()

    def check(self) -> None:
        """Raise UserError when metrics.jsonl (and so the run directory) was deleted or moved.

        Writing on would recreate a run directory without its config, labels and metrics (or
        write into a file no one can see) and report success.
        """
        gone = not self.path.exists() or os.fstat(self.handle.fileno()).st_nlink == 0
        if gone:
            self.lost = True
            raise UserError(f"the run directory {self.path.parent} was deleted or moved while the run trained "
                            f"({self.path.name} is gone), so nothing more can be saved there; start the run again")

    def log(self, record: dict[str, Any]) -> None:
        """Record one training or evaluation line (UserError if the run directory is gone)."""
        self.check()
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        self.records.append(record)
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(tensorboard_tag(record["kind"], key, self.class_names), value, record["step"])
        if record["kind"] == "eval":
            self.last_eval = record
        self._show(record)

    def _show(self, record: dict[str, Any]) -> None:
        if self.bar is not None:
            shown = {k: _fmt(record[k]) for k in SHOWN if k in record}
            if "test_acc_ema" in self.last_eval:
                shown["test_ema"] = f"{self.last_eval['test_acc_ema']:.2%}"
            if record["kind"] == "train":
                self.bar.set_postfix(shown, refresh=False)
            return
        step = record["step"]
        where = f"step={step}/{self.total}"
        if record["kind"] == "train":
            if self.rate_from is None:
                self.rate_from = (time.monotonic(), step)
            elif step > self.rate_from[1]:
                since, first = self.rate_from
                where += f" eta={duration((time.monotonic() - since) / (step - first) * (self.total - step))}"
        text = " ".join(f"{k}={_fmt(v)}" for k, v in record.items()
                        if k not in ("kind", "step") and not k.startswith("pseudo_label_share_"))  # per class: file only
        self._print(f"[{record['kind']}] {where} {text}")

    def _print(self, text: str) -> bool:
        """A line on the progress stream; False if nobody reads it any more.

        When the reader of a pipe has gone (killed with the process group by a signal, or
        ``| head`` done), the run goes on without it: metrics.jsonl and TensorBoard still get
        every record, and the stream's file descriptor is pointed at /dev/null so that later
        output (and Python's own flush at exit) does not fail either.
        """
        if self.stream_lost:
            return False
        try:
            print(text, file=self.stream, flush=True)
            return True
        except BrokenPipeError:
            self.stream_lost = True
            try:
                fd = self.stream.fileno()
            except (AttributeError, OSError, ValueError):
                return False
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
            return False

    def set_total(self, total: int) -> None:
        """The run's length changed (a time budget set it): ETA and bar follow."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def advance(self, steps: int = 1) -> None:
        """Move the progress bar (no-op without a terminal)."""
        if self.bar is not None:
            self.bar.update(steps)

    def message(self, text: str) -> None:
        """A line for the user that does not break the bar (on stderr once nobody reads the progress stream).

        A warning (``warning: ...`` or ``comatch: warning: ...``) goes to stderr as
        ``comatch: warning: ...``, like every other command's warnings.
        """
        if text.startswith("warning: "):
            text = f"comatch: {text}"
        if text.startswith("comatch: warning: "):
            if self.bar is not None:
                self.bar.write(text, file=sys.stderr)
            else:
                try:
                    print(text, file=sys.stderr, flush=True)
                except OSError:
                    pass
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        elif not self._print(text):  # the progress stream's reader has gone: say it on stderr
            try:
                print(text, file=sys.stderr, flush=True)
            except OSError:
                pass

    def close(self) -> None:
        """Close the bar, the TensorBoard writer and metrics.jsonl."""
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None and not self.lost:  # a lost directory: its events cannot be flushed
            self.writer.close()
        self.handle.close()
