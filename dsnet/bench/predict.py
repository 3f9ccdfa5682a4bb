"""End-to-end prediction time against the bare model forward, per slice, in one run.

For each DICOM slice the benchmark alternates, `repeats` times after one untimed warm-up
of each:

- *end to end*: `dsnet.inference.predict.process_file`, everything ``dsnet predict`` does for one
  slice (read and decode the DICOM, HU, resample and window, detector forward, map boxes
  back, trabecular HU per box, overlay PNG, JSON), writing into a scratch folder;
- *forward*: the detector alone on the same, already prepared input tensor.

Both run on the same loaded model and device, so their ratio (median over the repeats)
is the overhead of the prediction pipeline; the target is <= 1.3x. Loading the model is
a one-off cost and is excluded from both.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch

from dsnet.core.device import device_description, select_device, synchronize
from dsnet.core.errors import InputError
from dsnet.inference.detect import inference_settings, model_input
from dsnet.inference.load import load_detector, resolve_model
from dsnet.inference.predict import process_file
from dsnet.io import read_slice

TARGET_RATIO = 1.3


@dataclass(frozen=True)
class SliceTiming:
    """Median timings of one slice.

    Attributes:
        file: The DICOM file.
        end_to_end_s: Median seconds of the whole per-slice prediction.
        forward_s: Median seconds of the bare detector forward on the same input.

    """

    file: str
    end_to_end_s: float
    forward_s: float

    @property
    def ratio(self) -> float:
        """End-to-end time / forward time."""
        return self.end_to_end_s / self.forward_s


@dataclass(frozen=True)
class PredictBench:
    """Result of `bench_predict`.

    Attributes:
        slices: One timing per slice.
        repeats: Timed repetitions per slice.
        device: Where it ran.

    """

    slices: list[SliceTiming]
    repeats: int
    device: str

    @property
    def ratio(self) -> float:
        """Overall ratio: summed end-to-end medians / summed forward medians."""
        return sum(s.end_to_end_s for s in self.slices) / sum(s.forward_s for s in self.slices)

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for ``--out``)."""
        return {
            "device": self.device,
            "repeats": self.repeats,
            "ratio": self.ratio,
            "target_ratio": TARGET_RATIO,
            "slices": [
                {"file": s.file, "end_to_end_s": s.end_to_end_s, "forward_s": s.forward_s,
                 "ratio": s.ratio}
                for s in self.slices
            ],
        }  # fmt: skip


def _forward_seconds(model: Any, image: Any, device: Any) -> float:

    tensor = image.to(device)
    synchronize(device)
    tick = time.perf_counter()
    with torch.inference_mode():
        model([tensor])
    synchronize(device)
    return time.perf_counter() - tick


def bench_predict(
    model: str | PathLike[str],
    files: Sequence[str | PathLike[str]],
    repeats: int = 5,
    params: Mapping[str, Any] | None = None,
) -> PredictBench:
    """Time end-to-end prediction against the bare forward pass, slice by slice.

    Args:
        model: Checkpoint path or MLflow model URI.
        files: DICOM slices.
        repeats: Timed repetitions of each measurement per slice (median reported).
        params: Parameters (``evaluate`` section, as for ``dsnet predict``).

    Returns:
        The per-slice medians and the overall ratio.

    Raises:
        InputError: No files, `repeats` < 1, a file that is not a readable CT slice, or
            a bad model.

    """
    if not files:
        raise InputError("DICOM", "no files given")
    if repeats < 1:
        raise InputError("--repeats", f"must be at least 1, got {repeats}")
    settings = inference_settings(params)
    device = select_device(settings["device"], setting="evaluate.device")
    detector, ckpt = load_detector(resolve_model(model), device, settings["threshold"])
    preprocess = ckpt["preprocess"]
    timings = []
    pipeline = (detector, preprocess, settings)
    with tempfile.TemporaryDirectory(prefix="dsnet-bench-predict-") as scratch:
        pipeline = (*pipeline, Path(scratch), device)
        for file in map(Path, files):
            image, _ = model_input(read_slice(file), preprocess)
            end_to_end, forward = [], []
            for run in range(repeats + 1):
                tick = time.perf_counter()
                result = process_file(file, "slice", *pipeline)
                synchronize(device)
                elapsed = time.perf_counter() - tick
                if result.status != "ok":
                    raise InputError(file, result.reason or "prediction failed")
                seconds = _forward_seconds(detector, image, device)
                if run > 0:  # the first round is the warm-up
                    end_to_end.append(elapsed)
                    forward.append(seconds)
            timings.append(
                SliceTiming(str(file), statistics.median(end_to_end), statistics.median(forward))
            )
    return PredictBench(timings, repeats, device_description(device))
