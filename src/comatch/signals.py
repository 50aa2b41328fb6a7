"""Stopping a run cleanly however it is signalled.

``comatch train`` installs :class:`StopSignals` first thing (before torch is imported), so a
SIGINT or SIGTERM at any moment, to the process or to its whole process group, becomes a
request: data loading goes on, the training loop sees the request before (or after) its
current step, writes a checkpoint, prints the resume command and the command exits 0.
The data-loader workers ignore both signals (:func:`ignore_stop_signals`): the training
process stops them. While the end-of-run report is drawn (the run is complete and saved), a
signal interrupts the drawing at once (:class:`Terminated`). A second signal always
interrupts at once (KeyboardInterrupt).

Only the standard library is imported here.
"""

from __future__ import annotations

import signal
from typing import Any

_ACTIVE: "StopSignals | None" = None


class Terminated(BaseException):
    """A signal arrived while the run was already complete (during the end-of-run report).

    A BaseException, like KeyboardInterrupt, so that ``except Exception`` blocks (such as the
    report's) do not swallow it.
    """


class StopSignals:
    """Context manager turning SIGTERM and SIGINT into a request to stop after this step.

    Inside the block, the first signal sets :attr:`requested` (and :attr:`name`); the loop
    finishes its step, checkpoints and exits cleanly. A second signal raises
    KeyboardInterrupt. With :attr:`immediate` set, the first signal raises
    :class:`Terminated` instead. Entering while another block is active reuses that block's
    state (the command line's block covers the trainer's). Outside the main thread (where
    handlers cannot be installed) it does nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self.immediate = False
        self.name = ""
        self._previous: dict[int, Any] = {}
        self._outer: StopSignals | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.name = True, signal.Signals(signum).name
        if self.immediate:
            raise Terminated(self.name)

    def __enter__(self) -> "StopSignals":
        global _ACTIVE
        if _ACTIVE is not None:
            self._outer = _ACTIVE
            return _ACTIVE
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
            self._previous.clear()
            return self
        _ACTIVE = self
        return self

    def __exit__(self, *exc: Any) -> None:
        global _ACTIVE
        if self._outer is not None:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if _ACTIVE is self:
            _ACTIVE = None


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of the data loaders: SIGINT and SIGTERM to the process group are the
    training process's to handle (it shuts the workers down); a worker must not die of them."""
    del worker_id
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
