"""Write accepted records as a de-identified data dir (the second half of an ingest).

Every DICOM file is de-identified with `dsnet.io.deid.deidentify` under the secret key and
renamed ``dicom/<pseudonym>/<vertebra>_<k>.dcm``; `Redactor` masks original identifiers
in report text.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pydicom

from dsnet.core.fsutil import atomic_write_text
from dsnet.data import contract, files
from dsnet.data.classes import CATEGORIES
from dsnet.ingest.records import Intake
from dsnet.io.deid import deidentify, pseudonym

NAME_MASK = "[name]"


def write_intake(intake: Intake, out_dir: Path, key: str) -> list[dict[str, Any]]:
    """Write accepted records as a data dir in `out_dir` (de-identified; new ids, names).

    Returns:
        One entry per written slice: ``source`` (relative to the source folder),
        ``file`` (relative to `out_dir`), ``patient_id`` (pseudonym), ``vertebra``,
        ``boxes`` (count).

    """
    images, annotations, accepted = [], [], []
    counts: dict[tuple[str, str], int] = {}
    ordered = sorted(
        ((pseudonym(r.patient_id, key), r) for r in intake.records),
        key=lambda pr: (pr[0], pr[1].vertebra, str(pr[1].source)),
    )
    for patient, record in ordered:
        k = counts.get((patient, record.vertebra), 0)
        counts[(patient, record.vertebra)] = k + 1
        rel = f"{files.DICOM_DIR}/{patient}/{record.vertebra}_{k}.dcm"
        write_deidentified(record.source, out_dir / rel, key)
        image_id = len(images) + 1
        images.append(
            {
                "id": image_id,
                "file_name": rel,
                "width": record.width,
                "height": record.height,
                "patient_id": patient,
                "vertebra": record.vertebra,
            }
        )
        for x, y, w, h, category, t in record.boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "vertebra": record.vertebra,
                    "t_score": t,
                }
            )
        accepted.append(
            {
                "source": str(record.source.relative_to(intake.base)),
                "file": rel,
                "patient_id": patient,
                "vertebra": record.vertebra,
                "boxes": len(record.boxes),
            }
        )
    coco = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    atomic_write_text(out_dir / contract.ANNOTATIONS_FILE, json.dumps(coco, indent=1) + "\n")
    atomic_write_text(out_dir / contract.DXA_FILE, dxa_csv(intake.dxa, key))
    return accepted


def write_deidentified(source: Path, dest: Path, key: str) -> None:
    """Write a de-identified copy of a DICOM file (pixels untouched)."""
    ds = pydicom.dcmread(source, force=True)
    clean = deidentify(ds, key)
    if "TransferSyntaxUID" not in clean.file_meta:  # a source without a file meta header
        clean.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian
            if ds.original_encoding[0]
            else pydicom.uid.ExplicitVRLittleEndian
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean.save_as(dest, enforce_file_format=True)


def dxa_csv(dxa: Mapping[tuple[str, str], float], key: str) -> str:
    """Return dxa.csv text for `dxa` (original ids) with patients replaced by pseudonyms."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(contract.DXA_COLUMNS)
    rows = sorted((pseudonym(patient, key), vertebra, t) for (patient, vertebra), t in dxa.items())
    writer.writerows((patient, vertebra, repr(t)) for patient, vertebra, t in rows)
    return buffer.getvalue()


class Redactor:
    """Replace original patient IDs by their pseudonyms and mask patient-name parts.

    One regular-expression pass, longest match first, so a replacement is never
    re-matched. Name parts (split at ``^``, ``=`` and spaces) of 3+ characters are
    matched case-insensitively.
    """

    def __init__(self, patient_ids: Iterable[str], patient_names: Iterable[str], key: str):
        self._pseudonyms = {pid: pseudonym(pid, key) for pid in patient_ids if pid}
        parts = {
            part.lower()
            for name in patient_names
            for part in re.split(r"[\^= ]+", name)
            if len(part) >= 3
        }
        alternatives = sorted(
            [(len(pid), re.escape(pid)) for pid in self._pseudonyms]
            + [(len(part), f"(?i:{re.escape(part)})") for part in parts],
            reverse=True,
        )
        pattern = "|".join(regex for _, regex in alternatives)
        self._pattern = re.compile(pattern) if pattern else None

    def __call__(self, value: Any) -> Any:
        """Redact a string; other values pass through."""
        if not isinstance(value, str) or self._pattern is None:
            return value
        return self._pattern.sub(lambda m: self._pseudonyms.get(m.group(0), NAME_MASK), value)
