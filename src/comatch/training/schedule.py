"""Schedules: pure functions of the step."""

from __future__ import annotations

import math


def cosine_lr_factor(step: int, total_steps: int) -> float:
    """CoMatch/FixMatch learning-rate factor ``cos(7 pi k / (16 K))`` at step ``k`` of ``K``.

    Starts at 1 and ends at ``cos(7 pi / 16) ~= 0.195``; multiply by the base learning rate.
    """
    return math.cos(7.0 * math.pi * step / (16.0 * total_steps))


def ramped_lambda_c(lambda_c: float, step: int, unlabelled_batch: int, num_unlabelled: int) -> float:
    """The ImageNet ramp of the graph loss weight: ``min(epoch + 1, lambda_c)`` at step ``k``.

    An epoch is one pass over the unlabelled set at the global unlabelled batch size:
    ``epoch = floor(k * mu * B / num_unlabelled)``.

    Args:
        lambda_c: the final weight.
        step: training step ``k`` (0-based).
        unlabelled_batch: global unlabelled images per step ``mu * B``.
        num_unlabelled: size of the unlabelled set.
    """
    epoch = step * unlabelled_batch // max(num_unlabelled, 1)
    return float(min(epoch + 1, lambda_c))
