"""Ingest a real data set: check every file, de-identify, write a data dir and a report.

Two source forms (docs/data.md):

- a data dir in the contract's layout (``annotations.json``, ``dxa.csv``, ``dicom/``);
- a CSV of boxes and T-scores whose ``file`` column points at DICOM files relative to the
  CSV's folder (`dsnet.data.csv_import`).

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

import csv
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import pydicom

from dsnet.data import contract
from dsnet.data.classes import CATEGORIES
from dsnet.errors import DataValidationError, InputError
from dsnet.fsutil import atomic_dir, atomic_write_json, atomic_write_text
from dsnet.inputs import not_regular_reason, read_text
from dsnet.io import CTSlice, read_slice
from dsnet.io.deid import deidentify, pseudonym
from dsnet.io.redact import Redactor

REPORT_FILE = "ingest_report.json"
REPORT_FORMAT = "dsnet-ingest-report/1"
KEY_ENV = "DSNET_DEID_KEY"
MIN_KEY_CHARS = 16

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


STRUCTURAL_ITEMS = (contract.ANNOTATIONS_FILE, contract.DXA_FILE, "CSV line")
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
        from dsnet.data.csv_import import read_csv_source

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
    ann_path, dxa_path = src / contract.ANNOTATIONS_FILE, src / contract.DXA_FILE
    coco, reasons = contract.read_annotations(ann_path)
    reasons = reasons or contract.check_categories(coco["categories"])
    if reasons:
        raise InputError(ann_path, reasons[0])
    dxa, reasons = contract.read_dxa(dxa_path)
    if not dxa and reasons:
        raise InputError(dxa_path, reasons[0])
    intake.patient_ids.update(patient for patient, _ in dxa)
    for reason in reasons:
        intake.reject(contract.DXA_FILE, reason)

    images = _source_images(coco["images"], intake)
    labels = _source_labels(coco["annotations"], images, coco["images"], dxa, intake)
    for image_id, image in images.items():
        path = src / image["file_name"]
        ct, problem = intake.read_slice(path, key)
        reasons = contract.check_dicom(path, image) + labels[image_id].problems
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
    for rel in contract.unlisted_files(src, listed):
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
        rel = f"{contract.DICOM_DIR}/{patient}/{record.vertebra}_{k}.dcm"
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
