"""De-identify CT headers: DICOM PS3.15 Annex E basic profile with keyed pseudonyms.

Profile applied by `deidentify` (codes written to DeidentificationMethodCodeSequence):

- 113100 Basic Application Confidentiality Profile, for the attributes found in CT
  headers, applied at every nesting level:
  - removed (X): addresses, phone numbers, other IDs/names, patient history/comments,
    institution name/address/department, station name, device serial number, physician
    and operator identification sequences, request/procedure/scheduling attributes,
    study/series descriptions, protocol name, referenced patient/study/PPS sequences,
    icon images, original/modified attribute and signature sequences, overlays and
    curves (groups 50xx/60xx); and by value representation every free-text element
    (LT, ST, UT), every application entity title (AE), every unknown-VR element (UN)
    and every private element;
  - emptied (Z): every person name (PN), PatientBirthDate, AccessionNumber, StudyID;
  - replaced: PatientID and PatientName by `pseudonym(PatientID, key)`; every instance
    UID (UI values that are not standard DICOM UIDs such as SOP classes or transfer
    syntaxes) by `pseudo_uid(uid, key)`, a keyed `2.25.` UID, so study/series/instance
    and reference relations survive across files.
- 113107 Retain Longitudinal Temporal Information, Modified Dates Option: every date
  (DA, and the date part of DT) is shifted by the same whole number of days per patient
  (`patient_date_shift`, or `date_shift_days`), so intervals between dates are kept;
  times of day are kept; unparseable dates are removed.
- 113108 Retain Patient Characteristics Option: PatientSex, PatientAge, PatientSize
  and PatientWeight are kept (age and sex drive bone-density interpretation).

Pixel data is never touched, so an image with BurnedInAnnotation "YES" is refused.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from datetime import date, timedelta

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from dsnet.core.errors import InputError

REMOVED_KEYWORDS = frozenset(
    {
        # Patient identification and demographics beyond sex/age/size/weight.
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientBirthName",
        "PatientMotherBirthName",
        "PatientBirthTime",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "MedicalRecordLocator",
        "MilitaryRank",
        "BranchOfService",
        "Occupation",
        "EthnicGroup",
        "PatientReligiousPreference",
        "CountryOfResidence",
        "RegionOfResidence",
        "CurrentPatientLocation",
        "PatientInstitutionResidence",
        "PatientInsurancePlanCodeSequence",
        "InsurancePlanIdentification",
        "MedicalAlerts",
        "Allergies",
        "SmokingStatus",
        "PregnancyStatus",
        "LastMenstrualDate",
        "SpecialNeeds",
        "PatientState",
        "ResponsiblePerson",
        "ResponsibleOrganization",
        "AdditionalPatientHistory",
        "PatientComments",
        "ReferencedPatientSequence",
        "ReferencedPatientAliasSequence",
        # Institution, staff and device identity.
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "InstitutionCodeSequence",
        "InstitutionalDepartmentTypeCodeSequence",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "ReferringPhysicianIdentificationSequence",
        "PhysiciansOfRecord",
        "PhysiciansOfRecordIdentificationSequence",
        "PerformingPhysicianName",
        "PerformingPhysicianIdentificationSequence",
        "NameOfPhysiciansReadingStudy",
        "PhysiciansReadingStudyIdentificationSequence",
        "OperatorsName",
        "OperatorIdentificationSequence",
        "RequestingPhysician",
        "RequestingService",
        "ConsultingPhysicianName",
        "ScheduledPerformingPhysicianName",
        "StationName",
        "DeviceSerialNumber",
        "DetectorID",
        "GantryID",
        # Visit, request, scheduling and procedure step.
        "AdmissionID",
        "IssuerOfAdmissionIDSequence",
        "ServiceEpisodeID",
        "ServiceEpisodeDescription",
        "AdmittingDiagnosesDescription",
        "AdmittingDiagnosesCodeSequence",
        "ReasonForStudy",
        "ReasonForTheRequestedProcedure",
        "RequestAttributesSequence",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
        "ScheduledProcedureStepID",
        "ScheduledProcedureStepDescription",
        "PerformedProcedureStepID",
        "PerformedProcedureStepDescription",
        "PerformedLocation",
        "PerformedStationName",
        "ScheduledStationName",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "OrderEnteredBy",
        "OrderEntererLocation",
        "OrderCallbackPhoneNumber",
        "ReferencedStudySequence",
        "ReferencedPerformedProcedureStepSequence",
        # Descriptions that are free text in practice.
        "StudyDescription",
        "SeriesDescription",
        "ProtocolName",
        "TimezoneOffsetFromUTC",
        # Embedded images, signatures and audit copies of the original values.
        "IconImageSequence",
        "DigitalSignaturesSequence",
        "MACParametersSequence",
        "OriginalAttributesSequence",
        "ModifiedAttributesSequence",
        "EncryptedAttributesSequence",
        "ContentSequence",
        "DataSetTrailingPadding",
    }
)
"""Attributes removed wherever they occur (Annex E action X)."""

EMPTIED_KEYWORDS = frozenset({"PatientBirthDate", "AccessionNumber", "StudyID"})
"""Attributes kept with an empty value (Annex E action Z)."""

REMOVED_VRS = frozenset({"LT", "ST", "UT", "AE", "UN"})
"""Value representations removed wherever they occur: free text, AE titles, unknown."""

METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)
"""DeidentificationMethodCodeSequence entries (coding scheme DCM, CID 7050)."""

METHOD_TEXT = "DSNet-Ops PS3.15 E basic, keyed pseudonyms, shifted dates"
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
    return _digest(key, "patient-id", patient_id).hex()[:16]


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

    out = copy.deepcopy(ds)
    _clean(out, key, shift)
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


def _clean(ds: Dataset, key: bytes | str, shift: int) -> None:
    """Apply the element rules to `ds` and, recursively, to every sequence item."""
    for elem in list(ds):
        tag, vr = elem.tag, elem.VR
        if _is_removed(tag, elem.keyword, vr):
            del ds[tag]
        elif elem.keyword in EMPTIED_KEYWORDS or vr == "PN":
            elem.value = ""
        elif vr == "SQ":
            for item in elem.value:
                _clean(item, key, shift)
        elif vr == "UI" and elem.value:
            elem.value = _map_values(elem.value, lambda uid: _replace_uid(uid, key))
        elif vr in ("DA", "DT") and elem.value:
            shifted = _map_values(elem.value, lambda text, v=vr: _shift_date(text, v, shift))
            if shifted is None:
                del ds[tag]
            else:
                elem.value = shifted


def _is_removed(tag: BaseTag, keyword: str, vr: str) -> bool:
    """Tell whether the profile removes an element (by keyword, VR, group or length tag)."""
    overlay_or_curve = (tag.group & 0xFF00) in (0x5000, 0x6000)
    return (
        keyword in REMOVED_KEYWORDS
        or vr in REMOVED_VRS
        or overlay_or_curve
        or tag.element == 0x0000
        or tag.is_private
    )


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
