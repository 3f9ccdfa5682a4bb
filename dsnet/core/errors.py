"""Error types shared by every layer.

`InputError` means "the user gave us something we cannot use": the CLI prints its
one-line message on stderr and exits with status 2, without a traceback. Anything else
escaping a command is an unexpected failure (exit status 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike


def printable(text: str) -> str:
    """`text` with control characters escaped (a newline as backslash-n): no forged lines."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class DsnetError(Exception):
    """Base class of the errors this package raises on purpose."""


class InputError(DsnetError):
    """A bad input: names the file (or argument) and what is wrong with it, in one line.

    Args:
        path: The offending file, folder or argument name.
        reason: What is wrong, as a short phrase without a trailing period.
    """

    def __init__(self, path: str | PathLike[str], reason: str) -> None:
        self.path = printable(str(path))
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")


class DataValidationError(InputError):
    """A data dir (or other collection) with one or more problems, all reported at once.

    Args:
        path: The collection that failed validation.
        problems: One line per problem, each naming the file and what is wrong.
    """

    def __init__(self, path: str | PathLike[str], problems: Sequence[str]) -> None:
        self.problems = [" ".join(str(p).split()) for p in problems]
        count = len(self.problems)
        first = self.problems[0] if self.problems else "invalid"
        more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
        super().__init__(path, f"{first}{more}")
