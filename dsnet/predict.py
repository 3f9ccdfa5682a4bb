"""Prediction: DICOM slices in, boxes with grades, HU baseline and overlays out.

``predict(paths, model, out_dir)`` runs the detector on every CT slice found in `paths`
(files, or folders searched recursively) and writes, per slice, ``<stem>.json`` and an
overlay ``<stem>.png``, and for the whole run ``summary.json`` (every input file with
status ok/error, reason and runtime, plus a per-patient grade) and ``report.md``.

Coordinates: the detector sees the slice in the canonical frame of the checkpoint
(`dsnet.io.canonical`: radiological display orientation from ImageOrientationPatient,
``preprocess.spacing_mm`` pixels, a ``preprocess.canvas_px`` canvas); its boxes are mapped
back exactly (`dsnet.io.CanonicalPlacement.canvas_to_stored`) and clipped to the image, so
every box written is ``[x1, y1, x2, y2]`` in pixel-edge coordinates of the *stored* DICOM
pixel grid (x = column, y = row), whatever the input spacing, size or orientation. The
overlay PNG shows the slice in the radiological frame (anterior up, patient right on the
image's left) and says so.

The inference helpers (`load_detector`, `model_input`, `detect`) are shared with
`dsnet.evaluate` and `dsnet.bench.predict` so that all three run the same pipeline.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from dsnet.config import section
from dsnet.data.classes import CLASS_NAMES
from dsnet.errors import InputError
from dsnet.fsutil import atomic_write_json
from dsnet.io import CanonicalPlacement, CTSlice, read_slice, to_canonical

DEFAULT_DECISION_THRESHOLD = 0.5
"""Detections scoring below this are not reported (``evaluate.decision_threshold``)."""
DEFAULT_HU_THRESHOLDS = (160.0, 110.0)
"""HU baseline: > 160 normal, (110, 160] osteopenia, <= 110 osteoporosis (Pickhardt 2013)."""
MODEL_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "http://", "https://")
SKIPPED_NAMES = frozenset({"DICOMDIR"})


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


def resolve_model(model: str | PathLike[str]) -> Path:
    """Turn a checkpoint path or an MLflow model URI into a local ``model.pt`` path.

    Args:
        model: A checkpoint file (``models/model.pt``), an MLflow URI such as
            ``models:/dsnet@champion`` or ``runs:/<run_id>/model``, or the local folder
            of a downloaded MLflow model.

    Returns:
        The local checkpoint path.

    Raises:
        InputError: The file does not exist (URIs raise from `dsnet.pyfunc`).

    """
    text = str(model)
    if text.startswith(MODEL_URI_SCHEMES) or Path(text).is_dir():
        from dsnet.pyfunc import checkpoint_from_uri

        return Path(checkpoint_from_uri(text))
    path = Path(text)
    if not path.is_file():
        raise InputError(path, "model checkpoint not found" if not path.exists() else "not a file")
    return path


def load_detector(model_path: str | PathLike[str], device: Any, score_threshold: float):
    """Load a checkpoint for inference.

    Args:
        model_path: A ``dsnet-checkpoint`` file (`dsnet.checkpoint`).
        device: torch device to run on.
        score_threshold: The detector drops boxes scoring below this
            (``roi_heads.score_thresh``).

    Returns:
        ``(model, checkpoint)``: the torchvision Faster R-CNN in eval mode on `device`,
        and the checkpoint dict (``preprocess``, ``categories``, ``model``, ``meta``).

    Raises:
        InputError: The checkpoint cannot be loaded (`dsnet.checkpoint.load_checkpoint`),
            e.g. it predates the canonical frame.

    """
    from dsnet.checkpoint import load_checkpoint

    model, ckpt = load_checkpoint(model_path, device)
    model.roi_heads.score_thresh = float(score_threshold)
    model.eval()
    return model, ckpt


def model_input(ct: CTSlice, preprocess: Mapping[str, Any]) -> tuple[Any, CanonicalPlacement]:
    """Build the detector input of a slice, as in training (`dsnet.io.to_canonical`).

    Args:
        ct: The slice (its ``frame`` orients it).
        preprocess: The checkpoint's ``preprocess`` (``spacing_mm``, ``canvas_px``,
            ``windows``).

    Returns:
        ``(image, placement)``: FloatTensor[3, canvas_px, canvas_px] in [0, 1] in the
        canonical frame, and where the slice lies on the canvas.

    """
    import torch

    image, placement = to_canonical(
        ct.hu,
        ct.frame,
        float(preprocess["spacing_mm"]),
        int(preprocess["canvas_px"]),
        preprocess["windows"],
    )
    return torch.from_numpy(image), placement


def detect(model: Any, image: Any, placement: CanonicalPlacement, device: Any) -> SliceDetections:
    """Run the detector on one model input and map its boxes to the stored pixel grid.

    Args:
        model: Faster R-CNN in eval mode on `device`.
        image: FloatTensor[3, canvas_px, canvas_px] (from `model_input`).
        placement: Where the slice lies on the canvas (from `model_input`).
        device: torch device of the model.

    Returns:
        The slice's detections in stored pixels (clipped to the image), by descending score.

    """
    import torch

    with torch.inference_mode():
        output = model([image.to(device)])[0]
    boxes = output["boxes"].detach().float().cpu().numpy().astype(np.float64)
    boxes = placement.canvas_to_stored(boxes)
    scores = output["scores"].detach().float().cpu().numpy().astype(np.float64)
    labels = output["labels"].detach().cpu().numpy().astype(np.int64)
    order = np.argsort(-scores, kind="stable")
    return SliceDetections(boxes[order], labels[order], scores[order])


def collect_inputs(paths: Iterable[str | PathLike[str]], exclude: Path | None = None) -> list[Path]:
    """Expand files and folders (recursively) into the list of files to process.

    Hidden files and folders and ``DICOMDIR`` index files are skipped; paths that do not
    exist are kept, so they are reported as errors. Files under `exclude` (the output
    folder) are skipped so that re-running into a folder inside the input is safe.

    Returns:
        The files, in argument order, each folder's files sorted.

    """
    exclude = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            found.append(path)
            continue
        for file in sorted(path.rglob("*")):
            relative = file.relative_to(path).parts
            if not file.is_file() or any(p.startswith(".") for p in relative):
                continue
            if file.name in SKIPPED_NAMES:
                continue
            if exclude is not None and file.resolve().is_relative_to(exclude):
                continue
            found.append(file)
    return found


def output_stems(files: Sequence[Path]) -> list[str]:
    """One distinct output name per input file.

    A file's stem is used as is when no other input shares it; files that share a stem
    (same name in different folders) get ``<stem>-<8 hex digits of their path's hash>``,
    so no output overwrites another and the name is stable across runs.
    """
    counts: dict[str, int] = {}
    for file in files:
        counts[file.stem] = counts.get(file.stem, 0) + 1
    stems = []
    for file in files:
        stem = file.stem or file.name or "slice"
        if counts[file.stem] > 1:
            digest = hashlib.sha1(str(file.resolve()).encode("utf-8")).hexdigest()[:8]
            stem = f"{stem}-{digest}"
        stems.append(stem)
    return stems


def box_mean_hu(ct: CTSlice, box_xyxy: Sequence[float]) -> float:
    """Trabecular mean HU of a box (`dsnet.data.hu_baseline`), ``nan`` for an empty box.

    The ROI is placed in the radiological display frame (its anterior shift needs anterior
    up), whatever the slice's storage.

    Args:
        ct: The slice.
        box_xyxy: (x1, y1, x2, y2) in pixel-edge coordinates of the stored grid.

    Returns:
        The mean HU of the box's trabecular ROI, or ``nan`` when the box has no area
        inside the image (the ROI is undefined).

    """
    from dsnet.data.hu_baseline import trabecular_mean_hu

    frame = ct.frame
    box = frame.boxes_to_display(np.asarray(box_xyxy, dtype=np.float64))[0]
    try:
        return trabecular_mean_hu(frame.to_display(ct.hu), box)
    except ValueError:
        return math.nan


def slice_record(
    ct: CTSlice, detections: SliceDetections, hu_thresholds: Sequence[float], threshold: float
) -> dict[str, Any]:
    """Build the per-slice JSON: detections, trabecular HU per detection, slice identity.

    Returns:
        ``{"file", "patient_id", "study_uid", "series_uid", "sop_uid", "instance_number",
        "slice_location", "spacing", "shape", "score_threshold", "detections": [{"box",
        "label", "score"}], "hu": {"thresholds", "detections": [{"mean_hu", "label"}]},
        "grade"}``; ``grade`` is the label of the most confident detection (or ``None``).

    """
    from dsnet.data.hu_baseline import classify_hu

    dets, hus = [], []
    for box, label, score in zip(
        detections.boxes, detections.labels, detections.scores, strict=True
    ):
        mean_hu = box_mean_hu(ct, box)
        hu_label = (
            CLASS_NAMES[classify_hu(mean_hu, tuple(hu_thresholds))]
            if math.isfinite(mean_hu)
            else None
        )
        dets.append(
            {
                "box": [round(float(v), 2) for v in box],
                "label": CLASS_NAMES.get(int(label), str(int(label))),
                "score": round(float(score), 4),
            }
        )
        hus.append(
            {"mean_hu": round(mean_hu, 1) if math.isfinite(mean_hu) else None, "label": hu_label}
        )
    return {
        "file": str(ct.path),
        "patient_id": ct.patient_id,
        "study_uid": ct.study_uid,
        "series_uid": ct.series_uid,
        "sop_uid": ct.sop_uid,
        "instance_number": ct.instance_number,
        "slice_location": slice_location(ct),
        "spacing": [float(s) for s in ct.spacing],
        "shape": [int(n) for n in ct.hu.shape],
        "score_threshold": float(threshold),
        "detections": dets,
        "hu": {
            "roi": "trabecular core of each detected box (dsnet.data.hu_baseline)",
            "thresholds": [float(t) for t in hu_thresholds],
            "detections": hus,
        },
        "grade": dets[0]["label"] if dets else None,
    }


def slice_location(ct: CTSlice) -> float | None:
    """Position along the patient axis (mm): ImagePositionPatient z, else SliceLocation."""
    if ct.position is not None:
        return float(ct.position[2])
    location = ct.meta.get("SliceLocation")
    return float(location) if location not in (None, "") else None


def patient_summaries(results: Iterable[FileResult]) -> dict[str, dict[str, Any]]:
    """Per patient: the lowest grade over the slices and the HU baseline per slice level.

    A slice's answer is its most confident detection; the patient's ``grade`` is the
    worst (lowest bone density) answer over their slices. ``levels`` lists every slice
    from head to foot (descending slice location) with the answer, its trabecular mean
    HU and the HU-baseline class; ``hu_baseline`` is the worst HU class over the levels.
    """
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        if result.status != "ok" or result.record is None:
            continue
        record = result.record
        top = record["detections"][0] if record["detections"] else None
        top_hu = record["hu"]["detections"][0] if top else {"mean_hu": None, "label": None}
        by_patient.setdefault(record["patient_id"], []).append(
            {
                "file": record["file"],
                "output": result.stem,
                "slice_location": record["slice_location"],
                "label": top["label"] if top else None,
                "score": top["score"] if top else None,
                "mean_hu": top_hu["mean_hu"],
                "hu_label": top_hu["label"],
            }
        )
    rank = {name: class_id for class_id, name in CLASS_NAMES.items()}
    summaries = {}
    for patient, levels in sorted(by_patient.items()):
        levels.sort(
            key=lambda lv: -math.inf if lv["slice_location"] is None else -lv["slice_location"]
        )
        graded = [lv["label"] for lv in levels if lv["label"] is not None]
        hu_graded = [lv["hu_label"] for lv in levels if lv["hu_label"] is not None]
        hu_values = [lv["mean_hu"] for lv in levels if lv["mean_hu"] is not None]
        summaries[patient] = {
            "grade": max(graded, key=rank.__getitem__) if graded else None,
            "n_slices": len(levels),
            "n_slices_with_detection": len(graded),
            "hu_baseline": {
                "grade": max(hu_graded, key=rank.__getitem__) if hu_graded else None,
                "lowest_mean_hu": min(hu_values) if hu_values else None,
            },
            "levels": levels,
        }
    return summaries


def inference_settings(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Decision threshold, HU thresholds and device from ``params["evaluate"]`` (or defaults)."""
    cfg = section(params or {}, "evaluate")
    return {
        "threshold": float(cfg.get("decision_threshold", DEFAULT_DECISION_THRESHOLD)),
        "hu_thresholds": tuple(float(t) for t in cfg.get("hu_thresholds", DEFAULT_HU_THRESHOLDS)),
        "device": cfg.get("device", "auto"),
    }


def process_file(
    file: Path,
    stem: str,
    detector: Any,
    preprocess: Mapping[str, Any],
    settings: Mapping[str, Any],
    out_dir: Path,
    device: Any,
) -> FileResult:
    """Predict one slice end to end: read, detect, HU baseline, overlay and JSON.

    Args:
        file: The DICOM file.
        stem: Output name; writes ``<out_dir>/<stem>.png`` and ``<out_dir>/<stem>.json``.
        detector: Model from `load_detector`.
        preprocess: The checkpoint's ``preprocess``.
        settings: From `inference_settings` (``threshold``, ``hu_thresholds``).
        out_dir: Output folder.
        device: torch device of the detector.

    Returns:
        The file's result; any failure becomes status ``error`` with a one-line reason
        (a bad file must not stop the batch), and nothing is written for it.

    """
    from dsnet.report import render_overlay

    tick = time.perf_counter()
    try:
        ct = read_slice(file)
        image, placement = model_input(ct, preprocess)
        detections = detect(detector, image, placement, device)
        record = slice_record(ct, detections, settings["hu_thresholds"], settings["threshold"])
        render_overlay(ct, record, preprocess["windows"][0], out_dir / f"{stem}.png")
        record["runtime_s"] = round(time.perf_counter() - tick, 4)
        atomic_write_json(out_dir / f"{stem}.json", record)
        return FileResult(str(file), "ok", record["runtime_s"], stem, None, record)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        reason = exc.reason if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        elapsed = round(time.perf_counter() - tick, 4)
        return FileResult(str(file), "error", elapsed, None, " ".join(reason.split()))


def predict(
    paths: Sequence[str | PathLike[str]],
    model: str | PathLike[str],
    out_dir: str | PathLike[str],
    params: Mapping[str, Any] | None = None,
) -> PredictSummary:
    """Detect and grade the vertebral bodies on every CT slice in `paths`.

    Args:
        paths: DICOM files and/or folders (searched recursively).
        model: Checkpoint path or MLflow model URI (``models:/dsnet@champion``).
        out_dir: Output folder (created); existing unrelated files are left alone.
        params: Parameters; ``evaluate.decision_threshold``, ``evaluate.hu_thresholds``
            and ``evaluate.device`` are used (defaults 0.5, (160, 110), auto).

    Returns:
        The summary; ``summary.failed`` lists files that could not be processed (their
        reasons are also in ``summary.json``). Other files are processed regardless.

    Raises:
        InputError: The model cannot be found or loaded, or `paths` is empty.

    """
    from dsnet.report import write_report
    from dsnet.training.device import select_device

    if not paths:
        raise InputError("PATH", "no input files or folders given")
    settings = inference_settings(params)
    out_dir = Path(out_dir)
    device = select_device(settings["device"])
    detector, ckpt = load_detector(resolve_model(model), device, settings["threshold"])
    files = collect_inputs(paths, exclude=out_dir)
    if not files:
        raise InputError(", ".join(str(p) for p in paths), "no files found")
    started = time.perf_counter()
    results = [
        process_file(file, stem, detector, ckpt["preprocess"], settings, out_dir, device)
        for file, stem in zip(files, output_stems(files), strict=True)
    ]
    summary = PredictSummary(out_dir, results, patient_summaries(results), str(model))
    atomic_write_json(out_dir / "summary.json", summary_json(summary, settings, started))
    write_report(summary, out_dir / "report.md")
    return summary


def summary_json(
    summary: PredictSummary, settings: Mapping[str, Any], started: float
) -> dict[str, Any]:
    """Build the machine-readable run summary written to ``summary.json``."""
    return {
        "model": summary.model,
        "score_threshold": settings["threshold"],
        "hu_thresholds": list(settings["hu_thresholds"]),
        "n_files": len(summary.files),
        "n_ok": len(summary.files) - len(summary.failed),
        "n_failed": len(summary.failed),
        "runtime_s": round(time.perf_counter() - started, 3),
        "files": [
            {
                "file": f.file,
                "status": f.status,
                "runtime_s": f.runtime_s,
                **(
                    {
                        "output": f.stem,
                        "json": f"{f.stem}.json",
                        "png": f"{f.stem}.png",
                        "patient_id": f.record["patient_id"],
                        "grade": f.record["grade"],
                    }
                    if f.status == "ok"
                    else {"reason": f.reason}
                ),
            }
            for f in summary.files
        ],
        "patients": summary.patients,
    }
