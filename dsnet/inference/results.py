"""The records of a prediction run: per slice, per file, and the run's summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SliceDetections:
    """Detections of one slice in original pixels, sorted by descending score.

    Attributes:
        boxes: float64[D, 4] xyxy in original pixel-edge coordinates, inside the image.
        labels: int64[D] class ids (1 normal, 2 osteopenia, 3 osteoporosis).
        scores: float64[D] in [0, 1].

    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


@dataclass
class FileResult:
    """What happened to one input file.

    Attributes:
        file: The input path as found.
        status: ``ok`` or ``error``.
        runtime_s: Wall time spent on the file (read, infer, write).
        stem: Output name (``<stem>.json`` / ``<stem>.png``) when ok.
        reason: One-line reason when status is ``error``.
        record: The per-slice JSON content when ok.

    """

    file: str
    status: str
    runtime_s: float
    stem: str | None = None
    reason: str | None = None
    record: dict[str, Any] | None = None


@dataclass
class PredictSummary:
    """The result of `predict`: every input file accounted for, grades per patient.

    Attributes:
        out_dir: Where the outputs are.
        files: One entry per input file, in input order.
        patients: Patient id -> summary (see `patient_summaries`).
        model: The model as given.

    """

    out_dir: Path
    files: list[FileResult]
    patients: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: str = ""

    @property
    def failed(self) -> list[FileResult]:
        """The files that could not be processed."""
        return [f for f in self.files if f.status != "ok"]
