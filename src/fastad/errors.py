"""User-facing errors.

A ``UserError`` is a mistake in what the user asked for (a bad config value, a missing file, a
checkpoint for another architecture). The CLI prints its message as one line and exits with
code 2; library callers can catch it like any ``ValueError``.
"""


class UserError(ValueError):
    """A problem with the user's input; the message is one line naming what is wrong."""

    exit_code = 2
