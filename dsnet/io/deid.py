"""De-identify CT headers: DICOM PS3.15 Annex E basic profile with keyed pseudonyms.

`deidentify` builds a new data set from an ALLOW-LIST (`KEPT`): only the attributes the
model and the provenance of a slice need are copied, each with its action; everything
else (private elements, free text, unknown or new attributes, every sequence not on the
list, overlays, curves, group lengths) is dropped, at every nesting level. An allowed
sequence (`KEPT_SEQUENCES`) keeps only its items' allow-listed attributes, recursively.

Profile and options (codes written to DeidentificationMethodCodeSequence, CID 7050):

- 113100 Basic Application Confidentiality Profile. Kept as they are: the image pixel,
  image plane, CT image and VOI LUT values, modality, body part, acquisition technique,
  manufacturer and model (no device serial number, station or institution), SOP class.
  Replaced: PatientID and PatientName by `pseudonym(PatientID, key)`; every instance UID
  (study, series, SOP instance, frame of reference, referenced SOP instance) by
  `pseudo_uid(uid, key)`, a keyed ``2.25.`` UID, so study/series/instance structure and
  references survive across files; standard UIDs (SOP classes) are kept. Emptied (Type 2
  attributes): PatientBirthDate, AccessionNumber, StudyID, ReferringPhysicianName.
- 113107 Retain Longitudinal Temporal Information, Modified Dates Option: the study,
  series, acquisition and content dates (and the date part of AcquisitionDateTime) are
  shifted by one keyed number of days per patient (`patient_date_shift`, or
  `date_shift_days`), so intervals are kept; times of day are kept; an unparseable date
  is removed.
- 113108 Retain Patient Characteristics Option: PatientSex, PatientAge, PatientSize and
  PatientWeight are kept (age and sex drive bone-density interpretation).

Not applied: Clean Descriptors (113105; descriptions, comments and protocol names are
removed, not cleaned), Retain Device Identity (113109), Retain UIDs (113110), Retain
Safe Private (113111), Clean Graphics (113103), Clean Pixel Data (113101): pixel data is
never touched, so an image with BurnedInAnnotation "YES" is refused.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from datetime import date, timedelta

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID

from dsnet.core.errors import InputError

KEEP, UID_MAP, SHIFT_DATE, EMPTY = "keep", "uid", "date", "empty"
"""Actions on an allowed attribute: copy, keyed UID, shifted date, empty value."""

REFERENCE_ITEM: dict[str, str] = {
    "ReferencedSOPClassUID": UID_MAP,
    "ReferencedSOPInstanceUID": UID_MAP,
    "ReferencedFrameNumber": KEEP,
}
"""Allow-list of an item of ReferencedImageSequence / SourceImageSequence."""

KEPT: dict[str, str | dict[str, str]] = {
    # SOP common.
    "SpecificCharacterSet": KEEP,
    "ImageType": KEEP,
    "SOPClassUID": UID_MAP,
    "SOPInstanceUID": UID_MAP,
    "InstanceNumber": KEEP,
    # Patient (PatientID and PatientName are set to the pseudonym afterwards).
    "PatientBirthDate": EMPTY,
    "PatientSex": KEEP,
    "PatientAge": KEEP,
    "PatientSize": KEEP,
    "PatientWeight": KEEP,
    # Study and series structure.
    "StudyInstanceUID": UID_MAP,
    "StudyDate": SHIFT_DATE,
    "StudyTime": KEEP,
    "AccessionNumber": EMPTY,
    "StudyID": EMPTY,
    "ReferringPhysicianName": EMPTY,
    "SeriesInstanceUID": UID_MAP,
    "SeriesNumber": KEEP,
    "SeriesDate": SHIFT_DATE,
    "SeriesTime": KEEP,
    "Modality": KEEP,
    "BodyPartExamined": KEEP,
    "PatientPosition": KEEP,
    "AcquisitionNumber": KEEP,
    "AcquisitionDate": SHIFT_DATE,
    "AcquisitionTime": KEEP,
    "AcquisitionDateTime": SHIFT_DATE,
    "ContentDate": SHIFT_DATE,
    "ContentTime": KEEP,
    # Equipment (make and model only: no serial number, station or institution).
    "Manufacturer": KEEP,
    "ManufacturerModelName": KEEP,
    # Frame of reference and image plane.
    "FrameOfReferenceUID": UID_MAP,
    "ImagePositionPatient": KEEP,
    "ImageOrientationPatient": KEEP,
    "SliceLocation": KEEP,
    "SliceThickness": KEEP,
    "PixelSpacing": KEEP,
    # Image pixel.
    "SamplesPerPixel": KEEP,
    "PhotometricInterpretation": KEEP,
    "NumberOfFrames": KEEP,
    "Rows": KEEP,
    "Columns": KEEP,
    "BitsAllocated": KEEP,
    "BitsStored": KEEP,
    "HighBit": KEEP,
    "PixelRepresentation": KEEP,
    "PixelPaddingValue": KEEP,
    "SmallestImagePixelValue": KEEP,
    "LargestImagePixelValue": KEEP,
    "PixelData": KEEP,
    # CT image, acquisition technique and display.
    "RescaleIntercept": KEEP,
    "RescaleSlope": KEEP,
    "RescaleType": KEEP,
    "KVP": KEEP,
    "XRayTubeCurrent": KEEP,
    "ExposureTime": KEEP,
    "Exposure": KEEP,
    "ConvolutionKernel": KEEP,
    "ReconstructionDiameter": KEEP,
    "DataCollectionDiameter": KEEP,
    "GantryDetectorTilt": KEEP,
    "TableHeight": KEEP,
    "SpiralPitchFactor": KEEP,
    "CTDIvol": KEEP,
    "WindowCenter": KEEP,
    "WindowWidth": KEEP,
    "BurnedInAnnotation": KEEP,
    "LossyImageCompression": KEEP,
    "LossyImageCompressionRatio": KEEP,
    "LossyImageCompressionMethod": KEEP,
    # References to other images (keyed UIDs), item by item through their own list.
    "ReferencedImageSequence": REFERENCE_ITEM,
    "SourceImageSequence": REFERENCE_ITEM,
}
"""The allow-list: attribute keyword -> action, or for a sequence the allow-list of its
items. Anything not listed is removed."""

METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)
"""DeidentificationMethodCodeSequence entries (coding scheme DCM, CID 7050)."""

METHOD_TEXT = "DSNet-Ops PS3.15 E basic allow-list, keyed IDs, shifted dates"
"""DeidentificationMethod value (LO, at most 64 characters)."""

MAX_DATE_SHIFT_DAYS = 3650
"""Keyed per-patient shifts move dates back by 1 to this many days."""


def pseudonym(patient_id: str, key: bytes | str) -> str:
    """Return the keyed pseudonym of a patient ID: stable per (ID, key), unlinkable without key.

    Args:
        patient_id: The original PatientID.
        key: The project's secret key (bytes, or str encoded as UTF-8).

    Returns:
        16 lowercase hex characters: the start of HMAC-SHA256(key, "patient-id:" + ID).

    """
    return keyed_hex(key, "patient-id", patient_id)


def keyed_hex(key: bytes | str, purpose: str, text: str) -> str:
    """Return 16 hex characters of HMAC-SHA256(key, purpose + ":" + text).

    Args:
        key: The project's secret key.
        purpose: Domain separator (a pseudonym, a source path... never collide).
        text: The value to hide.

    Returns:
        16 lowercase hex characters (64 bits).

    """
    return _digest(key, purpose, text).hex()[:16]


def pseudo_uid(uid: str, key: bytes | str) -> str:
    """Return the keyed replacement of an instance UID: "2.25." + a 128-bit integer.

    The same UID maps to the same replacement under the same key, so references
    between objects (study, series, frame of reference, referenced SOP) stay intact.

    Args:
        uid: The original UID.
        key: The project's secret key.

    Returns:
        A valid UID of at most 44 characters derived from HMAC-SHA256(key, "uid:" + uid).

    """
    return f"2.25.{int.from_bytes(_digest(key, 'uid', uid)[:16], 'big')}"


def patient_date_shift(patient_id: str, key: bytes | str) -> int:
    """Return the keyed per-patient date shift: -1 to -MAX_DATE_SHIFT_DAYS days.

    Args:
        patient_id: The original PatientID.
        key: The project's secret key.

    Returns:
        A negative number of days, the same for every file of the patient.

    """
    value = int.from_bytes(_digest(key, "date-shift", patient_id)[:4], "big")
    return -(1 + value % MAX_DATE_SHIFT_DAYS)


def deidentify(
    ds: Dataset,
    key: bytes | str,
    date_shift_days: int | None = None,
    *,
    allow_burned_in: bool = False,
) -> Dataset:
    """Return a de-identified copy of a CT data set (profile in the module docstring).

    Args:
        ds: The data set (read with pydicom); it is not modified.
        key: Secret key of the pseudonyms, UIDs and date shift (keep it out of the data).
        date_shift_days: Days added to every date; None uses the keyed per-patient shift
            `patient_date_shift(PatientID, key)`. Must not be 0.
        allow_burned_in: Accept BurnedInAnnotation "YES" (only if the caller has checked
            the pixels); otherwise such images are refused.

    Returns:
        A new data set: PHI removed or replaced, pixel data identical, PatientIdentity
        Removed "YES", DeidentificationMethod(+CodeSequence) and
        LongitudinalTemporalInformationModified "MODIFIED" set, file meta rebuilt
        (MediaStorageSOPInstanceUID = new SOPInstanceUID) and the preamble zeroed.

    Raises:
        InputError: BurnedInAnnotation is "YES" and `allow_burned_in` is False.
        ValueError: An empty key or a zero date shift.

    """
    if not key:
        raise ValueError("the de-identification key must not be empty")
    if date_shift_days == 0:
        raise ValueError("date_shift_days must be non-zero (None for the keyed shift)")
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES" and not allow_burned_in:
        raise InputError(
            getattr(ds, "filename", None) or "dataset",
            "BurnedInAnnotation is YES: pixel data may show identifying text; refused",
        )
    patient_id = str(ds.get("PatientID", ""))
    shift = patient_date_shift(patient_id, key) if date_shift_days is None else date_shift_days

    out = _allowed_copy(ds, KEPT, key, shift)
    out.PatientID = pseudonym(patient_id, key)
    out.PatientName = out.PatientID
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = METHOD_TEXT
    out.DeidentificationMethodCodeSequence = Sequence(
        [_code(value, meaning) for value, meaning in METHOD_CODES]
    )
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    out.file_meta = _file_meta(ds, out)
    out.preamble = b"\x00" * 128
    return out


def _allowed_copy(
    ds: Dataset, allowed: dict[str, str | dict[str, str]], key: bytes | str, shift: int
) -> Dataset:
    """A new data set holding only `ds`'s allow-listed elements, each with its action.

    An allowed sequence is copied item by item through its items' allow-list, so nothing
    unlisted survives at any depth; an element of an unexpected VR (a sequence where a
    value is listed, or the reverse) is dropped.
    """
    out = Dataset()
    for keyword, action in allowed.items():
        if keyword not in ds:
            continue
        elem = ds[keyword]
        if isinstance(action, dict):
            if elem.VR == "SQ":
                items = [_allowed_copy(item, action, key, shift) for item in elem.value]
                setattr(out, keyword, Sequence([item for item in items if len(item)]))
            continue
        if elem.VR == "SQ":
            continue
        elem = copy.deepcopy(elem)
        if _apply(elem, action, key, shift):
            out.add(elem)
    return out


def _apply(elem: DataElement, action: str, key: bytes | str, shift: int) -> bool:
    """Apply an action to a copied element in place; False when it must be dropped."""
    if action == EMPTY:
        elem.value = ""
    elif action == UID_MAP and elem.value:
        elem.value = _map_values(elem.value, lambda uid: _replace_uid(uid, key))
    elif action == SHIFT_DATE and elem.value:
        shifted = _map_values(elem.value, lambda text: _shift_date(text, elem.VR, shift))
        if shifted is None:
            return False
        elem.value = shifted
    return True


def _map_values(value, convert):
    """Apply `convert` to a single or multi-valued element; None if any value fails."""
    values = list(value) if isinstance(value, MultiValue | list) else [value]
    converted = [convert(str(v)) for v in values]
    if any(c is None for c in converted):
        return None
    return converted if len(converted) > 1 else converted[0]


def _replace_uid(uid: str, key: bytes | str) -> str:
    """Keep standard DICOM UIDs (SOP classes, transfer syntaxes...), remap the rest."""
    uid = uid.strip("\x00 ")
    return uid if UID(uid).name != uid else pseudo_uid(uid, key)


def _shift_date(text: str, vr: str, days: int) -> str | None:
    """Shift a DA value, or the date part of a DT value, by `days`; None if unparseable."""
    text = text.strip()
    digits = text.replace(".", "") if vr == "DA" else text
    try:
        day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None
    rest = digits[8:] if vr == "DT" else ""
    return (day + timedelta(days=days)).strftime("%Y%m%d") + rest


def _file_meta(original: Dataset, out: Dataset) -> FileMetaDataset:
    """Build new file meta: SOP class/instance and transfer syntax only (no AE titles)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.get("SOPClassUID", UID(""))
    meta.MediaStorageSOPInstanceUID = out.get("SOPInstanceUID", UID(""))
    old = getattr(original, "file_meta", None)
    if old is not None and "TransferSyntaxUID" in old:
        meta.TransferSyntaxUID = old.TransferSyntaxUID
    return meta


def _code(value: str, meaning: str) -> Dataset:
    """Build a DCM code sequence item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _digest(key: bytes | str, purpose: str, text: str) -> bytes:
    """HMAC-SHA256 of "purpose:text" under `key` (domain-separated per use)."""
    key_bytes = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    return hmac.new(key_bytes, f"{purpose}:{text}".encode(), hashlib.sha256).digest()
