"""Keep source paths, names and patient identifiers out of reports, logs and commits.

A hospital export names files and folders after the patient (``Doe_John_19450317_
ACC778899.dcm``), so no report, log line, MLflow artifact or commit written from a
source may carry a source path or any part of one. They carry instead:

- `source_ref(path, key)`: a keyed hash of the path relative to the source folder (the
  same file gives the same reference under the same key, so a data manager holding the
  key can find it: ``source_ref("dicom/x.dcm", key)``);
- in free text (rejection reasons), `Redactor` replaces, case-insensitively, every
  original patient ID by its pseudonym, every patient-name part by ``[name]``, every
  source path and file or folder name by ``[path]`` and the source folder by
  ``<source>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any

from dsnet.io.deid import keyed_hex, pseudonym

NAME_MASK = "[name]"
PATH_MASK = "[path]"
SOURCE_MASK = "<source>"
MIN_PART_CHARS = 3
"""Name parts and path components shorter than this are not masked in free text."""


def source_ref(path: str | PurePath, key: bytes | str) -> str:
    """Return the keyed reference of a source path: ``src-`` + 16 hex characters.

    Args:
        path: The path relative to the source folder (``/`` or os separators).
        key: The project's secret de-identification key.

    Returns:
        ``src-<hex>``, stable per (path, key), unlinkable to the path without the key.

    """
    return f"src-{keyed_hex(key, 'source-path', PurePath(path).as_posix())}"


def batch_ref(name: str, key: bytes | str) -> str:
    """Return the keyed label of an inbox batch: ``batch-`` + 12 hex characters."""
    return f"batch-{keyed_hex(key, 'batch', name)[:12]}"


class Redactor:
    """Redact free text and source items of a report (see the module docstring).

    Args:
        key: The de-identification key (pseudonyms and references).
        patient_ids: Original patient IDs (replaced by their pseudonyms).
        patient_names: Original PatientName values (parts split at ``^``, ``=``, spaces).
        source: The source folder (replaced by ``<source>``; its files and folders, at
            any depth, are masked by name).
        structural: Items that name a part of the source layout rather than a file
            (``annotations.json``, ``dxa.csv``...): kept as they are in `item`, and their
            names are not masked in text.

    """

    def __init__(
        self,
        key: bytes | str,
        patient_ids: Iterable[str] = (),
        patient_names: Iterable[str] = (),
        source: Path | None = None,
        structural: Iterable[str] = (),
    ) -> None:
        self._key = key
        self._structural = tuple(structural)
        replace: dict[str, str] = {}
        paths: set[str] = set()
        if source is not None:
            for path in source.rglob("*"):
                rel = path.relative_to(source)
                paths.add(rel.as_posix())
                paths.update(rel.parts)
                paths.add(path.stem)
        keep = {n.lower() for s in self._structural for n in (s, PurePath(s).stem)} | {"dicom"}
        for part in paths:
            if len(part) >= MIN_PART_CHARS and part.lower() not in keep:
                replace[part.lower()] = PATH_MASK
        for name in patient_names:
            for part in re.split(r"[\^= ]+", name):
                if len(part) >= MIN_PART_CHARS:
                    replace[part.lower()] = NAME_MASK
        for pid in patient_ids:
            if pid:
                replace[pid.lower()] = pseudonym(pid, key)
        if source is not None:
            for text in {str(source), str(source.resolve())}:
                replace[text.lower()] = SOURCE_MASK
        self._replace = replace
        terms = sorted(replace, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE) if terms else None
        )

    def text(self, value: Any) -> Any:
        """Redact a string (other values pass through)."""
        if not isinstance(value, str) or self._pattern is None:
            return value
        return self._pattern.sub(lambda m: self._replace[m.group(0).lower()], value)

    def item(self, item: str) -> str:
        """A rejected item: a structural one redacted as text, a source path as its ref."""
        if item.startswith(self._structural):
            return self.text(item)
        return source_ref(item, self._key)

    def entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A report entry: ``source`` via `item`, ``reason`` via `text`.

        The other fields (output files, pseudonyms, keyed UIDs) are ours and pass through.
        """
        redacted = dict(entry)
        if "source" in entry:
            redacted["source"] = self.item(str(entry["source"]))
        if "reason" in entry:
            redacted["reason"] = self.text(entry["reason"])
        return redacted
