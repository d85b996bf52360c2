"""The one exception for mistakes a user can fix (paths, flags, data).

Stage scripts turn it into a single line on stderr and exit status 2; anything else is a bug and
stays a traceback.
"""


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do about it."""
