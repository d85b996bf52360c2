"""The one exception for mistakes a user can fix (paths, flags, data).

Stage scripts turn it into a single line on stderr and exit status 2; anything else is a bug and
stays a traceback.
"""


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do about it."""


class Stopped(Exception):
    """A run that stopped early on purpose (a signal, or a planned pause) after saving a checkpoint."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
