"""How long a run takes: the measured step time, the ETA, and a time budget turned into steps.

Pure functions of measured times, so they can be tested without a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PROBE_STEPS = 5
"""Steps timed at the start of a run (the first one, with its warm-up, is left out)."""
DAY = 86400.0


def duration(seconds: float) -> str:
    """``H:MM:SS`` (or ``D days, H:MM:SS``) of a non-negative number of seconds."""
    days, rest = divmod(int(round(seconds)), 86400)
    minutes, secs = divmod(rest, 60)
    clock = f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
    return f"{days} day{'s' if days != 1 else ''}, {clock}" if days else clock


@dataclass(frozen=True)
class Costs:
    """Measured costs of a run's parts, in seconds.

    Attributes:
        step: one training step (median of the probe steps).
        evaluation: one evaluation of the raw and EMA models.
        finish: what follows the last step (final checkpoint, summary, report), estimated.
    """

    step: float
    evaluation: float = 0.0
    finish: float = 0.0

    def remaining(self, done: int, total: int, eval_every: int) -> float:
        """Seconds from step ``done`` to the end of a ``total``-step run."""
        evaluations = total // eval_every - done // eval_every + (0 if total % eval_every == 0 else 1)
        return max(total - done, 0) * self.step + max(evaluations, 0) * self.evaluation + self.finish


def steps_within(budget: float, elapsed: float, done: int, costs: Costs, eval_every: int) -> int:
    """The most steps a run can have so that it ends within ``budget`` seconds.

    Args:
        budget: the whole run's wall-clock budget.
        elapsed: seconds spent so far (data loading, setup, the probe steps).
        done: steps already trained (the result is never below it).
        costs: the measured costs.
        eval_every: steps between evaluations (one more at the end).

    Returns:
        The total number of steps.
    """
    def fits(total: int) -> bool:
        return elapsed + costs.remaining(done, total, eval_every) <= budget

    per_step = costs.step + costs.evaluation / eval_every
    total = done + math.floor(max(budget - elapsed - costs.finish - costs.evaluation, 0.0) / per_step)
    while fits(total + 1):
        total += 1
    while total > done and not fits(total):
        total -= 1
    return max(total, done)


def too_long_advice(seconds: float, total: int, step: float, device: str) -> str | None:
    """A warning with settings that fit, when the run would take more than a day; else None."""
    if seconds <= DAY:
        return None
    fit = max(1, int(DAY / step))
    advice = [f"--iterations {fit}", "--budget 1d"]
    if device == "cpu":
        advice.append("a GPU (--device cuda)")
    advice.append("a smaller network (model.arch=...) or smaller images (data.image_size=...)")
    return (f"warning: at {step:.3g} s per step the {total} steps take about {duration(seconds)} on this "
            f"device; to fit in a day use {', or '.join(advice)}")
