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
