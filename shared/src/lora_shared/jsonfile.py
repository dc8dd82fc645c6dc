"""Read JSON / JSON Lines data files so that every failure is one DataError naming file:line and the cause.

json.loads recurses once per nesting level, so `[` x 100000 (a few hundred KB) is a RecursionError
traceback rather than a syntax error; here it is reported like any other malformed record.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lora_shared.errors import DataError

# A JSON string (escapes included) or a bracket: strings are skipped so that "[[" inside one is not nesting.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class JSONError(ValueError):
    """Why a JSON text cannot be parsed: str() is the cause ("Expecting ',' delimiter at column 12"),
    `lineno` its 1-based line within that text."""

    def __init__(self, cause: str, lineno: int = 1):
        super().__init__(cause)
        self.lineno = lineno


def _deepest(text: str) -> tuple[int, int]:
    """(max nesting depth, line where it is first reached); only run after a RecursionError."""
    depth = best = best_pos = 0
    for m in _TOKEN.finditer(text):
        ch = m.group()
        if ch in "[{":
            depth += 1
            if depth > best:
                best, best_pos = depth, m.start()
        elif ch in "]}":
            depth -= 1
    return best, text.count("\n", 0, best_pos) + 1


def loads(text: str) -> Any:
    """json.loads whose every failure is a JSONError: bad syntax, and nesting too deep to parse.

    Raises:
        JSONError: the cause and its line; callers say "not valid JSON (<cause>)" with their file:line.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise JSONError(f"{e.msg} at column {e.colno}", e.lineno) from None
    except RecursionError:
        depth, line = _deepest(text)
        raise JSONError(
            f"nested {depth} levels deep, more than Python's JSON parser can read: about "
            f"{sys.getrecursionlimit()}",
            line,
        ) from None


def read_text(path: str | Path) -> str:
    """A data file's UTF-8 text (a BOM is dropped); unreadable or non-UTF-8 files are a DataError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:  # a file saved in GBK/Latin-1, or one bad line pasted in
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 ({e.reason}); re-save the file as UTF-8") from None


def read_json(path: str | Path, fix: str = "") -> Any:
    """The parsed content of a whole-file JSON document.

    Args:
        path: the file.
        fix: appended to the error ("; " + fix), e.g. what the file should look like.

    Raises:
        DataError: "<path>:<line>: not valid JSON (...)", not UTF-8, or unreadable.
    """
    try:
        return loads(read_text(path))
    except JSONError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e})" + (f"; {fix}" if fix else "")) from None


def iter_jsonl(path: str | Path, fix: str = "") -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of a JSON Lines file.

    Raises:
        DataError: at the first line that is not valid JSON ("<path>:<line>: not valid JSON (...)").
    """
    # split("\n"), not splitlines(): U+2028 and friends are legal inside JSON strings, not line breaks.
    for n, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield n, loads(line)
        except JSONError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e})" + (f"; {fix}" if fix else "")) from None
