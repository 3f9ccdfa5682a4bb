"""The files of a data dir: listed DICOM files exist once and are CT slices as recorded.

Nothing unlisted may lie in ``dicom/``; `dsnet.data.contract` runs these checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dsnet.core.errors import InputError
from dsnet.core.inputs import not_regular_reason
from dsnet.io import read_slice

ANNOTATIONS_FILE = "annotations.json"
DICOM_DIR = "dicom"
_DEFER_SIZE = 1024  # bytes: values larger than this stay on disk while reading headers
_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF


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
