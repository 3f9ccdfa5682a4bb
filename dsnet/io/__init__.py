"""Reading CT like a radiology tool: DICOM slices to HU, model input, de-identification.

Every slice reaches the model through the canonical frame (`dsnet.io.canonical`).
numpy + pydicom (+ scipy) only; no torch, models or tracking.

May import: dsnet.core
"""

from dsnet.io.canonical import CanonicalPlacement, to_canonical, to_canonical_hu
from dsnet.io.deid import deidentify, patient_date_shift, pseudo_uid, pseudonym
from dsnet.io.dicom import CTSlice, read_slice
from dsnet.io.geometry import DisplayFrame, display_frame, patient_points, storage_frames
from dsnet.io.series import SeriesScan, read_series
from dsnet.io.transforms import resample, resampled_shape, window

__all__ = [
    "CTSlice",
    "CanonicalPlacement",
    "DisplayFrame",
    "SeriesScan",
    "deidentify",
    "display_frame",
    "patient_points",
    "patient_date_shift",
    "pseudo_uid",
    "pseudonym",
    "read_series",
    "read_slice",
    "resample",
    "resampled_shape",
    "storage_frames",
    "to_canonical",
    "to_canonical_hu",
    "window",
]
