"""Atomic file writing: a reader never sees a half-written file or folder.

Every output of the package goes through these helpers: data is written to a temporary
sibling and renamed into place, so an interrupted or failed step leaves the previous
version of the output untouched.

- Outputs get the modes a plain ``open``/``mkdir`` would give: files ``0o666 & ~umask``,
  folders ``0o777 & ~umask`` (temporary files start private; they are widened before
  the rename, so a shared model or metrics file is readable by the next pod).
- A file is never replaced by a folder nor a folder by a file: that is an `InputError`.
- Temporaries are named ``.<name>.<host>-<pid>-<random>.tmp`` (and an old folder being
  swapped out ``.<name>.<host>-<pid>-old.tmp``): when a writer starts, the ones a killed
  run on this host left for the same output (its process is gone) are deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsnet.core.errors import InputError

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
_OURS: set[Path] = set()
"""Temporaries this process created (a killed earlier run may have had our pid)."""


def umask() -> int:
    """The process's file mode creation mask (read without changing it, where possible)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_HOST}-{os.getpid()}-"


def clean_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of `path` left by killed writers on this host (module docstring).

    Returns:
        The deleted paths.

    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{re.escape(_HOST)}-(\d+)-.*\.tmp$")
    removed = []
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            match = pattern.match(entry.name)
            if match is None or entry in _OURS:
                continue
            pid = int(match.group(1))
            if pid != os.getpid() and _alive(pid):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prepare_file(path: Path) -> None:
    """Refuse a folder where a file goes; make the parent; clean stale temporaries."""
    if path.is_dir():
        raise InputError(path, "is a folder; expected a file to write")
    _check_parents(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)


def _check_parents(path: Path) -> None:
    """Refuse a path below an existing file (``out.json/x``): it cannot become a folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(parent, "is a file; expected a folder")
            return


def _new_temp_file(path: Path, suffix: str) -> tuple[int, Path]:
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent)
    os.chmod(tmp, 0o666 & ~umask())
    _OURS.add(Path(tmp))
    return fd, Path(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same folder and a rename.

    Args:
        path: Destination file; parent folders are created.
        data: The complete file content.

    Returns:
        The destination path.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically (see `atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write `obj` as indented, key-sorted JSON to `path` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces `path`.

    Use for writers that want a filename (``torch.save``, ``PIL.Image.save``,
    ``matplotlib.savefig``). On an exception the temporary file is removed and `path`
    is left as it was.
    """
    path = Path(path)
    _prepare_file(path)
    fd, tmp = _new_temp_file(path, f"{path.suffix}.tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        _OURS.discard(tmp)


def check_replaceable(path: str | os.PathLike[str], made_by_us: bool, writer: str) -> None:
    """Refuse to replace a folder that is not the writer's own earlier output.

    Args:
        path: The output folder about to be replaced by `atomic_dir`.
        made_by_us: Whether `path` holds an earlier output of this writer.
        writer: The command, for the message (``dsnet synth``).

    Raises:
        InputError: `path` is a file, the current folder or one above it, or a non-empty
            folder that `writer` did not make.

    """
    path = Path(os.path.abspath(path))
    if path.exists() and not path.is_dir():
        raise InputError(path, "is a file; expected a folder to write")
    if path == Path.cwd() or path in Path.cwd().parents:
        raise InputError(path, "is the current folder or contains it; pick a new folder")
    if path.is_dir() and any(path.iterdir()) and not made_by_us:
        raise InputError(
            path, f"is not empty and not an earlier {writer} output; pick a new folder"
        )


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces the folder `path`.

    The old folder (if any) is moved aside and deleted only after the new one is in
    place. On an exception the temporary folder is deleted and `path` is untouched.
    """
    path = Path(os.path.abspath(path))
    if path.exists() and not path.is_dir():
        raise InputError(path, "is a file; expected a folder to write")
    _check_parents(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~umask())
    _OURS.add(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _OURS.discard(tmp)
        raise
    old = None
    if path.exists():
        old = path.with_name(f"{_temp_prefix(path)}old.tmp")
        _OURS.add(old)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    _OURS.discard(tmp)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        _OURS.discard(old)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Return the hex SHA-256 of a file (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
