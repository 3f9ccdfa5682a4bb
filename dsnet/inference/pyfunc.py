"""DSNet as an MLflow pyfunc model, and getting a checkpoint back from a model URI.

The pyfunc wraps a ``dsnet-checkpoint/1`` file (the artifact ``checkpoint``) and the
``dsnet`` package itself (``code_paths``), so ``mlflow.pyfunc.load_model(
"models:/dsnet@champion")`` works in a fresh process with the pinned requirements.

Input: a DataFrame with one row per CT slice, either

- ``path``: a DICOM file readable by `dsnet.io.read_slice`, or
- ``hu``: a 2-D array (list of rows) of Hounsfield units with ``spacing``: ``[row, col]``
  pixel spacing in mm, optionally ``orientation``: its ImageOrientationPatient (6 cosines;
  absent: stored anterior-up, patient right on the left) and ``file``: a name for the slice.

Output: the detections table, one row per detection (slices without detections add no
row), sorted per slice by descending score::

    file (str) | x1 | y1 | x2 | y2 (float, stored pixel-edge coordinates, x = column)
    | label (normal | osteopenia | osteoporosis) | score (float in [0, 1])

Prediction goes through `dsnet.inference` (`load_detector`, `model_input`, `detect`), the
same code as ``dsnet predict`` and ``dsnet evaluate``: the canonical frame of the
checkpoint (`dsnet.io.canonical`), boxes mapped back to the row's own pixel grid. The
inference parameter ``score_threshold`` (default ``evaluate.decision_threshold``) drops
weaker detections.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema
from pydicom.data import get_testdata_file

import dsnet
from dsnet.core.device import select_device
from dsnet.core.errors import InputError
from dsnet.data.classes import CLASS_NAMES
from dsnet.inference.detect import detect, inference_settings
from dsnet.inference.detect import model_input as to_input
from dsnet.inference.load import load_detector
from dsnet.io import CTSlice, read_slice
from dsnet.tracking.lineage import pipeline_tags
from dsnet.tracking.runs import configure_mlflow, ensure_artifact_credentials, ensure_experiment

ARTIFACT_KEY = "checkpoint"
MODEL_NAME_IN_RUN = "model"
OUTPUT_COLUMNS = ("file", "x1", "y1", "x2", "y2", "label", "score")
REQUIREMENTS = (
    "mlflow",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "pandas",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-rle",
    "pillow",
    "matplotlib",
    "pyyaml",
)
"""Distributions the pyfunc needs at inference, pinned to the versions installed here."""


class DSNetPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc around a DSNet checkpoint (see the module docstring for I/O)."""

    def load_context(self, context: Any) -> None:
        """Load the detector from the ``checkpoint`` artifact (CUDA if available, else CPU)."""
        config = dict(context.model_config or {})
        self.threshold = float(config.get("decision_threshold", 0.5))
        self.device = select_device(config.get("device", "auto"), setting="model_config device")
        self.detector, self.checkpoint = load_detector(
            context.artifacts[ARTIFACT_KEY], self.device, 0.0
        )

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - untyped for MLflow
        """Detect and grade the vertebral bodies of every slice in `model_input`.

        Args:
            context: The MLflow context (unused after loading).
            model_input: DataFrame with ``path``, or ``hu`` + ``spacing`` (+ ``orientation``,
                ``file``).
            params: ``{"score_threshold": float}`` overriding the logged default.

        Returns:
            DataFrame with columns ``file, x1, y1, x2, y2, label, score``.

        """
        requested = (params or {}).get("score_threshold")
        threshold = self.threshold if requested is None else float(requested)
        rows = []
        for index, row in enumerate(model_input.to_dict("records")):
            ct = slice_from_row(row, index)
            image, placement = to_input(ct, self.checkpoint["preprocess"])
            found = detect(self.detector, image, placement, self.device)
            for box, label, score in zip(found.boxes, found.labels, found.scores, strict=True):
                if score < threshold:
                    continue
                name = CLASS_NAMES.get(int(label), str(int(label)))
                rows.append((str(ct.path), *(float(v) for v in box), name, float(score)))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def slice_from_row(row: Mapping[str, Any], index: int) -> Any:
    """Turn one input row into a `dsnet.io.CTSlice` (read from ``path`` or built from ``hu``).

    Raises:
        InputError: Neither a usable ``path`` nor an ``hu`` array with ``spacing``.

    """
    path = row.get("path")
    if isinstance(path, str) and path:
        return read_slice(path)
    hu = row.get("hu")
    name = row.get("file") if isinstance(row.get("file"), str) else f"row-{index}"
    if hu is None:
        raise InputError(name, "row has neither 'path' nor 'hu'")
    hu = np.asarray([np.asarray(r, dtype=np.float32) for r in hu], dtype=np.float32)
    spacing = row.get("spacing")
    if hu.ndim != 2 or spacing is None or len(spacing) != 2:
        raise InputError(name, "'hu' must be a 2-D array with 'spacing' [row_mm, col_mm]")
    orientation = row.get("orientation")
    if isinstance(orientation, float):  # a missing cell in a DataFrame of mixed rows
        orientation = None
    if orientation is not None and len(orientation) != 6:
        raise InputError(name, "'orientation' must hold 6 direction cosines")
    return CTSlice(
        path=Path(name),
        hu=hu,
        spacing=(float(spacing[0]), float(spacing[1])),
        position=None,
        orientation=None if orientation is None else tuple(float(v) for v in orientation),
        patient_id="",
        study_uid="",
        series_uid="",
        sop_uid="",
        instance_number=None,
        meta={},
    )


def signature() -> Any:
    """The I/O: ``path`` or ``hu`` + ``spacing`` (+ ``orientation``, ``file``) in; detections."""
    inputs = Schema(
        [
            ColSpec("string", "path", required=False),
            ColSpec(Array(Array("double")), "hu", required=False),
            ColSpec(Array("double"), "spacing", required=False),
            ColSpec(Array("double"), "orientation", required=False),
            ColSpec("string", "file", required=False),
        ]
    )
    outputs = Schema(
        [ColSpec("string", "file")]
        + [ColSpec("double", c) for c in ("x1", "y1", "x2", "y2")]
        + [ColSpec("string", "label"), ColSpec("double", "score")]
    )
    params = ParamSchema([ParamSpec("score_threshold", "double", None)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example() -> Any:
    """Return a real CT slice as an HU-array row: pydicom's ``CT_small.dcm`` (128 x 128)."""
    ct = read_slice(get_testdata_file("CT_small.dcm"))
    hu = [[float(v) for v in r] for r in ct.hu.round(1)]
    return pd.DataFrame({"hu": [hu], "spacing": [list(ct.spacing)], "file": ["CT_small.dcm"]})


def pip_requirements() -> list[str]:
    """Pinned requirements: each of `REQUIREMENTS` at the version installed here."""
    pinned = []
    for name in REQUIREMENTS:
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pinned


def _package_copy(scratch: Path) -> Path:
    """Copy the ``dsnet`` package (without caches) for ``code_paths``."""
    target = scratch / "dsnet"
    shutil.copytree(
        Path(dsnet.__file__).parent, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return target


def log_pyfunc(
    model_path: str | os.PathLike[str],
    run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> Any:
    """Log the pyfunc model of a checkpoint into run `run_id` (or a new ``register`` run).

    Args:
        model_path: The ``model.pt`` checkpoint.
        run_id: The training run to attach the model to; ``None`` starts a new run.
        params: Parameters (``evaluate.decision_threshold``, ``evaluate.device``).

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ``model_id``, ``run_id``).

    """
    configure_mlflow()
    settings = inference_settings(params)
    config = {"decision_threshold": settings["threshold"], "device": settings["device"]}
    if run_id is None:
        active = mlflow.start_run(
            experiment_id=ensure_experiment(), run_name="register", tags=pipeline_tags()
        )
    else:
        run = mlflow.MlflowClient().get_run(run_id)
        ensure_artifact_credentials(mlflow.get_experiment(run.info.experiment_id).artifact_location)
        active = mlflow.start_run(run_id=run_id)
    with active, tempfile.TemporaryDirectory(prefix="dsnet-pyfunc-") as scratch:
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=DSNetPyfunc(),
            artifacts={ARTIFACT_KEY: str(Path(model_path).resolve())},
            code_paths=[str(_package_copy(Path(scratch)))],
            signature=signature(),
            input_example=input_example(),
            pip_requirements=pip_requirements(),
            model_config=config,
        )
