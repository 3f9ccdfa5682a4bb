"""Read one axial CT slice from a DICOM file into Hounsfield units.

`read_slice` accepts exactly what a radiology tool would load as one CT image: a DICOM
Part 10 file (or a header-less data set that still carries a SOP Class UID) of
modality CT, one frame, grayscale, with RescaleSlope/RescaleIntercept and a plausible
PixelSpacing. Native and compressed transfer syntaxes (JPEG 2000, JPEG lossless,
JPEG-LS, RLE, deflate) decode through pydicom's pixel handlers and the installed
pylibjpeg codecs. Anything else raises `InputError(path, reason)` with a one-line reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_rescale, get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import IS, DSfloat

from dsnet.core.errors import InputError
from dsnet.core.inputs import not_regular_reason
from dsnet.io.geometry import DisplayFrame, display_frame

MAX_PIXEL_SPACING_MM = 5.0
"""Largest in-plane pixel spacing accepted as an axial CT slice (mm)."""

META_KEYWORDS = (
    "Modality",
    "SOPClassUID",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "SliceThickness",
    "SliceLocation",
    "KVP",
    "XRayTubeCurrent",
    "ExposureTime",
    "ConvolutionKernel",
    "ReconstructionDiameter",
    "PatientSex",
    "PatientAge",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
)
"""Technical header attributes copied into `CTSlice.meta` when present (no PHI)."""

_UNDEFINED_LENGTH = 0xFFFFFFFF
HU_RANGE = (-10_000.0, 100_000.0)
"""HU a CT slice can hold (air -1000 to dense metal); beyond it the header or pixels lie."""


@dataclass(frozen=True)
class CTSlice:
    """One axial CT slice in Hounsfield units with the header facts needed downstream.

    Attributes:
        path: The file it was read from.
        hu: float32 [H, W] Hounsfield units, stored value * RescaleSlope + RescaleIntercept,
            in stored pixel order: row 0 is the first stored row, column 0 the first
            stored column (anterior and patient right only for the standard orientation;
            `frame` turns it into the radiological display frame).
        spacing: (row, col) pixel spacing in mm = PixelSpacing: distance between rows
            (vertical step) and between columns (horizontal step).
        position: ImagePositionPatient (x, y, z) mm of the centre of pixel [0, 0], or None.
        orientation: ImageOrientationPatient (6 direction cosines: row direction, then
            column direction), or None.
        patient_id: PatientID ("" when absent).
        study_uid: StudyInstanceUID ("" when absent).
        series_uid: SeriesInstanceUID ("" when absent).
        sop_uid: SOPInstanceUID ("" when absent).
        instance_number: InstanceNumber, or None.
        meta: Technical attributes (`META_KEYWORDS`) present in the header, as plain
            JSON-serialisable values, plus "TransferSyntaxUID".

    """

    path: Path
    hu: np.ndarray
    spacing: tuple[float, float]
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    instance_number: int | None
    meta: dict[str, Any]

    @property
    def normal(self) -> np.ndarray | None:
        """Unit slice normal (row direction x column direction), float64 [3], or None."""
        if self.orientation is None:
            return None
        row, col = np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:])
        normal = np.cross(row, col)
        length = float(np.linalg.norm(normal))
        return normal / length if length > 0 else None

    @property
    def frame(self) -> DisplayFrame:
        """How `hu` maps to the radiological display frame (`dsnet.io.geometry`).

        Raises:
            InputError: (naming `path`) an oblique or non-axial orientation.

        """
        return display_frame(self.orientation, self.spacing, self.hu.shape, self.path)


def read_slice(path: str | os.PathLike[str]) -> CTSlice:
    """Read one CT slice file and convert its pixels to Hounsfield units.

    Args:
        path: A DICOM file holding one CT image (CT Image Storage, one frame).

    Returns:
        The slice: `hu` float32 [Rows, Columns] plus geometry, identifiers and metadata.

    Raises:
        InputError: (naming `path`, one line) when the file is missing, not DICOM,
            truncated, not modality CT, has no PixelData, is multi-frame or colour,
            lacks RescaleSlope/RescaleIntercept (Type 1 in the CT Image module, so
            required here), has a missing or absurd PixelSpacing (<= 0 or > 5 mm), is
            oblique or not axial (ImageOrientationPatient rotated in plane by more than
            `dsnet.io.geometry.OBLIQUE_TOLERANCE_DEG`, or tilted by more than
            `dsnet.io.geometry.MAX_GANTRY_TILT_DEG` about the patient x axis), or its pixel
            data cannot be decoded (the transfer syntax is named).

    """
    path = Path(path)
    ds = _read_dataset(path)
    _check_ct_image(path, ds)
    spacing = _pixel_spacing(path, ds)
    orientation = _float_tuple(ds.get("ImageOrientationPatient"), 6)
    slope, intercept = _rescale(path, ds)
    stored = _decode_pixels(path, ds)
    display_frame(orientation, spacing, stored.shape, path)  # refuses oblique slices
    hu = apply_rescale(stored, ds).astype(np.float32, copy=False)
    _check_hu(path, hu, slope, intercept)
    return CTSlice(
        path=path,
        hu=hu,
        spacing=spacing,
        position=_float_tuple(ds.get("ImagePositionPatient"), 3),
        orientation=orientation,
        patient_id=str(ds.get("PatientID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        instance_number=_optional_int(ds.get("InstanceNumber")),
        meta=_meta(ds, slope, intercept),
    )


def _read_dataset(path: Path) -> pydicom.Dataset:
    """Parse `path` as DICOM, accepting header-less files that carry a SOP Class UID."""
    problem = not_regular_reason(path)
    if problem is not None:
        raise InputError(path, problem)
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        ds = _read_without_preamble(path)
    except Exception as err:  # pydicom raises many types on malformed headers
        raise InputError(path, f"unreadable DICOM header ({_one_line(err)})") from err
    truncated = _truncated_element(ds)
    if truncated is not None:
        raise InputError(path, f"truncated file: element {truncated} ends early")
    if len(ds) == 0:
        raise InputError(path, "truncated file: no data elements after the file meta header")
    return ds


def _read_without_preamble(path: Path) -> pydicom.Dataset:
    """Read a DICOM data set stored without the 128-byte preamble and 'DICM' prefix."""
    try:
        ds = pydicom.dcmread(path, force=True)
        sop_class = ds.get("SOPClassUID")
    except Exception as err:
        raise InputError(path, "not a DICOM file") from err
    if not isinstance(sop_class, str) or not UID(sop_class).is_valid:
        raise InputError(path, "not a DICOM file (no 'DICM' prefix and no SOP Class UID)")
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, _little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        )
    return ds


def _truncated_element(ds: pydicom.Dataset) -> str | None:
    """Tag of a top-level element whose value is shorter than its declared length."""
    for elem in ds.elements():
        if (
            isinstance(elem, RawDataElement)
            and elem.length != _UNDEFINED_LENGTH
            and elem.value is not None
            and len(elem.value) < elem.length
        ):
            return str(elem.tag)
    return None


def _check_ct_image(path: Path, ds: pydicom.Dataset) -> None:
    """Reject anything that is not one grayscale CT image with pixel data."""
    modality = ds.get("Modality")
    if not modality:
        raise InputError(path, "missing Modality (0008,0060); expected CT")
    if modality != "CT":
        raise InputError(path, f"modality is {modality}, expected CT")
    if "PixelData" not in ds:
        raise InputError(path, "no PixelData (7FE0,0010): header-only object, not an image")
    frames = _optional_int(ds.get("NumberOfFrames")) or 1
    if frames != 1:
        raise InputError(path, f"multi-frame object ({frames} frames); expected one 2-D slice")
    samples = _optional_int(ds.get("SamplesPerPixel")) or 1
    if samples != 1:
        raise InputError(path, f"SamplesPerPixel is {samples}; expected grayscale (1)")
    photometric = ds.get("PhotometricInterpretation", "MONOCHROME2")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(path, f"PhotometricInterpretation is {photometric}; expected MONOCHROME")


def _pixel_spacing(path: Path, ds: pydicom.Dataset) -> tuple[float, float]:
    """(row, col) PixelSpacing in mm, validated to lie in (0, MAX_PIXEL_SPACING_MM]."""
    value = ds.get("PixelSpacing")
    if value is None or value == "":
        raise InputError(path, "missing PixelSpacing (0028,0030)")
    spacing = _float_tuple(value, 2)
    if spacing is None:
        raise InputError(path, f"PixelSpacing {_plain(value)!r} is not two numbers")
    if not all(0.0 < s <= MAX_PIXEL_SPACING_MM for s in spacing):
        raise InputError(
            path,
            f"absurd PixelSpacing {list(spacing)} mm; expected 0 < spacing <= "
            f"{MAX_PIXEL_SPACING_MM:g} mm",
        )
    return spacing


def _rescale(path: Path, ds: pydicom.Dataset) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept); both are required to express CT in HU."""
    missing = [k for k in ("RescaleSlope", "RescaleIntercept") if ds.get(k) in (None, "")]
    if missing:
        raise InputError(path, f"missing {' and '.join(missing)}; cannot compute HU")
    rescale_type = ds.get("RescaleType")
    if rescale_type not in (None, "", "HU"):
        raise InputError(path, f"RescaleType is {rescale_type}; expected HU")
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    if not np.isfinite(slope) or slope == 0 or not np.isfinite(intercept):
        raise InputError(path, f"invalid rescale: slope {slope:g}, intercept {intercept:g}")
    return slope, intercept


def _check_hu(path: Path, hu: np.ndarray, slope: float, intercept: float) -> None:
    """Refuse HU that are not finite or outside `HU_RANGE` (wrong rescale or pixel type)."""
    low, high = (float(hu.min()), float(hu.max())) if hu.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(
            path, f"rescale gives non-finite HU (slope {slope:g}, intercept {intercept:g})"
        )
    if low < HU_RANGE[0] or high > HU_RANGE[1]:
        raise InputError(
            path,
            f"HU {low:g}..{high:g} outside the plausible {HU_RANGE[0]:g}..{HU_RANGE[1]:g} "
            "(wrong RescaleSlope/Intercept, or pixel data not of the declared integer type)",
        )


def _decode_pixels(path: Path, ds: pydicom.Dataset) -> np.ndarray:
    """Decode the stored pixel values [Rows, Columns] with pydicom (signedness handled)."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        raise InputError(path, "missing TransferSyntaxUID in the file meta header")
    syntax = UID(syntax)
    label = f"{syntax.name} ({syntax})" if syntax.name != syntax else str(syntax)
    if syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError as err:
            raise InputError(path, f"no pixel data decoder for transfer syntax {label}") from err
        if not decoder.is_available:
            raise InputError(path, f"no codec installed for transfer syntax {label}")
    else:
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
        if len(ds.PixelData) < expected:
            raise InputError(path, f"truncated pixel data: {len(ds.PixelData)} of {expected} bytes")
    try:
        stored = ds.pixel_array
    except Exception as err:  # codec errors come in many types
        raise InputError(
            path, f"undecodable pixel data in transfer syntax {label}: {_one_line(err)}"
        ) from err
    if stored.ndim != 2:
        raise InputError(path, f"pixel data has shape {stored.shape}; expected one 2-D slice")
    return stored


def _meta(ds: pydicom.Dataset, slope: float, intercept: float) -> dict[str, Any]:
    """Plain-typed copy of the technical header attributes that are present."""
    meta = {k: _plain(ds.get(k)) for k in META_KEYWORDS if ds.get(k) not in (None, "")}
    meta["RescaleSlope"], meta["RescaleIntercept"] = slope, intercept
    meta["TransferSyntaxUID"] = str(ds.file_meta.TransferSyntaxUID)
    return meta


def _plain(value: Any) -> Any:
    """Convert a pydicom value to a JSON-serialisable Python value."""
    if isinstance(value, MultiValue | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, DSfloat | float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    return str(value)


def _float_tuple(value: Any, count: int) -> tuple[float, ...] | None:
    """`count` finite floats from a multi-valued element, or None if absent/malformed."""
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(np.isfinite(numbers)):
        return None
    return numbers


def _optional_int(value: Any) -> int | None:
    """Return an integer attribute value, or None when absent, empty or malformed."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _one_line(err: BaseException, limit: int = 300) -> str:
    """Collapse an exception message to one line of at most `limit` characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
