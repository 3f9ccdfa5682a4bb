"""The data contract (DESIGN.md "data dir"): load a data dir and validate all of it at once.

A data dir is ``dicom/<patient_id>/*.dcm`` (one axial CT slice per file), ``annotations.json``
(COCO detection, with ``patient_id``/``vertebra`` on images and ``vertebra``/``t_score`` on
annotations) and ``dxa.csv`` (``patient_id,vertebra,t_score``). `load_data_dir` checks every
file and every record and raises one `DataValidationError` listing every problem, one line
each, naming the file; nothing is silently dropped.

DICOM files are checked at header level by default: ``pydicom.dcmread(defer_size=...)``
parses every element but leaves large values (the pixel bytes) on disk, like
``stop_before_pixels`` does, while still recording where Pixel Data sits, so a missing or
truncated pixel block is caught without decoding. ``decode=True`` also decodes every slice
with `dsnet.io.read_slice` (slower; catches broken compressed streams).

The check functions below return reasons (without the file name) so that ingest can reuse
them to accept or reject single files.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dsnet.data.classes import CATEGORIES, patient_diagnosis, who_class
from dsnet.errors import DataValidationError, InputError
from dsnet.inputs import not_regular_reason, read_json, read_text

VERTEBRAE = ("L1", "L2", "L3", "L4")
DXA_COLUMNS = ("patient_id", "vertebra", "t_score")
ANNOTATIONS_FILE = "annotations.json"
DXA_FILE = "dxa.csv"
DICOM_DIR = "dicom"
MIN_BOX_SIDE_PX = 1.0  # boxes with w or h <= 1 px are degenerate
T_TOLERANCE = 1e-6  # annotation T vs dxa.csv T
T_SCORE_RANGE = (-6.0, 6.0)  # DXA T-scores outside this are data-entry errors
_DEFER_SIZE = 1024  # bytes: values larger than this stay on disk while reading headers
_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class DataDir:
    """A validated data dir.

    Attributes:
        root: The data dir.
        images: COCO image records (``id``, ``file_name`` relative to `root`, ``width``,
            ``height``, ``patient_id``, ``vertebra``), sorted by id.
        annotations: Image id -> its COCO annotations (``bbox`` ``[x, y, w, h]`` in stored
            pixels, ``category_id`` 1..3, ``vertebra``, ``t_score``), sorted by id; every
            image has an entry (possibly empty).
        categories: The COCO categories (1 normal, 2 osteopenia, 3 osteoporosis).
        dxa: (patient_id, vertebra) -> DXA T-score.

    """

    root: Path
    images: list[dict[str, Any]]
    annotations: dict[int, list[dict[str, Any]]]
    categories: list[dict[str, Any]]
    dxa: dict[tuple[str, str], float]

    @cached_property
    def _images_by_patient(self) -> dict[str, list[dict[str, Any]]]:
        by_patient: dict[str, list[dict[str, Any]]] = {}
        for image in self.images:
            by_patient.setdefault(image["patient_id"], []).append(image)
        return by_patient

    def patients(self) -> list[str]:
        """Return the patient ids that have images, sorted."""
        return sorted(self._images_by_patient)

    def diagnosis(self, patient_id: str) -> int:
        """Return the patient's diagnosis: WHO class (1..3) of their lowest dxa.csv T-score."""
        t_scores = [t for (patient, _), t in self.dxa.items() if patient == patient_id]
        if not t_scores:
            raise InputError(self.root / DXA_FILE, f"no T-score for patient {patient_id}")
        return patient_diagnosis(t_scores)

    def images_of(self, patient_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Return the image records of the given patients, sorted by image id.

        Raises:
            InputError: If a patient has no images in this data dir.

        """
        wanted = set(patient_ids)
        unknown = sorted(wanted - set(self._images_by_patient))
        if unknown:
            raise InputError(self.root, f"no images for patient(s) {', '.join(unknown[:5])}")
        return [image for image in self.images if image["patient_id"] in wanted]

    def image_path(self, image: Mapping[str, Any]) -> Path:
        """Absolute path of an image record's DICOM file."""
        return self.root / image["file_name"]


def load_data_dir(path: str | PathLike[str], decode: bool = False) -> DataDir:
    """Load a data dir, validating everything and reporting every problem at once.

    Args:
        path: The data dir.
        decode: Also decode every slice's pixels (`dsnet.io.read_slice`); by default only
            headers and the presence and length of Pixel Data are checked.

    Returns:
        The validated `DataDir`.

    Raises:
        InputError: If `path` is not a folder.
        DataValidationError: With one line per problem, each naming the file.

    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(root, "not a folder (expected a data dir)")
    problems = _Problems()
    ann_path, dxa_path = root / ANNOTATIONS_FILE, root / DXA_FILE
    coco, reasons = read_annotations(ann_path)
    problems.add(ann_path, reasons)
    indexed = not reasons  # without a readable index, unlisted files are not news
    dxa, reasons = read_dxa(dxa_path)
    problems.add(dxa_path, reasons)
    problems.add(ann_path, check_categories(coco.get("categories")))

    images = _valid_images(root, coco.get("images", []), problems, decode, indexed)
    annotations = _valid_annotations(
        ann_path, coco, images, dxa if dxa_path.is_file() else None, problems
    )
    if dxa_path.is_file():
        problems.add(dxa_path, check_dxa_coverage(images.values(), dxa))
    if problems:
        raise DataValidationError(root, problems)
    return DataDir(
        root=root,
        images=sorted(images.values(), key=lambda i: i["id"]),
        annotations=annotations,
        categories=coco["categories"],
        dxa=dxa,
    )


class _Problems(list[str]):
    """Problem lines ``<file>: <reason>``."""

    def add(self, file: Path | str, reasons: Iterable[str], prefix: str = "") -> None:
        self.extend(f"{file}: {prefix}{reason}" for reason in reasons)


def _valid_images(
    root: Path, records: list[Any], problems: _Problems, decode: bool, indexed: bool
) -> dict[int, dict[str, Any]]:
    """Image id -> record for the records whose fields and DICOM file are valid."""
    ann_path = root / ANNOTATIONS_FILE
    images: dict[int, dict[str, Any]] = {}
    for index, image in enumerate(records):
        reasons = check_image_record(image)
        if not reasons and image["id"] in images:
            reasons = [f"duplicate image id {image['id']}"]
        problems.add(ann_path, reasons, prefix=f"images[{index}]: ")
        if not reasons:
            images[image["id"]] = image
    problems.add(ann_path, check_duplicate_files(images.values()))
    for image in list(images.values()):
        file = root / image["file_name"]
        reasons = check_location(root, image) + check_dicom(file, image, decode=decode)
        problems.add(file, reasons)
    if indexed:
        listed = [str(r.get("file_name")) for r in records if isinstance(r, dict)]
        problems.add(root / DICOM_DIR, check_unlisted_files(root, listed))
    return images


def _valid_annotations(
    ann_path: Path,
    coco: Mapping[str, Any],
    images: Mapping[int, Mapping[str, Any]],
    dxa: Mapping[tuple[str, str], float] | None,
    problems: _Problems,
) -> dict[int, list[dict[str, Any]]]:
    """Image id -> its valid annotations (sorted by id); every valid image gets an entry."""
    listed_ids = {r.get("id") for r in coco.get("images", []) if isinstance(r, dict)}
    annotations: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in images}
    seen_ids: set[int] = set()
    for index, ann in enumerate(coco.get("annotations", [])):
        reasons = check_annotation_record(ann)
        if not reasons and ann["id"] in seen_ids:
            reasons = [f"duplicate annotation id {ann['id']}"]
        if not reasons:
            seen_ids.add(ann["id"])
            image = images.get(ann["image_id"])
            if image is not None:
                reasons = check_annotation(ann, image, dxa)
            elif ann["image_id"] not in listed_ids:  # invalid image records are reported above
                reasons = [f"image_id {ann['image_id']} is not in images"]
            if image is not None and not reasons:
                annotations[ann["image_id"]].append(ann)
        problems.add(ann_path, reasons, prefix=f"annotations[{index}] (id {_get(ann, 'id')}): ")
    for anns in annotations.values():
        anns.sort(key=lambda a: a["id"])
    return annotations


def _get(record: Any, key: str) -> Any:
    return record.get(key) if isinstance(record, dict) else None


def read_annotations(path: Path) -> tuple[dict[str, Any], list[str]]:
    """Read annotations.json; returns (content, reasons). Content is ``{}`` when unusable."""
    try:
        coco = read_json(path)
    except InputError as exc:
        return {}, [exc.reason]
    if not isinstance(coco, dict):
        return {}, ["expected a JSON object with images, annotations and categories"]
    reasons = [
        f"'{key}' must be a list"
        for key in ("images", "annotations", "categories")
        if not isinstance(coco.get(key), list)
    ]
    return ({} if reasons else coco), reasons


def read_dxa(path: Path) -> tuple[dict[tuple[str, str], float], list[str]]:
    """Read dxa.csv (``patient_id,vertebra,t_score``); returns (lookup, reasons).

    A byte-order mark is accepted; a T-score outside `T_SCORE_RANGE` is a reason.
    """
    try:
        text = read_text(path)
    except InputError as exc:
        return {}, [exc.reason]
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != DXA_COLUMNS:
        return {}, [f"header must be {','.join(DXA_COLUMNS)}, got {','.join(header or [])}"]
    dxa: dict[tuple[str, str], float] = {}
    reasons = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(DXA_COLUMNS):
            reasons.append(f"line {line}: expected 3 fields, got {len(row)}")
            continue
        patient, vertebra, raw_t = (value.strip() for value in row)
        t = parse_t_score(raw_t)
        if not patient:
            reasons.append(f"line {line}: empty patient_id")
        elif check_vertebra(vertebra):
            reasons.append(f"line {line}: {check_vertebra(vertebra)}")
        elif check_t_score(raw_t):
            reasons.append(f"line {line}: {check_t_score(raw_t)}")
        elif (patient, vertebra) in dxa:
            reasons.append(f"line {line}: duplicate row for {patient} {vertebra}")
        else:
            dxa[(patient, vertebra)] = t
    return dxa, reasons


def parse_t_score(value: Any) -> float | None:
    """Return `value` as a finite float, or None (bools, text, NaN and inf are not)."""
    if isinstance(value, bool):
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    return t if math.isfinite(t) else None


def check_t_score(value: Any) -> str | None:
    """Reason why `value` is not a plausible DXA T-score (a finite number in `T_SCORE_RANGE`)."""
    t = parse_t_score(value)
    if t is None:
        return f"t_score {value!r} is not a finite number"
    low, high = T_SCORE_RANGE
    if not low <= t <= high:
        return f"t_score {t:g} is outside the plausible range {low:g}..{high:g}"
    return None


def _is_json_number(value: Any) -> bool:
    """A JSON number (int or float, not bool or text) that is finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_vertebra(vertebra: Any) -> str | None:
    """Reason why `vertebra` is not one of L1..L4, or None."""
    return None if vertebra in VERTEBRAE else f"vertebra {vertebra!r} is not one of L1..L4"


def check_categories(categories: Any) -> list[str]:
    """Reasons why the COCO categories differ from the contract's (1..3 normal..osteoporosis)."""
    if categories is None:
        return []
    wanted = {c["id"]: c["name"] for c in CATEGORIES}
    try:
        given = {c["id"]: c["name"] for c in categories}
    except (TypeError, KeyError):
        return ["categories must be objects with id and name"]
    return [] if given == wanted else [f"categories must be {wanted}, got {given}"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_image_record(image: Any) -> list[str]:
    """Reasons why a COCO image record lacks a required field or has a wrong type."""
    if not isinstance(image, dict):
        return ["not an object"]
    reasons = []
    if not _is_int(image.get("id")):
        reasons.append(f"id {image.get('id')!r} is not an integer")
    if not isinstance(image.get("file_name"), str) or not image["file_name"]:
        reasons.append("file_name missing")
    for key in ("width", "height"):
        if not _is_int(image.get(key)) or image[key] <= 0:
            reasons.append(f"{key} {image.get(key)!r} is not a positive integer")
    if not isinstance(image.get("patient_id"), str) or not image["patient_id"]:
        reasons.append("patient_id missing")
    vertebra_problem = check_vertebra(image.get("vertebra"))
    if vertebra_problem:
        reasons.append(vertebra_problem)
    return reasons


def check_duplicate_files(images: Iterable[Mapping[str, Any]]) -> list[str]:
    """Reasons for file names listed by more than one image record."""
    owner: dict[str, int] = {}
    reasons = []
    for image in images:
        first = owner.setdefault(image["file_name"], image["id"])
        if first != image["id"]:
            reasons.append(f"image {image['id']} reuses file {image['file_name']} of image {first}")
    return reasons


def check_location(root: Path, image: Mapping[str, Any]) -> list[str]:
    """Reason why an image file is not at ``dicom/<patient_id>/...`` inside `root`."""
    rel = Path(image["file_name"])
    parts = rel.parts
    if rel.is_absolute() or ".." in parts:
        return [f"file_name {image['file_name']!r} must be relative to the data dir"]
    if len(parts) < 3 or parts[0] != DICOM_DIR or parts[1] != image["patient_id"]:
        return [f"image {image['id']}: expected under {DICOM_DIR}/{image['patient_id']}/"]
    return []


def check_dicom(path: Path, image: Mapping[str, Any], decode: bool = False) -> list[str]:
    """Reasons why a slice's DICOM file does not match its image record.

    Checks: readable DICOM with Pixel Data of the length its header implies (uncompressed
    syntaxes), Modality CT, Rows/Columns == height/width, PixelSpacing positive,
    RescaleSlope/Intercept present, PatientID == the record's patient_id; with `decode`,
    also everything `dsnet.io.read_slice` checks (pixels decode, single frame, HU rescale).
    """
    problem = not_regular_reason(path)
    if problem is not None:
        return [problem]
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER_SIZE)
    except Exception as exc:  # noqa: BLE001 - any parser failure means "not a usable DICOM"
        return [f"not a readable DICOM file ({' '.join(str(exc).split())[:120]})"]
    reasons = []
    pixel = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if pixel is None:
        reasons.append("no Pixel Data")
    elif (
        pixel.length != _UNDEFINED_LENGTH
        and getattr(pixel, "value_tell", None) is not None
        and ds.file_meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian
        and pixel.value_tell + pixel.length > path.stat().st_size
    ):  # a deflated file is read inflated: its offsets are not the file's
        reasons.append("Pixel Data is truncated (file shorter than its header says)")
    else:
        reasons += _pixel_length_problem(ds, pixel)
    if ds.get("Modality") != "CT":
        reasons.append(f"Modality {ds.get('Modality')!r} is not CT")
    for tag, key in (("Rows", "height"), ("Columns", "width")):
        if ds.get(tag) != image[key]:
            reasons.append(f"DICOM {tag} {ds.get(tag)} differ from the image {key} {image[key]}")
    if not _positive_spacing(ds.get("PixelSpacing")):
        reasons.append("PixelSpacing missing or not two positive numbers")
    if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        reasons.append("RescaleSlope/RescaleIntercept missing (cannot compute HU)")
    patient = str(ds.get("PatientID", ""))
    if patient != image["patient_id"]:
        reasons.append(
            f"DICOM PatientID {patient!r} differs from patient_id {image['patient_id']!r}"
        )
    if decode and not reasons:
        from dsnet.io import read_slice

        try:
            read_slice(path)
        except InputError as exc:
            reasons.append(exc.reason)
    return reasons


def _pixel_length_problem(ds: pydicom.Dataset, pixel: Any) -> list[str]:
    """Native (uncompressed) Pixel Data shorter than Rows x Columns x bits says."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if pixel.length == _UNDEFINED_LENGTH or syntax is None or UID(syntax).is_compressed:
        return []
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8 * frames
    except (AttributeError, TypeError, ValueError):
        return ["Rows, Columns or BitsAllocated missing or not numbers"]
    if pixel.length < expected:
        return [
            f"Pixel Data holds {pixel.length} bytes but Rows x Columns x BitsAllocated "
            f"({ds.Rows} x {ds.Columns} x {ds.BitsAllocated}) needs {expected}"
        ]
    return []


def _positive_spacing(spacing: Any) -> bool:
    try:
        values = [float(v) for v in spacing]
    except (TypeError, ValueError):
        return False
    return len(values) == 2 and min(values) > 0


def unlisted_files(root: Path, file_names: Iterable[str]) -> list[Path]:
    """Files under ``root/dicom`` (relative to `root`) not in `file_names`; hidden ones skipped."""
    folder = root / DICOM_DIR
    if not folder.is_dir():
        return []
    listed = {str(Path(name)) for name in file_names}
    found = (file.relative_to(root) for file in sorted(folder.rglob("*")) if file.is_file())
    return [
        rel
        for rel in found
        if not any(part.startswith(".") for part in rel.parts) and str(rel) not in listed
    ]


def check_unlisted_files(root: Path, file_names: Iterable[str]) -> list[str]:
    """Reasons for files under ``dicom/`` that no image record lists."""
    return [
        f"{rel} is not listed in {ANNOTATIONS_FILE}" for rel in unlisted_files(root, file_names)
    ]


def check_annotation_record(ann: Any) -> list[str]:
    """Reasons why a COCO annotation lacks a required field or has a wrong type."""
    if not isinstance(ann, dict):
        return ["not an object"]
    reasons = [
        f"{key} is not an integer"
        for key in ("id", "image_id", "category_id")
        if not _is_int(ann.get(key))
    ]
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_json_number, bbox)):
        reasons.append(f"bbox {bbox!r} is not [x, y, w, h] numbers")
    t_problem = check_t_score(ann.get("t_score"))
    if t_problem:
        reasons.append(t_problem)
    vertebra_problem = check_vertebra(ann.get("vertebra"))
    if vertebra_problem:
        reasons.append(vertebra_problem)
    if ann.get("iscrowd", 0) != 0:
        reasons.append("iscrowd must be 0")
    return reasons


def check_box(bbox: list[float], width: int, height: int) -> str | None:
    """Reason why a COCO ``[x, y, w, h]`` box is degenerate or leaves a width x height image."""
    x, y, w, h = (float(v) for v in bbox)
    if w <= MIN_BOX_SIDE_PX or h <= MIN_BOX_SIDE_PX:
        return f"bbox {bbox} is degenerate (w or h <= {MIN_BOX_SIDE_PX:g} px)"
    if x < 0 or y < 0 or x + w > width or y + h > height:
        return f"bbox {bbox} leaves the {width}x{height} image"
    return None


def check_annotation(
    ann: Mapping[str, Any],
    image: Mapping[str, Any],
    dxa: Mapping[tuple[str, str], float] | None,
) -> list[str]:
    """Reasons why a well-formed annotation disagrees with its image, its T-score or dxa.csv.

    Args:
        ann: The annotation (passed `check_annotation_record`).
        image: Its image record.
        dxa: The dxa.csv lookup, or None to skip the dxa comparison.

    """
    reasons = []
    box_problem = check_box(ann["bbox"], image["width"], image["height"])
    if box_problem:
        reasons.append(box_problem)
    if ann["vertebra"] != image["vertebra"]:
        reasons.append(f"vertebra {ann['vertebra']} differs from its image's {image['vertebra']}")
    t = float(ann["t_score"])
    if ann["category_id"] not in {c["id"] for c in CATEGORIES}:
        reasons.append(f"unknown category_id {ann['category_id']}")
    elif ann["category_id"] != who_class(t):
        reasons.append(
            f"category_id {ann['category_id']} is not the WHO class {who_class(t)} of T {t:g}"
        )
    if dxa is not None:
        key = (image["patient_id"], ann["vertebra"])
        if key in dxa and abs(dxa[key] - t) > T_TOLERANCE:
            reasons.append(f"t_score {t:g} differs from dxa.csv {dxa[key]:g} for {key[0]} {key[1]}")
    return reasons


def check_dxa_coverage(
    images: Iterable[Mapping[str, Any]], dxa: Mapping[tuple[str, str], float]
) -> list[str]:
    """Reasons for (patient, vertebra) pairs of images with no dxa.csv row, one per pair."""
    needed: dict[tuple[str, str], int] = {}
    for image in images:
        key = (image["patient_id"], image["vertebra"])
        needed[key] = needed.get(key, 0) + 1
    return [
        f"no row for patient {patient} vertebra {vertebra} ({count} image(s))"
        for (patient, vertebra), count in sorted(needed.items())
        if (patient, vertebra) not in dxa
    ]
