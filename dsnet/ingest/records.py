"""Ingest records: accepted slices, what a source yields, what an ingest reports.

Shared by every source form (`dsnet.ingest.sources`, `dsnet.ingest.csv_source`) and by
`dsnet.ingest.write`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from dsnet.core.errors import InputError
from dsnet.core.inputs import not_regular_reason
from dsnet.io import CTSlice, read_slice
from dsnet.io.deid import deidentify

REPORT_FORMAT = "dsnet-ingest-report/1"


Box = tuple[float, float, float, float, int, float]
"""(x, y, w, h, category_id, t_score): a COCO box in stored pixels with its label."""


@dataclass(frozen=True)
class SliceRecord:
    """One accepted source slice with its labels (original identifiers; never written).

    Attributes:
        source: Source DICOM file.
        patient_id: Original PatientID (equal to the file's header).
        vertebra: "L1".."L4".
        width: Columns of the stored image.
        height: Rows of the stored image.
        boxes: The slice's boxes (`Box`).
    """

    source: Path
    patient_id: str
    vertebra: str
    width: int
    height: int
    boxes: tuple[Box, ...]


@dataclass
class Intake:
    """What a source yields: accepted records, the T-scores they need, rejections.

    Attributes:
        source: The source (data dir or CSV file).
        form: "data-dir" or "csv".
        records: Accepted slices.
        dxa: (original patient_id, vertebra) -> T-score, for the accepted patients.
        rejected: (item relative to the source folder, reason) for every rejected file or
            record.
        patient_ids: Original patient IDs seen (kept out of the report).
        patient_names: Original PatientName values seen (masked in the report).
    """

    source: Path
    form: str
    records: list[SliceRecord] = field(default_factory=list)
    dxa: dict[tuple[str, str], float] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    patient_ids: set[str] = field(default_factory=set)
    patient_names: set[str] = field(default_factory=set)

    @property
    def base(self) -> Path:
        """The folder source paths are relative to."""
        return self.source if self.source.is_dir() else self.source.parent

    def reject(self, item: str | Path, reason: str) -> None:
        """Record a rejected file (or record) and why."""
        self.rejected.append((str(item), reason))

    def learn_identities(self, path: Path) -> pydicom.Dataset | None:
        """Remember a file's PatientID and PatientName (header read); None if unreadable."""
        if not_regular_reason(path) is not None:  # a FIFO would block the reader
            return None
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            self.patient_ids.add(str(header.get("PatientID", "")))
            self.patient_names.add(str(header.get("PatientName", "")))
        except Exception:  # noqa: BLE001 - unreadable files carry no identity to hide
            return None
        return header

    def read_slice(self, path: Path, key: str) -> tuple[CTSlice | None, str | None]:
        """Read a source slice fully and check that it can be de-identified.

        Returns:
            (slice, None) when usable, else (None, reason). The file's PatientID and
            PatientName are remembered for redaction either way.
        """
        header = self.learn_identities(path)
        if not_regular_reason(path) is not None:
            return None, not_regular_reason(path)
        try:
            ct = read_slice(path)
            deidentify(header, key)
        except InputError as exc:
            return None, exc.reason
        except Exception as exc:  # noqa: BLE001 - any parser failure: not a usable DICOM
            return None, f"unreadable DICOM ({' '.join(str(exc).split())[:120]})"
        return ct, None


@dataclass(frozen=True)
class IngestReport:
    """The outcome of an ingest, as written to ``<out>/ingest_report.json``.

    Attributes:
        out_dir: The written data dir.
        form: Source form, "data-dir" or "csv".
        accepted: One entry per written slice: ``source`` (keyed reference), ``file``,
            ``patient_id`` (pseudonym), ``vertebra``, ``boxes``.
        rejected: One entry per rejected file or record: ``source`` (keyed reference of a
            file, or the record in annotations.json / dxa.csv / the CSV), ``reason``.
    """

    out_dir: Path
    form: str
    accepted: list[dict[str, Any]]
    rejected: list[dict[str, str]]

    def to_json(self) -> dict[str, Any]:
        """Return the report file's content."""
        return {
            "format": REPORT_FORMAT,
            "source_form": self.form,
            "summary": {
                "accepted": len(self.accepted),
                "rejected": len(self.rejected),
                "patients": len({entry["patient_id"] for entry in self.accepted}),
            },
            "accepted": self.accepted,
            "rejected": self.rejected,
        }
