"""What a run reports while it trains: metrics.jsonl, TensorBoard scalars and progress.

On a terminal the progress is a tqdm bar (step, rate, ETA, losses, mask rate, last test
accuracy); otherwise (a pipe, a log file, CI) it is a plain line per logged step
(``run.log_every``) and per evaluation, with the step out of the total and the ETA, and no
control characters. TensorBoard gets one scalar ``KIND/FIELD`` for every numeric field of
every metrics.jsonl record, at the record's step.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

SHOWN = ("loss", "loss_x", "loss_u", "loss_c", "mask_rate", "pseudo_label_acc")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    """``H:MM:SS`` of a non-negative number of seconds."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


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
    """

    def __init__(
        self,
        out_dir: Path,
        total: int,
        start: int = 0,
        metrics_offset: int = 0,
        stream: TextIO | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.path = out_dir / "metrics.jsonl"
        with self.path.open("ab") as handle:
            handle.truncate(metrics_offset)
        self.records = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        self.handle = self.path.open("a")
        self.stream = stream or sys.stdout
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start or None)
        self.last_eval: dict[str, Any] = next(
            (r for r in reversed(self.records) if r["kind"] == "eval"), {}
        )
        self.total, self.start, self.started_at = total, start, time.monotonic()
        self.bar = None
        if self.stream.isatty():
            self.bar = tqdm(total=total, initial=start, file=self.stream, dynamic_ncols=True, unit="step")

    @property
    def offset(self) -> int:
        """Bytes written to metrics.jsonl so far (saved in checkpoints)."""
        self.handle.flush()
        return self.handle.tell()

    def log(self, record: dict[str, Any]) -> None:
        """Record one training or evaluation line."""
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        self.records.append(record)
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])
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
        if record["kind"] == "train" and step > self.start:
            eta = (time.monotonic() - self.started_at) / (step - self.start) * (self.total - step)
            where += f" eta={_duration(eta)}"
        text = " ".join(f"{k}={_fmt(v)}" for k, v in record.items()
                        if k not in ("kind", "step") and not k.startswith("pseudo_label_share_"))  # per class: file only
        print(f"[{record['kind']}] {where} {text}", file=self.stream, flush=True)

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
        """A line for the user that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Close the bar, the TensorBoard writer and metrics.jsonl."""
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.handle.close()
