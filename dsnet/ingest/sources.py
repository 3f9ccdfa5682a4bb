"""Ingest a real data set: check every file, de-identify, write a data dir and a report.

Two source forms (docs/data.md):

- a data dir in the contract's layout (``annotations.json``, ``dxa.csv``, ``dicom/``);
- a CSV of boxes and T-scores whose ``file`` column points at DICOM files relative to the
  CSV's folder (`dsnet.ingest.csv_source`).

Ingest is two steps, so that a later intake can merge accepted records into an existing
curated data dir: `read_source` turns a source into an `Intake` (accepted `SliceRecord`s,
the DXA T-scores they need, every rejected file with its reason), and `write_intake`
writes accepted records as a data dir. `ingest` runs both, validates the result with
`load_data_dir` and writes ``ingest_report.json``; the output folder is swapped in
atomically, so a failed ingest leaves an existing one untouched.

Privacy: every DICOM file is de-identified with `dsnet.io.deid.deidentify` under the
secret key (PatientID -> keyed pseudonym; annotations and dxa.csv follow it), files are
renamed ``dicom/<pseudonym>/<vertebra>_<k>.dcm``. Source paths are never written: the
report names a source file by its keyed reference (`dsnet.io.redact.source_ref` of its
path relative to the source folder), and in reasons original patient IDs become their
pseudonyms and patient names, source file and folder names are masked (`report_redactor`),
so no original identifier or file name is written to the output folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from dsnet.core.errors import DataValidationError, InputError
from dsnet.core.fsutil import atomic_dir, atomic_write_json
from dsnet.core.inputs import read_text
from dsnet.data import contract, files
from dsnet.data.dxa import DXA_FILE, read_dxa
from dsnet.ingest.csv_source import read_csv_source
from dsnet.ingest.records import Box, IngestReport, Intake, SliceRecord
from dsnet.ingest.write import write_intake
from dsnet.io.redact import Redactor

REPORT_FILE = "ingest_report.json"
KEY_ENV = "DSNET_DEID_KEY"
MIN_KEY_CHARS = 16


def resolve_key(key: str | None = None, key_file: str | PathLike[str] | None = None) -> str:
    """Pick the de-identification key: `key`, else `key_file`, else env ``DSNET_DEID_KEY``.

    Raises:
        InputError: No key anywhere, an unreadable key file, or a key shorter than 16
            characters (a short key lets anyone re-identify patients by trying IDs).

    """
    origin = "--key"
    if key is None and key_file is not None:
        origin = str(key_file)
        key = read_text(key_file).strip()
    if key is None and os.environ.get(KEY_ENV):
        origin, key = KEY_ENV, os.environ[KEY_ENV].strip()
    if key is None:
        raise InputError(
            "--key-file",
            f"de-identification needs a secret key: pass --key-file FILE or set {KEY_ENV}",
        )
    if len(key) < MIN_KEY_CHARS:
        raise InputError(origin, f"the key must have at least {MIN_KEY_CHARS} characters")
    return key


def ingest(
    src: str | PathLike[str], out_dir: str | PathLike[str], key: str | None = None
) -> IngestReport:
    """Import a real data set as a de-identified, validated data dir.

    Args:
        src: A data dir in the contract's layout, or a CSV of boxes (docs/data.md).
        out_dir: The data dir to write (replaced atomically if it is an earlier ingest).
        key: Secret de-identification key; None reads env ``DSNET_DEID_KEY``.

    Returns:
        The report, also written to ``<out_dir>/ingest_report.json``.

    Raises:
        InputError: On an unusable source, key or output folder.
        DataValidationError: When nothing is usable (one line per rejected file);
            nothing is written then.

    """
    src, out_dir = Path(src), Path(out_dir)
    key = resolve_key(key)
    if not src.exists():
        raise InputError(src, "not found")
    check_out_dir(src, out_dir)
    intake = read_source(src, key)
    if not intake.records:
        lines = [f"{intake.base / item}: {reason}" for item, reason in intake.rejected]
        raise DataValidationError(src, lines or ["no DICOM files to ingest"])
    redact = report_redactor(intake, key)
    with atomic_dir(out_dir) as tmp:
        accepted = write_intake(intake, tmp, key)
        contract.load_data_dir(tmp)
        report = IngestReport(
            out_dir=out_dir,
            form=intake.form,
            accepted=[redact.entry(entry) for entry in accepted],
            rejected=[
                redact.entry({"source": item, "reason": reason}) for item, reason in intake.rejected
            ],
        )
        atomic_write_json(tmp / REPORT_FILE, report.to_json())
    return report


STRUCTURAL_ITEMS = (contract.ANNOTATIONS_FILE, DXA_FILE, "CSV line")
"""Rejected items that name part of the source layout, not a source file."""


def report_redactor(intake: Intake, key: str) -> Redactor:
    """The redactor of an intake's report entries (`dsnet.io.redact`)."""
    return Redactor(
        key,
        intake.patient_ids,
        intake.patient_names,
        source=intake.base,
        structural=STRUCTURAL_ITEMS,
    )


def check_out_dir(src: Path, out_dir: Path) -> None:
    """Refuse an output folder that overlaps the source (folder) or was not made by ingest."""
    src_abs, out_abs = (src if src.is_dir() else src.parent).resolve(), out_dir.resolve()
    if out_abs == src_abs or src_abs in out_abs.parents or out_abs in src_abs.parents:
        raise InputError(out_dir, f"must be outside the source {src} and not contain it")
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / REPORT_FILE).is_file())
    ):
        raise InputError(out_dir, "exists and is not an earlier ingest output; pick a new folder")


def read_source(src: Path, key: str) -> Intake:
    """Read a source (data dir or CSV) into accepted records and rejections.

    Raises:
        InputError: When `src` is neither a data dir nor a CSV file, or its
            annotations.json, dxa.csv or CSV as a whole cannot be used.

    """
    if src.is_dir() and (src / contract.ANNOTATIONS_FILE).is_file():
        return read_data_dir_source(src, key)
    if src.is_file() and src.suffix.lower() == ".csv":
        return read_csv_source(src, key)
    if not src.exists():
        raise InputError(src, "not found")
    raise InputError(src, "expected a data dir (with annotations.json) or a .csv of boxes")


@dataclass
class _Labels:
    boxes: list[Box] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_data_dir_source(src: Path, key: str) -> Intake:
    """Read a source in the contract's layout; each file is accepted or rejected alone."""
    intake = Intake(source=src, form="data-dir")
    ann_path, dxa_path = src / contract.ANNOTATIONS_FILE, src / DXA_FILE
    coco, reasons = contract.read_annotations(ann_path)
    reasons = reasons or contract.check_categories(coco["categories"])
    if reasons:
        raise InputError(ann_path, reasons[0])
    dxa, reasons = read_dxa(dxa_path)
    if not dxa and reasons:
        raise InputError(dxa_path, reasons[0])
    intake.patient_ids.update(patient for patient, _ in dxa)
    for reason in reasons:
        intake.reject(DXA_FILE, reason)

    images = _source_images(coco["images"], intake)
    labels = _source_labels(coco["annotations"], images, coco["images"], dxa, intake)
    for image_id, image in images.items():
        path = src / image["file_name"]
        ct, problem = intake.read_slice(path, key)
        reasons = files.check_dicom(path, image) + labels[image_id].problems
        if (image["patient_id"], image["vertebra"]) not in dxa:
            reasons.append(f"no dxa.csv row for its patient and {image['vertebra']}")
        if ct is None or reasons:
            intake.reject(image["file_name"], "; ".join(reasons or [str(problem)]))
            continue
        intake.records.append(
            SliceRecord(
                source=path,
                patient_id=image["patient_id"],
                vertebra=image["vertebra"],
                width=image["width"],
                height=image["height"],
                boxes=tuple(labels[image_id].boxes),
            )
        )
    listed = [str(i.get("file_name")) for i in coco["images"] if isinstance(i, dict)]
    for rel in files.unlisted_files(src, listed):
        intake.learn_identities(src / rel)
        intake.reject(rel, f"not listed in {contract.ANNOTATIONS_FILE}")
    accepted = {record.patient_id for record in intake.records}
    intake.dxa = {pair: t for pair, t in dxa.items() if pair[0] in accepted}
    return intake


def _source_images(records: list[Any], intake: Intake) -> dict[int, dict[str, Any]]:
    """Image id -> record for the well-formed, uniquely identified image records."""
    images: dict[int, dict[str, Any]] = {}
    files: set[str] = set()
    for index, image in enumerate(records):
        reasons = contract.check_image_record(image)
        if isinstance(image, dict) and isinstance(image.get("patient_id"), str):
            intake.patient_ids.add(image["patient_id"])
        if not reasons:
            rel = Path(image["file_name"])
            if image["id"] in images or image["file_name"] in files:
                reasons = ["duplicate image id or file_name"]
            elif rel.is_absolute() or ".." in rel.parts:
                reasons = ["file_name must be relative to the data dir"]
        if reasons:
            name = image.get("file_name") if isinstance(image, dict) else None
            item = name or f"{contract.ANNOTATIONS_FILE} images[{index}]"
            intake.reject(item, "; ".join(reasons))
            continue
        images[image["id"]] = image
        files.add(image["file_name"])
    return images


def _source_labels(
    annotations: list[Any],
    images: Mapping[int, Mapping[str, Any]],
    image_records: list[Any],
    dxa: Mapping[tuple[str, str], float],
    intake: Intake,
) -> dict[int, _Labels]:
    """Image id -> its boxes and the annotation problems that reject it."""
    labels = {image_id: _Labels() for image_id in images}
    listed = {r.get("id") for r in image_records if isinstance(r, dict)}
    for index, ann in enumerate(annotations):
        reasons = contract.check_annotation_record(ann)
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        image_id = image_id if isinstance(image_id, int) else None
        if image_id not in labels:
            if image_id not in listed or image_id is None:  # else its image is rejected
                reason = "; ".join(reasons) or f"image_id {image_id} is not in images"
                intake.reject(f"{contract.ANNOTATIONS_FILE} annotations[{index}]", reason)
            continue
        reasons = reasons or contract.check_annotation(ann, images[image_id], dxa)
        if reasons:
            labels[image_id].problems += [f"annotations[{index}]: {r}" for r in reasons]
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        labels[image_id].boxes.append((x, y, w, h, ann["category_id"], float(ann["t_score"])))
    return labels
