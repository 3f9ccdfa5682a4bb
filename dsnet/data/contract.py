"""The data contract (docs/data.md): load a data dir and validate all of it at once.

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

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any

from dsnet.core.errors import DataValidationError, InputError
from dsnet.core.inputs import read_json
from dsnet.data.classes import CATEGORIES, patient_diagnosis, who_class
from dsnet.data.dxa import (
    DXA_FILE,
    check_dxa_coverage,
    check_t_score,
    check_vertebra,
    read_dxa,
)
from dsnet.data.files import (
    ANNOTATIONS_FILE,
    DICOM_DIR,
    check_dicom,
    check_duplicate_files,
    check_location,
    check_unlisted_files,
)

MIN_BOX_SIDE_PX = 1.0  # boxes with w or h <= 1 px are degenerate
T_TOLERANCE = 1e-6  # annotation T vs dxa.csv T


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


def _is_json_number(value: Any) -> bool:
    """A JSON number (int or float, not bool or text) that is finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
