"""User-facing errors.

A ``UserError`` is a mistake in what the user asked for (a bad config value, a missing file, a
checkpoint for another architecture). The CLI prints its message as one line and exits with
code 2; library callers can catch it like any ``ValueError``.
"""


class UserError(ValueError):
    """A problem with the user's input; the message is one line naming what is wrong."""

    exit_code = 2


class RunStopped(UserError):
    """A run stopped before its end (interrupted, or a non-finite loss); the message says what was kept and how
    to continue. ``exit_code`` 130 for an interrupt (as a shell reports SIGINT), else 2."""

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
