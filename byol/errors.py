"""The one exception for mistakes a user can fix (paths, flags, data).

Stage scripts turn it into a single line on stderr and exit status 2; anything else is a bug and
stays a traceback.
"""


def first_line(error: BaseException, limit: int = 160) -> str:
    """The gist of an exception for a one-line message: its first line, or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do about it."""


class Stopped(Exception):
    """A run that stopped early on purpose (a signal, or a planned pause) after saving a checkpoint."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
