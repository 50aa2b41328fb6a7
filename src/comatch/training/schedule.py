"""Learning-rate schedules: pure functions of the step.

Epochs are counted as the methods count them (:mod:`comatch.methods.schedule`, re-exported here).
"""

from __future__ import annotations

import math

from comatch.methods.schedule import epoch_of, ramped_lambda_c, steps_per_epoch

__all__ = ["cosine_lr_factor", "epoch_half_cosine_lr_factor", "half_cosine_lr_factor", "epoch_of", "lr_factor", "ramped_lambda_c", "steps_per_epoch"]


def cosine_lr_factor(step: int, total_steps: int) -> float:
    """CoMatch/FixMatch learning-rate factor ``cos(7 pi k / (16 K))`` at step ``k`` of ``K``.

    Starts at 1 and ends at ``cos(7 pi / 16) ~= 0.195``; multiply by the base learning rate.
    """
    return math.cos(7.0 * math.pi * step / (16.0 * total_steps))


def half_cosine_lr_factor(step: int, total_steps: int) -> float:
    """Learning-rate factor ``(1 + cos(pi k / K)) / 2`` at step ``k`` of ``K``: from 1 down to 0
    at the end (the released ``cosine`` stops at about a fifth of the rate)."""
    return 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def epoch_half_cosine_lr_factor(step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The released ImageNet learning-rate factor: a half cosine over epochs, constant within one.

    ``(1 + cos(pi * e / E)) / 2`` with ``e = floor(k / steps_per_epoch)`` the epoch of step
    ``k`` and ``E = ceil(K / steps_per_epoch)`` the number of epochs (a last, partial epoch
    counts). Epoch 0 runs at the full rate; the last epoch at ``(1 + cos(pi (E - 1) / E)) / 2``.

    Args:
        step: training step ``k`` (0-based).
        total_steps: total steps ``K``.
        steps_per_epoch: steps in one pass over the unlabelled set at the global unlabelled
            batch size.

    Returns:
        The factor to multiply the base learning rate by, in ``(0, 1]``.

    Raises:
        ValueError: If ``total_steps`` or ``steps_per_epoch`` is not positive.
    """
    if total_steps < 1 or steps_per_epoch < 1:
        raise ValueError(f"total_steps and steps_per_epoch must be >= 1, got {total_steps}, {steps_per_epoch}")
    epochs = -(-total_steps // steps_per_epoch)  # ceil
    return half_cosine_lr_factor(step // steps_per_epoch, epochs)


def lr_factor(schedule: str, step: int, total_steps: int, steps_per_epoch: int | None = None) -> float:
    """The learning-rate factor of ``schedule`` (``optim.schedule``) at step ``k``.

    Args:
        schedule: ``"cosine"`` (:func:`cosine_lr_factor`), ``"half_cosine"``
            (:func:`half_cosine_lr_factor`) or ``"epoch_half_cosine"`` (:func:`epoch_half_cosine_lr_factor`).
        step: training step ``k`` (0-based).
        total_steps: total steps ``K``.
        steps_per_epoch: steps per epoch; needed by ``"epoch_half_cosine"``.

    Returns:
        The factor to multiply the base learning rate by.

    Raises:
        ValueError: If ``schedule`` is unknown or ``steps_per_epoch`` is missing.
    """
    if schedule == "cosine":
        return cosine_lr_factor(step, total_steps)
    if schedule == "half_cosine":
        return half_cosine_lr_factor(step, total_steps)
    if schedule == "epoch_half_cosine":
        if steps_per_epoch is None:
            raise ValueError("the epoch_half_cosine schedule needs steps_per_epoch")
        return epoch_half_cosine_lr_factor(step, total_steps, steps_per_epoch)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected 'cosine', 'half_cosine' or 'epoch_half_cosine'")
