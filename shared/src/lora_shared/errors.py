"""Errors that mean "the user must fix something": the CLI turns them into one line on stderr and exit 2."""


class UsageError(Exception):
    """Bad flag, bad config, or a missing file: exit 2, no traceback."""

    exit_code = 2


class DataError(UsageError):
    """A record in the user's data is invalid. The message names the file, the record and the fix."""
