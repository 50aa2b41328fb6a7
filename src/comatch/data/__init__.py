"""Data: the datasets a run trains and evaluates on, the views, and the loaders."""

from comatch.data.sources import RunData, build_data

__all__ = ["RunData", "build_data"]
