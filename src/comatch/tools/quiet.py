"""Keeping scikit-learn's and matplotlib's own warnings off the user's terminal."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence the warnings raised while scikit-learn or matplotlib work (convergence,
    degenerate data, layout): the commands say in their own words what matters.

    Also usable as a decorator: ``@quiet_libraries()``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
