"""Merge a de-identified batch into the curated data dir without duplicating anything.

The curated data dir is a data dir (docs/data.md) plus two files that intake keeps:

- ``sources.csv``: one row per DICOM file: ``file``, ``sop_instance_uid``,
  ``study_instance_uid``, ``sha256`` (of the de-identified file) and ``batch`` (the
  inbox batch it came from), so every slice of a data version traces back to its study
  and its delivery;
- ``split.json``: the patient-level split (`dsnet.data.split`), carried forward from
  version to version (see `dsnet.ingest.intake.run`).

A slice is identified by its SOPInstanceUID after de-identification (a keyed pseudo-UID:
the same source UID gives the same value under the same key) and by the content hash of
the de-identified file. For each slice of a batch, in image order:

- SOPInstanceUID already curated with the same content: a *duplicate*, skipped;
- SOPInstanceUID already curated with other content, or twice in the batch: rejected;
- a patient whose T-score for some vertebra differs from the curated ``dxa.csv``: the
  T-scores are rejected (one entry per patient) and so are the patient's new slices
  (their diagnosis would be ambiguous);
- anything else is added as ``dicom/<patient>/<vertebra>_<k>.dcm`` (``k`` the first free
  index), with image and annotation ids continuing after the curated maxima, so ids of
  curated images never change; ``dxa.csv`` gains the rows of the added patients.

The merged data dir is written to a new folder: curated files are hard-linked into it
(copied across file systems), and the four files intake rewrites are replaced atomically,
never written in place, so the curated dir itself is never modified.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_text
from dsnet.data import contract, files
from dsnet.data.classes import CATEGORIES
from dsnet.data.contract import DataDir, load_data_dir
from dsnet.data.dxa import DXA_COLUMNS, DXA_FILE
from dsnet.data.split import read_split

SOURCES_FILE = "sources.csv"
SOURCES_COLUMNS = ("file", "sop_instance_uid", "study_instance_uid", "sha256", "batch")
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class Curated:
    """The curated data dir as it is now.

    Attributes:
        root: Its folder.
        data: The validated data dir, or None when it does not exist yet.
        sources: SOPInstanceUID -> its ``sources.csv`` row.
        split: Its ``split.json``, or None.
    """

    root: Path
    data: DataDir | None
    sources: dict[str, dict[str, str]]
    split: dict[str, Any] | None


@dataclass
class Merge:
    """What merging a batch did.

    Attributes:
        data: The merged, validated data dir.
        added: One entry per added slice: ``source`` (relative to the batch), ``file``
            (in the merged dir), ``patient_id``, ``vertebra``, ``sop_instance_uid``.
        duplicates: One entry per skipped slice: ``source`` and the curated ``file``.
        rejected: One entry per rejected slice: ``source`` and ``reason``.
        sources: The merged ``sources.csv`` rows.
    """

    data: DataDir
    added: list[dict[str, str]] = field(default_factory=list)
    sources: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)


def load_curated(root: Path) -> Curated:
    """Load the curated data dir (absent: empty) and check intake's bookkeeping.

    Raises:
        InputError: When ``sources.csv`` is missing (a folder intake did not make) or does
            not list exactly the data dir's images.
        DataValidationError: When the data dir is invalid.

    """
    if not root.exists():
        return Curated(root, None, {}, None)
    data = load_data_dir(root)
    sources_path = root / SOURCES_FILE
    if not sources_path.is_file():
        raise InputError(sources_path, "missing: the curated data dir was not made by intake")
    rows = list(csv.DictReader(sources_path.read_text(encoding="utf-8").splitlines()))
    listed = {row.get("file") for row in rows}
    if listed != {image["file_name"] for image in data.images} or len(listed) != len(rows):
        raise InputError(sources_path, f"does not list exactly the images of {root}")
    split_path = root / SPLIT_FILE
    split = read_split(split_path, data) if split_path.is_file() else None
    return Curated(root, data, {row["sop_instance_uid"]: row for row in rows}, split)


def merge_batch(
    curated: Curated, batch_dir: Path, written: list[dict[str, Any]], out_dir: Path, batch: str
) -> Merge:
    """Write the curated data plus the batch's new slices to `out_dir`.

    Args:
        curated: The curated data dir (`load_curated`).
        batch_dir: The batch as a de-identified data dir (`dsnet.ingest.write.write_intake`).
        written: ``write_intake``'s entries (``source`` and ``file`` per slice).
        out_dir: New folder for the merged data dir (must not exist).
        batch: The batch name, recorded in ``sources.csv``.

    Returns:
        The merged data dir and what happened to each slice of the batch.

    Raises:
        DataValidationError: If the merged data dir does not validate (a bug, not bad
            input: both halves were validated).

    """
    new = load_data_dir(batch_dir)
    source_of = {entry["file"]: str(entry["source"]) for entry in written}
    curated_dxa = curated.data.dxa if curated.data else {}
    conflicts = conflicting_patients(new.dxa, curated_dxa)
    merge = Merge(data=new)
    for patient, reason in conflicts.items():
        item = f"{DXA_FILE} rows of {patient}"
        merge.rejected.append({"source": item, "reason": reason})
    chosen: list[tuple[dict[str, Any], dict[str, str]]] = []
    in_batch: dict[str, str] = {}
    for image in new.images:
        source = source_of[image["file_name"]]
        row = slice_identity(batch_dir / image["file_name"], batch)
        known = curated.sources.get(row["sop_instance_uid"])
        if known is not None and known["sha256"] == row["sha256"]:
            merge.duplicates.append({"source": source, "file": known["file"]})
        elif known is not None:
            reason = f"SOPInstanceUID already curated as {known['file']} with other content"
            merge.rejected.append({"source": source, "reason": reason})
        elif row["sop_instance_uid"] in in_batch:
            reason = f"same SOPInstanceUID as {in_batch[row['sop_instance_uid']]}"
            merge.rejected.append({"source": source, "reason": reason})
        elif image["patient_id"] in conflicts:
            merge.rejected.append({"source": source, "reason": conflicts[image["patient_id"]]})
        else:
            in_batch[row["sop_instance_uid"]] = source
            chosen.append((image, row))

    if curated.data is not None:
        shutil.copytree(curated.root, out_dir, copy_function=link_or_copy)
    else:
        out_dir.mkdir(parents=True)
    images = list(curated.data.images) if curated.data else []
    annotations = (
        [a for anns in curated.data.annotations.values() for a in anns] if curated.data else []
    )
    sources = sorted(curated.sources.values(), key=lambda r: r["file"])
    taken = {image["file_name"] for image in images}
    next_image = max((i["id"] for i in images), default=0) + 1
    next_annotation = max((a["id"] for a in annotations), default=0) + 1
    for image, row in chosen:
        rel = free_file_name(taken, image["patient_id"], image["vertebra"])
        taken.add(rel)
        link_or_copy(batch_dir / image["file_name"], out_dir / rel)
        images.append({**image, "id": next_image, "file_name": rel})
        for ann in new.annotations[image["id"]]:
            annotations.append({**ann, "id": next_annotation, "image_id": next_image})
            next_annotation += 1
        next_image += 1
        sources.append({**row, "file": rel})
        merge.added.append(
            {
                "source": source_of[image["file_name"]],
                "file": rel,
                "patient_id": image["patient_id"],
                "vertebra": image["vertebra"],
                "sop_instance_uid": row["sop_instance_uid"],
            }
        )
    added_patients = {entry["patient_id"] for entry in merge.added}
    dxa = dict(curated_dxa)
    for (patient, vertebra), t in new.dxa.items():
        if patient in added_patients:
            dxa.setdefault((patient, vertebra), t)
    coco = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    atomic_write_text(out_dir / contract.ANNOTATIONS_FILE, json.dumps(coco, indent=1) + "\n")
    atomic_write_text(out_dir / DXA_FILE, dxa_csv_text(dxa))
    atomic_write_text(out_dir / SOURCES_FILE, sources_csv_text(sources))
    merge.data, merge.sources = load_data_dir(out_dir), sources
    return merge


def conflicting_patients(
    batch_dxa: dict[tuple[str, str], float], curated_dxa: dict[tuple[str, str], float]
) -> dict[str, str]:
    """Patients whose batch T-score of a vertebra differs from the curated one, with why."""
    conflicts: dict[str, str] = {}
    for (patient, vertebra), t in sorted(batch_dxa.items()):
        known = curated_dxa.get((patient, vertebra))
        if known is not None and abs(known - t) > contract.T_TOLERANCE and patient not in conflicts:
            conflicts[patient] = (
                f"T-score {t:g} of {patient} {vertebra} differs from the curated dxa.csv "
                f"({known:g}); the patient's new slices in this batch were not merged"
            )
    return conflicts


def slice_identity(path: Path, batch: str) -> dict[str, str]:
    """A de-identified slice's ``sources.csv`` row (``file`` left empty)."""
    data = path.read_bytes()
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return {
        "file": "",
        "sop_instance_uid": str(header.SOPInstanceUID),
        "study_instance_uid": str(header.get("StudyInstanceUID", "")),
        "sha256": hashlib.sha256(data).hexdigest(),
        "batch": batch,
    }


def free_file_name(taken: set[str], patient: str, vertebra: str) -> str:
    """The first ``dicom/<patient>/<vertebra>_<k>.dcm`` (k = 0, 1, ...) not in `taken`."""
    k = 0
    while f"{files.DICOM_DIR}/{patient}/{vertebra}_{k}.dcm" in taken:
        k += 1
    return f"{files.DICOM_DIR}/{patient}/{vertebra}_{k}.dcm"


def link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Hard-link `src` to `dst`, or copy it when linking is impossible."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def dxa_csv_text(dxa: dict[tuple[str, str], float]) -> str:
    """dxa.csv text, rows sorted by patient and vertebra, T-scores written exactly."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(DXA_COLUMNS)
    writer.writerows((p, v, repr(t)) for (p, v), t in sorted(dxa.items()))
    return buffer.getvalue()


def sources_csv_text(rows: list[dict[str, str]]) -> str:
    """sources.csv text, rows sorted by file."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SOURCES_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["file"]))
    return buffer.getvalue()
