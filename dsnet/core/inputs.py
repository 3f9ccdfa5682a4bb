"""Read user-supplied files safely: regular files only, one-line `InputError`s.

A FIFO, device or socket given where a file is expected would block a reader forever
(or stream without end), so only regular files are opened. Text is UTF-8 with an
optional byte-order mark (spreadsheet exports add one); JSON nested too deeply for the
parser is refused like any other invalid JSON.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from dsnet.core.errors import InputError


def not_regular_reason(path: str | os.PathLike[str]) -> str | None:
    """Why `path` cannot be read as a file (missing, folder, FIFO, device), or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder; expected a file"
    kind = "FIFO" if stat.S_ISFIFO(mode) else "device or socket"
    return f"is a {kind}, not a regular file; refused"


def check_regular_file(path: str | os.PathLike[str]) -> Path:
    """Return `path` if it is a regular file; else raise `InputError` naming it."""
    reason = not_regular_reason(path)
    if reason is not None:
        raise InputError(path, reason)
    return Path(path)


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a regular UTF-8 text file (a leading byte-order mark is dropped).

    Raises:
        InputError: Missing, not a regular file, unreadable or not UTF-8.

    """
    check_regular_file(path)
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a regular JSON file.

    Raises:
        InputError: As `read_text`, or on invalid JSON (with line and column) or JSON
            nested too deeply to parse.

    """
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise InputError(path, "invalid JSON: nested too deeply") from None
