"""The one exception type for mistakes a user can make (bad config, missing data, ...).

The command line catches it, prints its message as a single ``comatch: error: ...`` line on
stderr and exits with status 2, without a traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""

    exit_code = 2


class TrainingDiverged(UserError):
    """Training produced non-finite losses or gradients; the last good checkpoint is kept."""

    exit_code = 1


class DataChanged(UserError):
    """Images of the run's data folders vanished (or stopped decoding) while it trained."""

    @property
    def what(self) -> str:
        """The one line saying what changed (a loader worker's copy wraps it in its traceback)."""
        lines = [line.strip() for line in str(self).splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        return last.split("DataChanged: ", 1)[-1]
