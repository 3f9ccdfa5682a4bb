"""The CSV source form of ingest: DICOM files plus one CSV row per box.

Columns (any order, docs/data.md): ``file`` (DICOM path relative to the CSV's folder),
``patient_id`` (must equal the file's PatientID), ``vertebra`` (L1..L4), ``x1, y1, x2,
y2`` (box corners in pixels of the stored image, pixel-edge coordinates: x in [0,
Columns], y in [0, Rows]) and ``t_score`` (the DXA T-score of that patient's vertebra).
A slice shows one vertebral body, so all rows of a file name the same patient and
vertebra; every (patient, vertebra) has one T-score. A file is accepted or rejected as a
whole; files under the CSV's folder that no row names are rejected too.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from dsnet.core.errors import InputError
from dsnet.core.inputs import read_text
from dsnet.data import contract
from dsnet.data.classes import who_class
from dsnet.data.dxa import check_t_score, check_vertebra, parse_t_score
from dsnet.ingest.records import Box, Intake, SliceRecord
from dsnet.io import CTSlice

CSV_COLUMNS = ("file", "patient_id", "vertebra", "x1", "y1", "x2", "y2", "t_score")


@dataclass
class _FileRows:
    """The rows of one file: labels and the problems found while parsing them."""

    patient_ids: set[str] = field(default_factory=set)
    vertebrae: set[str] = field(default_factory=set)
    t_scores: set[float] = field(default_factory=set)
    corners: list[tuple[float, float, float, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_csv_source(csv_path: Path, key: str) -> Intake:
    """Read a CSV source into accepted records and rejections (see the module docstring).

    Raises:
        InputError: When the CSV cannot be read or lacks a column.

    """
    intake = Intake(source=csv_path, form="csv")
    files = _parse_rows(csv_path, intake)
    pair_t: dict[tuple[str, str], set[float]] = {}
    for rows in files.values():
        for pair in ((p, v) for p in rows.patient_ids for v in rows.vertebrae):
            pair_t.setdefault(pair, set()).update(rows.t_scores)

    for name, rows in files.items():
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            intake.reject(name, "file must be relative to the CSV's folder")
            continue
        ct, problem = intake.read_slice(intake.base / rel, key)
        reasons = list(rows.problems)
        if len(rows.patient_ids) > 1 or len(rows.vertebrae) > 1 or len(rows.t_scores) > 1:
            reasons.append("rows of one file must agree on patient_id, vertebra and t_score")
        if ct is not None and not reasons:
            reasons += _check_file(ct, rows, pair_t)
        if ct is None or reasons:
            intake.reject(name, "; ".join(reasons or [str(problem)]))
            continue
        patient, vertebra, t = rows.patient_ids.pop(), rows.vertebrae.pop(), rows.t_scores.pop()
        height, width = ct.hu.shape
        boxes: tuple[Box, ...] = tuple(
            (x1, y1, x2 - x1, y2 - y1, who_class(t), t) for x1, y1, x2, y2 in rows.corners
        )
        intake.records.append(SliceRecord(ct.path, patient, vertebra, width, height, boxes))
        intake.dxa[(patient, vertebra)] = t

    listed = {str(Path(name)) for name in files}
    for file in sorted(intake.base.rglob("*")):
        rel = file.relative_to(intake.base)
        hidden = any(part.startswith(".") for part in rel.parts)
        if (
            file.is_file()
            and not hidden
            and file.suffix.lower() != ".csv"
            and str(rel) not in listed
        ):
            intake.learn_identities(file)
            intake.reject(rel, "no row in the CSV")
    return intake


def _parse_rows(csv_path: Path, intake: Intake) -> dict[str, _FileRows]:
    """File name -> its rows' labels, in order of first appearance."""
    text = read_text(csv_path)
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in CSV_COLUMNS if c not in columns]
    if missing:
        raise InputError(
            csv_path, f"missing column(s) {', '.join(missing)}; need {','.join(CSV_COLUMNS)}"
        )
    files: dict[str, _FileRows] = {}
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not row.get("file"):
            intake.reject(f"CSV line {line}", "empty file column")
            continue
        rows = files.setdefault(row["file"], _FileRows())
        intake.patient_ids.add(row["patient_id"])
        numbers = {c: parse_t_score(row[c]) for c in ("x1", "y1", "x2", "y2", "t_score")}
        bad = [c for c, value in numbers.items() if value is None]
        problem = (
            check_vertebra(row["vertebra"])
            or (f"{', '.join(bad)} not a finite number" if bad else None)
            or check_t_score(row["t_score"])
        )
        if not row["patient_id"]:
            problem = "empty patient_id"
        if problem:
            rows.problems.append(f"line {line}: {problem}")
            continue
        rows.patient_ids.add(row["patient_id"])
        rows.vertebrae.add(row["vertebra"])
        rows.t_scores.add(numbers["t_score"])
        rows.corners.append(tuple(numbers[c] for c in ("x1", "y1", "x2", "y2")))
    return files


def _check_file(
    ct: CTSlice, rows: _FileRows, pair_t: dict[tuple[str, str], set[float]]
) -> list[str]:
    """Reasons why a decoded slice disagrees with its rows."""
    (patient,), (vertebra,) = rows.patient_ids, rows.vertebrae
    reasons = []
    if ct.patient_id != patient:
        reasons.append(f"DICOM PatientID {ct.patient_id!r} differs from patient_id {patient!r}")
    height, width = ct.hu.shape
    for x1, y1, x2, y2 in rows.corners:
        problem = contract.check_box([x1, y1, x2 - x1, y2 - y1], width, height)
        if problem:
            reasons.append(problem)
    if len(pair_t[(patient, vertebra)]) > 1:
        values = ", ".join(f"{t:g}" for t in sorted(pair_t[(patient, vertebra)]))
        reasons.append(f"conflicting t_score for {patient} {vertebra} across files: {values}")
    return reasons
