"""Errors that orthoxfer reports to a user as one line instead of a traceback.

The CLI maps :class:`UsageError` to exit code 2 (the input is wrong: change the
command) and every other :class:`OrthoxferError` to exit code 1 (the work failed).
"""


class OrthoxferError(Exception):
    """A failure with a message a user can act on."""


class UsageError(OrthoxferError, ValueError):
    """Input that cannot be used as given: an unknown name, an impossible setting."""


class OrthoxferWarning(UserWarning):
    """orthoxfer's own warnings: the CLI shows these while it hides third-party ones (unless --verbose)."""
