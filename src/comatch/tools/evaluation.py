"""Evaluation of a classifier on a labelled dataset (the functions live in
:mod:`comatch.training.evaluation`, where the training loop uses them too)."""

from comatch.training.evaluation import Preprocess, accuracy, network_outputs, predict

__all__ = ["Preprocess", "accuracy", "network_outputs", "predict"]
