"""Build a CT Image Storage DICOM dataset for one synthetic axial slice.

The header carries what a viewer and `dsnet.io` need: patient, study, series and frame of
reference modules with deterministic UIDs (``2.25.<UUID v5>`` of the generator seed and
the entity, so the same seed gives the same bytes), image plane geometry, and the CT image
module (16-bit signed stored values, ``HU = stored - 1024``).

Geometry: the slice is rendered in the radiological display frame (rows anterior to
posterior, columns from the patient's right to their left) around the field-of-view centre
``fov_centre_xy``, and stored in one of the 8 flip/transpose orders
(`dsnet.io.geometry.storage_frames`; the identity for the standard scan) with the tags that
say so: Rows/Columns, PixelSpacing, ``ImageOrientationPatient`` (e.g. ``[1, 0, 0, 0, 1,
0]`` for the display order, ``[1, 0, 0, 0, -1, 0]`` posterior up) and
``ImagePositionPatient``, the centre of the first stored pixel.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dsnet.io.geometry import DisplayFrame

RESCALE_INTERCEPT = -1024
MANUFACTURER = "DSNet-Ops synthetic"
MODEL_NAME = "lumbar-ct-phantom"
GENERATOR_VERSION = "1"


def synthetic_uid(seed: int, *parts: str | int) -> str:
    """A deterministic ``2.25`` UID for one entity of one generated data set.

    The integer form of a name-based (version 5) UUID, as PS3.5 B.2 allows.

    Args:
        seed: The data set's seed.
        parts: What the UID names, e.g. ``("series", "SYN-0001")``.

    Returns:
        A valid DICOM UID string (at most 64 characters).

    """
    name = "/".join(["dsnet-synth", GENERATOR_VERSION, str(seed), *(str(p) for p in parts)])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


@dataclass(frozen=True)
class StudyInfo:
    """Patient and study identity shared by all slices of one synthetic patient.

    Attributes:
        seed: Seed of the data set (enters the UIDs).
        patient_id: e.g. ``SYN-0001``.
        age: Age in years at the study date.
        sex: ``F`` or ``M``.
        study_datetime: Date and time of the study.
        birth_date: Birth date consistent with `age` at the study date.
        spacing: Pixel spacing (mm).
        slice_thickness: Slice thickness (mm).
        kernel: Reconstruction kernel name.
        table_height: Table height (mm).
        fov_centre_xy: Patient (x, y) mm of the centre of the field of view.
        storage: How the display-frame pixels are stored (None: as they are).

    """

    seed: int
    patient_id: str
    age: int
    sex: str
    study_datetime: dt.datetime
    birth_date: dt.date
    spacing: float
    slice_thickness: float
    kernel: str
    table_height: float
    fov_centre_xy: tuple[float, float] = (0.0, 0.0)
    storage: tuple[bool, bool, bool] | None = None

    def frame(self, display_shape: tuple[int, int]) -> DisplayFrame:
        """The stored grid of a display-frame slice of `display_shape` (square pixels)."""
        transpose, flip_rows, flip_cols = self.storage or (False, False, False)
        rows, cols = display_shape
        stored_shape = (cols, rows) if transpose else (rows, cols)
        spacing = (self.spacing, self.spacing)
        return DisplayFrame(stored_shape, spacing, transpose, flip_rows, flip_cols)


def ct_slice_dataset(
    study: StudyInfo, stored: np.ndarray, z: float, instance_number: int, image_key: str
) -> Dataset:
    """The complete DICOM file dataset (with file meta) of one axial CT slice.

    Args:
        study: Patient and study identity.
        stored: int16 [H, W] pixel values (HU + 1024) in the display frame (row 0
            anterior, column 0 at the patient's right); written in ``study.storage`` order.
        z: Table position of the slice (mm, patient z; larger is cranial).
        instance_number: 1-based position of the slice in its series (cranial first).
        image_key: Names the slice's content within the patient's study (with every
            generator argument that changes it), so the SOPInstanceUID differs whenever
            the pixels do, e.g. ``"L2 2/3"`` (2nd of 3 slices per vertebra through L2).

    Returns:
        A dataset ready for ``pydicom.dcmwrite(..., enforce_file_format=True)``.

    """
    frame = study.frame(stored.shape)
    display_rows, display_cols = stored.shape
    stored = frame.to_stored(stored)
    rows, cols = stored.shape
    seed, pid = study.seed, study.patient_id
    sop_uid = synthetic_uid(seed, "image", pid, image_key)
    date = study.study_datetime.strftime("%Y%m%d")
    time = study.study_datetime.strftime("%H%M%S")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"DSNET_SYNTH_{GENERATOR_VERSION}"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time
    ds.AccessionNumber = f"A{seed % 10000:04d}{pid[-4:]}"
    ds.Modality = "CT"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.InstitutionName = "Synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CT LUMBAR SPINE"
    ds.SeriesDescription = "AXIAL L1-L4"
    ds.PatientName = f"SYNTHETIC^{pid}"
    ds.PatientID = pid
    ds.PatientBirthDate = study.birth_date.strftime("%Y%m%d")
    ds.PatientSex = study.sex
    ds.PatientAge = f"{study.age:03d}Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic data, no real patient"
    ds.BodyPartExamined = "LSPINE"
    ds.SliceThickness = f"{study.slice_thickness:g}"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = f"{study.spacing * cols:.1f}"
    ds.TableHeight = f"{study.table_height:.1f}"
    ds.ConvolutionKernel = study.kernel
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = synthetic_uid(seed, "study", pid)
    ds.SeriesInstanceUID = synthetic_uid(seed, "series", pid)
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance_number
    cx, cy = study.fov_centre_xy
    display_position = (
        cx - (display_cols - 1) / 2 * study.spacing,
        cy - (display_rows - 1) / 2 * study.spacing,
        z,
    )
    x, y, _ = frame.stored_position(display_position)
    ds.ImagePositionPatient = [f"{x:.4f}", f"{y:.4f}", f"{z:.2f}"]
    ds.ImageOrientationPatient = [int(v) for v in frame.stored_orientation()]
    ds.FrameOfReferenceUID = synthetic_uid(seed, "frame", pid)
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{z:.2f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [f"{study.spacing:.6g}", f"{study.spacing:.6g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = [400, 40]
    ds.WindowWidth = [1800, 400]
    ds.WindowCenterWidthExplanation = ["BONE", "SOFT TISSUE"]
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<i2").tobytes()
    return ds
