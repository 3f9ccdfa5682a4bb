"""Write accepted records as a de-identified data dir (the second half of an ingest).

Every DICOM file is de-identified with `dsnet.io.deid.deidentify` under the secret key and
renamed ``dicom/<pseudonym>/<vertebra>_<k>.dcm``; report text is redacted by
`dsnet.io.redact.Redactor`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydicom

from dsnet.core.fsutil import atomic_write_text
from dsnet.data import contract, files
from dsnet.data.classes import CATEGORIES
from dsnet.data.dxa import DXA_COLUMNS, DXA_FILE
from dsnet.ingest.records import Intake
from dsnet.io.deid import deidentify, pseudonym


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
    atomic_write_text(out_dir / DXA_FILE, dxa_csv(intake.dxa, key))
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
    writer.writerow(DXA_COLUMNS)
    rows = sorted((pseudonym(patient, key), vertebra, t) for (patient, vertebra), t in dxa.items())
    writer.writerows((patient, vertebra, repr(t)) for patient, vertebra, t in rows)
    return buffer.getvalue()
