"""Reading CT like a radiology tool: DICOM slices to HU, model input, de-identification.

numpy + pydicom (+ scipy) only; no torch, models or tracking.

May import: dsnet.core
"""

from dsnet.io.deid import deidentify, patient_date_shift, pseudo_uid, pseudonym
from dsnet.io.dicom import CTSlice, read_slice
from dsnet.io.series import SeriesScan, read_series
from dsnet.io.transforms import (
    boxes_to_model,
    boxes_to_original,
    resample,
    resampled_shape,
    to_model_input,
    window,
)

__all__ = [
    "CTSlice",
    "SeriesScan",
    "boxes_to_model",
    "boxes_to_original",
    "deidentify",
    "patient_date_shift",
    "pseudo_uid",
    "pseudonym",
    "read_series",
    "read_slice",
    "resample",
    "resampled_shape",
    "to_model_input",
    "window",
]
