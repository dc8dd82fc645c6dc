"""Errors that mean "the user must fix something": the CLI turns them into one line on stderr and exit 2."""

from __future__ import annotations

import errno
import re


class UsageError(Exception):
    """Bad flag, bad config, or a missing file: exit 2, no traceback."""

    exit_code = 2


class DataError(UsageError):
    """A record in the user's data is invalid. The message names the file, the record and the fix."""


# What the user can fix about a failed write: free space, or write somewhere else / fix permissions.
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded (no space left on device for this user)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
}
# Libraries that write through their own I/O layer re-raise a failed write as their own exception:
# safetensors' Rust writer ("... No space left on device (os error 28)"), torch's zip writer.
_DISK_FULL_TEXT = re.compile(r"no space left on device|os error 28\b|StorageFull|disk quota exceeded", re.I)
_TORCH_WRITE_FAILED = "PytorchStreamWriter failed writing file"


def storage_error(exc: BaseException | None) -> tuple[str, str | None] | None:
    """(cause, filename or None) when `exc`, or an exception it was raised from, is a failed write the user
    can fix (disk full, read-only, permission denied); None for anything else."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return STORAGE_ERRNOS[exc.errno], exc.filename
        text = str(exc)
        if _DISK_FULL_TEXT.search(text):
            return STORAGE_ERRNOS[errno.ENOSPC], None
        if _TORCH_WRITE_FAILED in text:
            return "a write failed (no space left on device?)", None
        exc = exc.__cause__ or exc.__context__
    return None
