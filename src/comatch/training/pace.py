"""How long a run takes: the measured step time, the ETA, and a time budget turned into steps.

Pure functions of measured times, so they can be tested without a clock, and the
:class:`Pacer` that owns a run's length (its clock is :func:`now`, which a test may replace).
Only the standard library is imported here.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PROBE_STEPS = 5
"""Steps timed at the start of a run, at least (the first one, with its warm-up, is left out;
:attr:`Pacer.probe_steps` may be more, so that the timed steps hold whole groups of batches that
are augmented together)."""
DAY = 86400.0
LATE = 1.0
"""Seconds a budgeted run may fall behind its fit before it is fitted again at once."""
RECENT_SHARE, RECENT_MAX = 0.05, 60.0
"""A fit's step time spans at least the last ``min(RECENT_SHARE * budget, RECENT_MAX)`` seconds
(or the run so far), even when the last fit was more recent: a fit on the few steps since the
last one would take a burst of another job's load for the machine's new pace."""
HELD_BACK = 0.01
"""Share of a budget the fit leaves unplanned, for a machine that slows down in the last
minutes (when few steps are left to give up): a 15-minute run is planned to end 9 s early."""


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


def now() -> float:
    """The pacer's clock: seconds from an arbitrary origin (a test replaces it with its own)."""
    return time.perf_counter()


def process_age() -> float:
    """Seconds since this process started (its interpreter's start-up included), where the
    system tells (Linux's /proc); else 0. A command's budget counts from its process's start."""
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: start time in ticks
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


LengthListener = Callable[[int], None]


class Pacer:
    """Owns the run's length: the steps asked for, or the most steps a time budget fits.

    The length is handed to whoever depends on it (the learning-rate schedule, the method's
    ramps, the settings fitted to the length, the progress display) through :meth:`follow`,
    each time it changes; the configuration is never rewritten. A budget is fitted after the
    first :attr:`probe_steps` steps of a process (on a resume too, with what is left of it),
    again a quarter into the run, then halfway through what is left each time. The chosen
    length and the seconds spent are saved in the checkpoint (:meth:`state_dict`).

    The budget covers the whole command: ``started`` is when it began on :func:`now`'s clock
    (setup, data scan and the end-of-run work included); ``finish`` predicts the seconds of
    the end-of-run work from one evaluation's.

    Args:
        iterations: the steps asked for (``optim.iterations``).
        eval_every: steps between evaluations.
        budget: ``run.budget`` as written (``"2m"``), or None.
        started: the command's start on :func:`now`'s clock; default: now.
        finish: seconds of the end-of-run work, from the seconds of one evaluation.
    """

    def __init__(self, iterations: int, eval_every: int, budget: str | None = None, *,
                 started: float | None = None, finish: Callable[[float], float] | None = None) -> None:
        self.requested = self.total = iterations
        self.eval_every = eval_every
        self.budget = budget
        from comatch.config import parse_duration  # the config (and torch) load only when a run is made

        self.budget_seconds = parse_duration(budget) if budget else None
        self.planned_seconds = self.budget_seconds * (1 - HELD_BACK) if self.budget_seconds else None
        self.started = now() if started is None else started
        self.spent_before = 0.0  # seconds of the processes that ran the run before this one
        self.finish = finish or (lambda evaluation: 0.0)
        self.agree: Callable[[int], int] = lambda total: total  # one answer for every process (set by the trainer)
        self.any_behind: Callable[[bool], bool] = lambda behind: behind  # ... and whether any process is behind
        self.costs: Costs | None = None
        self.evaluation: float | None = None  # seconds of one evaluation, once timed (a resume reuses them)
        self.refit_at: int | None = None
        self.probe_steps = PROBE_STEPS  # the trainer may ask for more (see set_probe)
        self.group = 1  # steps whose batches are augmented together (see set_probe)
        self.check_every = PROBE_STEPS  # steps between checks for falling behind: whole groups (see set_probe)
        self._listeners: list[LengthListener] = []
        self._first = 0
        self._window_from: float | None = None
        self._window_step = 0
        self._excluded_total = 0.0  # seconds of evaluations since the run began
        self._window_excluded = 0.0  # ... when the window began
        self._marks: deque[tuple[float, int, float]] = deque()  # (time, step, excluded so far) of recent steps

    # ----------------------------------------------------------------- the length
    def follow(self, listener: LengthListener) -> None:
        """Call ``listener(total)`` whenever the length changes."""
        self._listeners.append(listener)

    def set_total(self, total: int) -> None:
        """Set the run's length and hand it to every listener."""
        if total == self.total:
            return
        self.total = total
        for listener in self._listeners:
            listener(total)

    def set_probe(self, group: int) -> None:
        """Time whole groups of ``group`` steps (loaders that augment ``group`` batches at once
        pay for them in the group's first step): at least :data:`PROBE_STEPS` steps, the first
        left out, and the rest a multiple of ``group``."""
        self.group = group = max(1, group)
        self.probe_steps = 1 + group * math.ceil((PROBE_STEPS - 1) / group)
        self.check_every = group * math.ceil(PROBE_STEPS / group)

    def elapsed(self) -> float:
        """Seconds the run has taken: earlier processes, and this command since it started."""
        return self.spent_before + now() - self.started

    def state_dict(self) -> dict[str, Any]:
        """What a resume needs: the chosen length, the budget, the seconds spent and one
        evaluation's seconds (a resume does not time another)."""
        evaluation = self.costs.evaluation if self.costs is not None else None
        return {"total": self.total, "budget": self.budget, "spent": self.elapsed(), "evaluation": evaluation}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a run: its seconds spent count against the budget; a budgeted run keeps the
        length it chose (until fitted again), an unbudgeted one takes the steps asked for now."""
        self.spent_before = float(state.get("spent", 0.0))
        self.evaluation = state.get("evaluation")
        if self.budget_seconds is not None and state.get("budget") is not None:
            self.set_total(int(state["total"]))

    # ----------------------------------------------------------------- timing
    def begin(self, step: int) -> None:
        """The loop starts (or resumes) at ``step``."""
        self._first, self._window_from, self._window_step = step, None, step
        self._marks.clear()
        self.refit_at = None

    def exclude(self, seconds: float) -> None:
        """Seconds that were not training steps (evaluations)."""
        self._excluded_total += seconds

    def _mark(self, step: int) -> None:
        """Remember when ``step`` ended, keeping the marks of the last :data:`RECENT_SHARE` of the
        budget and the newest one before them."""
        t = now()
        self._marks.append((t, step, self._excluded_total))
        while len(self._marks) > 1 and self._marks[1][0] <= t - self._recent():
            self._marks.popleft()

    def _open_window(self, step: int) -> None:
        """Time the steps after ``step`` from now on (evaluations left out)."""
        self._window_from, self._window_step, self._window_excluded = now(), step, self._excluded_total

    def _whole_groups(self, steps: int) -> int:
        """``steps`` rounded down to whole groups of :meth:`set_probe` (at least one): a window of
        them pays for the augmentation of each of its steps, no more, no less."""
        return max(self.group, steps // self.group * self.group)

    def _recent(self) -> float:
        """The seconds a fit's step time spans at least (:data:`RECENT_SHARE`)."""
        return min(RECENT_SHARE * (self.budget_seconds or 0.0), RECENT_MAX)

    def after_step(self, step: int, time_evaluation: Callable[[], float], device: str = "cpu") -> list[str]:
        """Measure, and fit the budget when it is time; returns the lines to print.

        Args:
            step: steps done.
            time_evaluation: runs one evaluation and returns its seconds (budgeted runs call it once).
            device: where the run trains (for the too-long advice).
        """
        if step == self._first + 1:  # the first step (warm-up) is not timed
            self._open_window(step)
            self._mark(step)
            return []
        if self._window_from is None:
            return []
        self._mark(step)
        if step == self._first + self.probe_steps:
            t0 = now()
            lines = self._probe(step, (t0 - self._window_from) / (self.probe_steps - 1), time_evaluation, device)
            self.exclude(now() - t0)
            return lines
        if step == self.refit_at and step > self._first + self.probe_steps:
            return self._refit(step)
        since = step - self._window_step
        if self.budget_seconds is not None and self.costs is not None and since >= self.check_every \
                and since % self.check_every == 0 and self.any_behind(self._behind(step)):
            return self._refit(step)  # the machine slowed down since the last fit: do not wait for the next one
        return []

    def _behind(self, step: int) -> bool:
        """Whether the run, at the step time of the last fit, would now end more than
        :data:`LATE` seconds past its planned end (checked every :data:`PROBE_STEPS` steps after a fit)."""
        assert self.budget_seconds is not None and self.costs is not None
        projected = self.elapsed() + self.costs.remaining(step, self.total, self.eval_every)
        return projected > self.planned_seconds + LATE

    def _probe(self, step: int, step_seconds: float, time_evaluation: Callable[[], float], device: str) -> list[str]:
        lines, evaluation = [], 0.0
        if self.budget_seconds is not None:
            evaluation = time_evaluation() if self.evaluation is None else self.evaluation
            self.costs = Costs(step_seconds, evaluation, self.finish(evaluation))
            elapsed = self._fit(step)
            lines.append(f"budget {self.budget}: {self.total} steps fit (the command and {step} steps took "
                         f"{duration(elapsed)}, one evaluation {evaluation:.1f} s, the end of the run "
                         f"{self.costs.finish:.1f} s)")
            if self.total == step and elapsed + self.costs.finish > self.budget_seconds:
                lines.append(f"budget {self.budget} cannot be held: the run ends here, about "
                             f"{duration(elapsed + self.costs.finish)} after the command started; a smaller "
                             f"network (model.arch) or a longer --budget trains more")
            self.refit_at = step + self._whole_groups((self.total - step) // 4)
        left = Costs(step_seconds, evaluation).remaining(step, self.total, self.eval_every)
        lines.append(f"timing: {step_seconds:.3g} s per step (steps {step - self.probe_steps + 2}-{step}); "
                     f"about {duration(left)} for the {self.total - step} steps left")
        advice = too_long_advice(left, self.total, step_seconds, device)
        return lines + ([advice] if advice else [])

    def _refit(self, step: int) -> list[str]:
        """Fit the budget again on the step time since the last fit (evaluations left out), or,
        where the last fit is less than the recent seconds (:data:`RECENT_SHARE`) ago, on those
        seconds' groups of steps (:meth:`set_probe`'s: each pays for its augmentation once) that
        took at most twice the median group: a burst of another job's load is then paid for by
        the seconds it took, and a lasting slow-down is followed once it fills half of them."""
        assert self.costs is not None and self._window_from is not None
        steps, how = step - self._window_step, "s per step"
        seconds = (now() - self._window_from - (self._excluded_total - self._window_excluded)) / steps
        if now() - self._window_from < self._recent() and len(self._marks) > steps + self.group:
            ends = list(self._marks)[::-1][::self.group]  # whole groups: each pays for its augmentation once
            blocks = [(b[0] - a[0] - (b[2] - a[2])) / (b[1] - a[1]) for b, a in zip(ends, ends[1:])]
            typical = statistics.median(blocks)
            kept = [block for block in blocks if block <= 2 * typical]
            steps, how = len(kept) * self.group, "s per step (bursts left out)"
            seconds = statistics.fmean(kept)
        before = self.total
        self.costs = Costs(seconds, self.costs.evaluation, self.costs.finish)
        self._fit(step)
        lines = [] if self.total == before else [
            f"budget {self.budget}: {seconds:.3g} {how} over the last {steps} steps: "
            f"{self.total} steps fit instead of {before}"]
        self._open_window(step)
        half = self._whole_groups((self.total - step) // 2)
        self.refit_at = step + half if half >= 10 else None
        return lines

    def _fit(self, step: int) -> float:
        """Set the length to the most steps that end within the budget; returns the seconds spent."""
        assert self.budget_seconds is not None and self.costs is not None
        elapsed = self.elapsed()
        total = self.agree(steps_within(self.planned_seconds, elapsed, step, self.costs, self.eval_every))
        self.set_total(max(total, step))
        return elapsed
