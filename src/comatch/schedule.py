"""Schedules: pure functions of the step."""

from __future__ import annotations

import math


def cosine_lr_factor(step: int, total_steps: int) -> float:
    """CoMatch/FixMatch learning-rate factor ``cos(7 pi k / (16 K))`` at step ``k`` of ``K``.

    Starts at 1 and ends at ``cos(7 pi / 16) ~= 0.195``; multiply by the base learning rate.
    """
    return math.cos(7.0 * math.pi * step / (16.0 * total_steps))
