"""Epochs and the methods' epoch-based ramps: pure functions of the step.

An epoch is one pass over the unlabelled pool at the global unlabelled batch size. Every
epoch-based rule (the learning-rate half cosine of :mod:`comatch.training.schedule`, the
``lambda_c`` ramp, the smoothing and momentum schedules) counts epochs with :func:`epoch_of`.
"""

from __future__ import annotations


def steps_per_epoch(unlabelled_batch: int, num_unlabelled: int) -> int:
    """Steps in one pass over the unlabelled set: ``ceil(|U| / (mu B))`` (a last, partial batch
    counts, as the released code's loaders make it)."""
    return max(1, -(-num_unlabelled // max(unlabelled_batch, 1)))


def epoch_of(step: int, unlabelled_batch: int, num_unlabelled: int) -> int:
    """The epoch step ``k`` falls in: ``floor(k / steps_per_epoch)``."""
    return step // steps_per_epoch(unlabelled_batch, num_unlabelled)


def ramped_lambda_c(lambda_c: float, step: int, unlabelled_batch: int, num_unlabelled: int) -> float:
    """The ImageNet ramp of the graph loss weight: ``min(epoch + 1, lambda_c)`` at step ``k``
    (epochs as :func:`epoch_of` counts them).

    Args:
        lambda_c: the final weight.
        step: training step ``k`` (0-based).
        unlabelled_batch: global unlabelled images per step ``mu * B``.
        num_unlabelled: size of the unlabelled set.
    """
    return float(min(epoch_of(step, unlabelled_batch, num_unlabelled) + 1, lambda_c))


def ramped_threshold(start: float, end: float, step: int, total_steps: int, ramp: float) -> float:
    """A confidence threshold ramped for short runs: ``start`` at step 0, moving linearly to
    ``end`` over the first ``ramp`` of the run's ``total_steps``, ``end`` from then on.

    Args:
        start, end: the thresholds at the first step and at the ramp's end.
        step: training step ``k`` (0-based).
        total_steps: the run's length (a time budget may refit it; the ramp follows).
        ramp: the fraction of the run the ramp takes, in ``(0, 1]``.
    """
    fraction = min(1.0, step / max(ramp * total_steps, 1e-9))
    return start + (end - start) * fraction
