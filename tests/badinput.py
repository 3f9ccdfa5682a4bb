"""Build a corpus of bad (and PHI-laden) DICOM inputs in a folder, for any area's tests.

Every writer takes a folder, writes one file there and returns its path. All files are
derived from pydicom's real sample CT (`CT_small.dcm`, GE, 128 x 128, signed 16-bit,
slope 1, intercept -1024) or copied from pydicom's real MR / RTDOSE samples.

`BAD_INPUTS` lists (writer, reason fragment) pairs: `dsnet.io.read_slice` must raise
`InputError` whose one-line message names the file and contains the fragment.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import MPEG2MPML, JPEG2000Lossless


def sample_ct() -> Dataset:
    """A fresh copy of pydicom's real sample CT slice (`CT_small.dcm`)."""
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def write_dataset(folder: Path, name: str, ds: Dataset) -> Path:
    """Save `ds` as a DICOM Part 10 file `folder/name` and return its path."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_truncated(folder: Path) -> Path:
    """CT_small cut off in the middle of its pixel data (an interrupted copy)."""
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    path = Path(folder) / "truncated.dcm"
    path.write_bytes(data[: len(data) - 5000])
    return path


def write_text_file(folder: Path) -> Path:
    """A plain text file that merely carries a .dcm name."""
    path = Path(folder) / "notes.dcm"
    path.write_text("Patient called, rescheduled CT for next week.\n" * 20)
    return path


def write_mr_slice(folder: Path) -> Path:
    """pydicom's real MR slice (`MR_small.dcm`)."""
    return Path(shutil.copy(get_testdata_file("MR_small.dcm"), Path(folder) / "mr.dcm"))


def write_rtdose(folder: Path) -> Path:
    """pydicom's real RT Dose object (`rtdose.dcm`, multi-frame dose grid)."""
    return Path(shutil.copy(get_testdata_file("rtdose.dcm"), Path(folder) / "rtdose.dcm"))


def write_ct_without_pixels(folder: Path) -> Path:
    """A CT header with its PixelData removed."""
    ds = sample_ct()
    del ds.PixelData
    return write_dataset(folder, "ct_no_pixels.dcm", ds)


def write_multiframe_ct(folder: Path, frames: int = 3) -> Path:
    """A CT object holding `frames` copies of the slice as one multi-frame image."""
    ds = sample_ct()
    stack = np.stack([ds.pixel_array] * frames)
    ds.NumberOfFrames = frames
    ds.PixelData = stack.tobytes()
    return write_dataset(folder, "ct_multiframe.dcm", ds)


def write_ct_missing_rescale(folder: Path) -> Path:
    """A CT slice without RescaleSlope / RescaleIntercept (HU undefined)."""
    ds = sample_ct()
    del ds.RescaleSlope
    del ds.RescaleIntercept
    return write_dataset(folder, "ct_no_rescale.dcm", ds)


def write_ct_absurd_spacing(folder: Path, spacing: tuple[float, float] = (12.0, 12.0)) -> Path:
    """A CT slice whose PixelSpacing is implausible for an axial CT (default 12 mm)."""
    ds = sample_ct()
    ds.PixelSpacing = [float(s) for s in spacing]
    tag = "_".join(f"{s:g}" for s in spacing)
    return write_dataset(folder, f"ct_spacing_{tag}.dcm", ds)


def write_ct_missing_spacing(folder: Path) -> Path:
    """A CT slice without PixelSpacing."""
    ds = sample_ct()
    del ds.PixelSpacing
    return write_dataset(folder, "ct_no_spacing.dcm", ds)


def write_ct_unknown_codec(folder: Path) -> Path:
    """A CT slice claiming MPEG-2 video compression, for which no decoder exists."""
    ds = sample_ct()
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
    ds["PixelData"].VR = "OB"
    return write_dataset(folder, "ct_mpeg2.dcm", ds)


def write_ct_corrupt_j2k(folder: Path) -> Path:
    """A JPEG 2000 lossless CT slice whose codestream is cut in half."""
    ds = sample_ct()
    ds.compress(JPEG2000Lossless)
    frame = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)
    codestream = next(frame)
    ds.PixelData = encapsulate([codestream[: len(codestream) // 2]])
    return write_dataset(folder, "ct_corrupt_j2k.dcm", ds)


BAD_INPUTS: list[tuple[Callable[[Path], Path], str]] = [
    (write_truncated, "truncated"),
    (write_text_file, "not a DICOM file"),
    (write_mr_slice, "modality is MR, expected CT"),
    (write_rtdose, "modality is RTDOSE, expected CT"),
    (write_ct_without_pixels, "no PixelData"),
    (write_multiframe_ct, "multi-frame object (3 frames)"),
    (write_ct_missing_rescale, "missing RescaleSlope and RescaleIntercept"),
    (write_ct_absurd_spacing, "absurd PixelSpacing [12.0, 12.0] mm"),
    (lambda folder: write_ct_absurd_spacing(folder, (0.0, 0.0)), "absurd PixelSpacing [0.0"),
    (write_ct_missing_spacing, "missing PixelSpacing"),
    (write_ct_unknown_codec, "no pixel data decoder for transfer syntax MPEG2"),
    (write_ct_corrupt_j2k, "undecodable pixel data in transfer syntax JPEG 2000"),
]
"""(writer, fragment of the expected InputError reason) for each bad input."""

PHI = {
    "PatientName": "Doe^Jonathan^Q",
    "PatientID": "MRN-99812377",
    "PatientBirthDate": "19470312",
    "PatientAddress": "42 Wallaby Way, Sydney",
    "PatientTelephoneNumbers": "+61-2-5550-1234",
    "OtherPatientIDs": "SSN-078-05-1120",
    "PatientMotherBirthName": "Smithfield^Martha",
    "InstitutionName": "St Elsewhere General Hospital",
    "InstitutionAddress": "1 Hospital Road, Springfield",
    "InstitutionalDepartmentName": "Radiology West Wing",
    "StationName": "CT-ELSEWHERE-07",
    "ReferringPhysicianName": "House^Gregory",
    "PerformingPhysicianName": "Quinn^Michaela",
    "OperatorsName": "Nightingale^Florence",
    "PhysiciansOfRecord": "Kildare^James",
    "NameOfPhysiciansReadingStudy": "Welby^Marcus",
    "RequestingPhysician": "Zhivago^Yuri",
    "AccessionNumber": "ACC55512345",
    "StudyID": "STUDY7781",
    "DeviceSerialNumber": "SN-GE-4417733",
    "StudyDescription": "CT ABD for Jonathan Doe",
    "SeriesDescription": "Doe bone kernel 1mm",
    "ImageComments": "pt Jonathan Doe, claustrophobic",
    "AdditionalPatientHistory": "fell at 42 Wallaby Way",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1111111111",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.2222222222",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.3333333333",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.4444444444",
    "StudyDate": "20210405",
    "SeriesDate": "20210405",
    "AcquisitionDate": "20210406",
    "ContentDate": "20210407",
}
"""Identifying values put into the PHI-laden CT header, by attribute keyword."""

NESTED_PHI = {
    "referenced_sop_uid": "1.2.826.0.1.3680043.8.498.5555555555",
    "request_physician": "Crane^Frasier",
    "request_id": "REQ-ZX-88123",
    "private_creator": "ACME HOSPITAL PACS",
    "private_name": "Doe Jonathan private copy",
    "private_in_sequence": "Jonathan Doe MRN-99812377 nested",
    "other_id_in_sequence": "DL-CA-D1234567",
}
"""PHI values placed inside sequences and private tags of the PHI-laden CT header."""


def write_phi_ct(folder: Path) -> Path:
    """A real CT slice whose header is full of PHI (see `PHI` and `NESTED_PHI`).

    Besides the top-level attributes in `PHI` it holds: a ReferencedImageSequence item
    with a SOP Instance UID, a RequestAttributesSequence item with a requesting
    physician and a requested procedure ID, an OtherPatientIDsSequence item, a private
    block with a patient name at top level, and a private element inside a sequence
    item. BurnedInAnnotation is "NO".
    """
    ds = sample_ct()
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = PHI["SOPInstanceUID"]
    ds.BurnedInAnnotation = "NO"

    referenced = Dataset()
    referenced.ReferencedSOPClassUID = ds.SOPClassUID
    referenced.ReferencedSOPInstanceUID = NESTED_PHI["referenced_sop_uid"]
    ds.ReferencedImageSequence = Sequence([referenced])

    request = Dataset()
    request.RequestingPhysician = NESTED_PHI["request_physician"]
    request.RequestedProcedureID = NESTED_PHI["request_id"]
    request.private_block(0x0011, NESTED_PHI["private_creator"], create=True).add_new(
        0x01, "LO", NESTED_PHI["private_in_sequence"]
    )
    ds.RequestAttributesSequence = Sequence([request])

    other_id = Dataset()
    other_id.PatientID = NESTED_PHI["other_id_in_sequence"]
    other_id.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other_id])

    block = ds.private_block(0x0013, NESTED_PHI["private_creator"], create=True)
    block.add_new(0x10, "LO", NESTED_PHI["private_name"])
    return write_dataset(folder, "ct_phi.dcm", ds)
