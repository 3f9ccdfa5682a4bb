from __future__ import annotations

from datetime import date

import numpy as np
import pydicom
import pytest
from badinput import NESTED_PHI, PHI, sample_ct, write_dataset, write_phi_ct
from pydicom.uid import UID

from dsnet.core.errors import InputError
from dsnet.io import deidentify, patient_date_shift, pseudo_uid, pseudonym, read_slice
from dsnet.io.deid import KEPT

KEY = b"project-secret-key"
DATES = ["StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"]


def _as_date(text: str) -> date:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


@pytest.fixture()
def phi_file(tmp_path):
    return write_phi_ct(tmp_path)


@pytest.fixture()
def deidentified(phi_file, tmp_path):
    """The PHI-laden CT de-identified and saved; returns (output path, output bytes)."""
    out = deidentify(pydicom.dcmread(phi_file), KEY)
    path = write_dataset(tmp_path / "out", "deid.dcm", out)
    return path, path.read_bytes()


def test_no_phi_value_survives_anywhere_in_the_file(phi_file, deidentified):
    _, data = deidentified
    values = list(PHI.values()) + list(NESTED_PHI.values())
    names = PHI["PatientName"].split("^") + PHI["ReferringPhysicianName"].split("^")
    values += [part for part in names if len(part) > 2]  # not the middle initial
    values += ["1.3.6.1.4.1.5962"]  # root of CT_small's own UIDs (instance creator)
    original = phi_file.read_bytes()
    assert [v for v in values if v.encode() not in original] == []  # the search can hit
    assert [v for v in values if v.encode() in data] == []


def test_pixels_and_image_geometry_are_unchanged(phi_file, deidentified):
    path, _ = deidentified
    before, after = read_slice(phi_file), read_slice(path)
    np.testing.assert_array_equal(after.hu, before.hu)
    assert pydicom.dcmread(path).PixelData == pydicom.dcmread(phi_file).PixelData
    assert after.spacing == before.spacing
    assert after.position == before.position
    assert after.meta["KVP"] == 120.0
    assert after.meta["ConvolutionKernel"] == "STANDARD"
    assert after.meta["PatientSex"] == "O"  # patient characteristics kept


def test_header_carries_the_profile_and_pseudonyms(deidentified):
    path, _ = deidentified
    ds = pydicom.dcmread(path)
    assert ds.PatientID == pseudonym(PHI["PatientID"], KEY)
    assert ds.PatientName == ds.PatientID
    assert ds.PatientBirthDate == ""
    assert ds.AccessionNumber == ""
    assert ds.ReferringPhysicianName == ""
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    assert {"113100", "113107"} <= codes
    assert all(i.CodingSchemeDesignator == "DCM" for i in ds.DeidentificationMethodCodeSequence)
    for keyword in (
        "InstitutionName",
        "PatientAddress",
        "OtherPatientIDsSequence",
        "RequestAttributesSequence",
        "ImageComments",
        "StationName",
    ):
        assert keyword not in ds
    assert not any(elem.tag.is_private for elem in ds.iterall())
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # standard UIDs stay
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    for keyword in (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "FrameOfReferenceUID",
    ):
        assert ds[keyword].value == pseudo_uid(PHI[keyword], KEY)
        assert ds[keyword].value.startswith("2.25.")
        assert UID(ds[keyword].value).is_valid


def test_dates_shift_by_the_keyed_patient_offset_keeping_intervals(phi_file):
    original = pydicom.dcmread(phi_file)
    out = deidentify(original, KEY)
    shift = patient_date_shift(PHI["PatientID"], KEY)
    assert -3650 <= shift <= -1
    for keyword in DATES:
        delta = _as_date(out[keyword].value) - _as_date(original[keyword].value)
        assert delta.days == shift
    interval = _as_date(out.ContentDate) - _as_date(out.StudyDate)
    assert interval.days == 2  # 2021-04-05 -> 2021-04-07 in the input
    assert out.StudyTime == original.StudyTime


def test_explicit_date_shift_is_applied(phi_file):
    out = deidentify(pydicom.dcmread(phi_file), KEY, date_shift_days=-100)
    assert out.StudyDate == "20201226"  # 2021-04-05 minus 100 days
    with pytest.raises(ValueError, match="non-zero"):
        deidentify(pydicom.dcmread(phi_file), KEY, date_shift_days=0)


def test_pseudonym_is_stable_keyed_and_per_patient():
    first = pseudonym("MRN-1", KEY)
    assert first == pseudonym("MRN-1", KEY)
    assert first == pseudonym("MRN-1", KEY.decode())  # str keys are UTF-8
    assert first != pseudonym("MRN-1", b"another-key")
    assert first != pseudonym("MRN-2", KEY)
    assert len(first) == 16 and int(first, 16) >= 0
    assert patient_date_shift("MRN-1", KEY) == patient_date_shift("MRN-1", KEY)


def test_relations_between_files_survive(tmp_path):
    # Two slices of one series; the first references the second.
    second = sample_ct()
    second.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.777"
    first = sample_ct()
    ref = pydicom.Dataset()
    ref.ReferencedSOPClassUID = second.SOPClassUID
    ref.ReferencedSOPInstanceUID = second.SOPInstanceUID
    first.ReferencedImageSequence = pydicom.Sequence([ref])
    a, b = deidentify(first, KEY), deidentify(second, KEY)
    assert a.SeriesInstanceUID == b.SeriesInstanceUID != first.SeriesInstanceUID
    assert a.StudyInstanceUID == b.StudyInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.ReferencedImageSequence[0].ReferencedSOPInstanceUID == b.SOPInstanceUID
    assert a.StudyDate == b.StudyDate


def test_input_dataset_is_not_modified(phi_file):
    ds = pydicom.dcmread(phi_file)
    deidentify(ds, KEY)
    assert ds.PatientName == PHI["PatientName"]
    assert ds.InstitutionName == PHI["InstitutionName"]


def test_burned_in_annotation_is_refused_unless_allowed(phi_file):
    ds = pydicom.dcmread(phi_file)
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(InputError, match="BurnedInAnnotation is YES") as caught:
        deidentify(ds, KEY)
    assert caught.value.path == str(phi_file)
    out = deidentify(ds, KEY, allow_burned_in=True)
    assert out.PatientIdentityRemoved == "YES"


def test_empty_key_is_refused(phi_file):
    with pytest.raises(ValueError, match="key must not be empty"):
        deidentify(pydicom.dcmread(phi_file), b"")


def test_only_allow_listed_attributes_survive_at_any_depth(phi_file):
    ds = pydicom.dcmread(phi_file)
    ds.ClinicalTrialSubjectID = "TRIAL-77"  # standard, but not on the allow-list
    ds.add_new(0x00100033, "LO", "ALT-BIRTH")  # Patient Birth Date in Alternative Calendar
    group = pydicom.Dataset()
    group.PatientID = "MRN-NESTED"
    ds.SourcePatientGroupIdentificationSequence = pydicom.Sequence([group])
    ds.ReferencedImageSequence[0].PersonTelephoneNumbers = "+1-555-0100"
    out = deidentify(ds, KEY)
    kept = {elem.keyword for elem in out}
    extra = {"PatientID", "PatientName", "PatientIdentityRemoved", "DeidentificationMethod"}
    extra |= {"DeidentificationMethodCodeSequence", "LongitudinalTemporalInformationModified"}
    assert kept <= set(KEPT) | extra
    assert [set(item.dir()) for item in out.ReferencedImageSequence] == [
        {"ReferencedSOPClassUID", "ReferencedSOPInstanceUID"}
    ]
