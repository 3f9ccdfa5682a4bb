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
`dsnet.evaluation.evaluate` and `dsnet.bench.predict` so that all three run the same pipeline.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from dsnet.core.device import configure_backends, select_device
from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_json
from dsnet.data.classes import CLASS_NAMES
from dsnet.inference.detect import detect, inference_settings, model_input, slice_box_mean_hu
from dsnet.inference.load import load_detector, resolve_model
from dsnet.inference.overlays import render_overlay, write_report
from dsnet.inference.results import FileResult, PredictSummary, SliceDetections
from dsnet.io import CTSlice, read_slice
from dsnet.models.hu_baseline import classify_hu

SKIPPED_NAMES = frozenset({"DICOMDIR"})


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


RUN_OUTPUT_STEMS = frozenset({"summary", "report"})
"""Stems of the run's own outputs (``summary.json``, ``report.md``), never a slice's."""


def output_stems(files: Sequence[Path]) -> list[str]:
    """One distinct output name per input file.

    A file's stem is used as is when no other input shares it (ignoring case, for
    case-insensitive file systems) and it is not the name of a run output
    (`RUN_OUTPUT_STEMS`: ``summary.json``, ``report.md``); otherwise it gets
    ``<stem>-<8 hex digits of its path's hash>``, so no output overwrites another and the
    name is stable across runs.
    """
    counts: dict[str, int] = {}
    for file in files:
        counts[file.stem.casefold()] = counts.get(file.stem.casefold(), 0) + 1
    stems = []
    for file in files:
        stem = file.stem or file.name or "slice"
        if counts[file.stem.casefold()] > 1 or stem.casefold() in RUN_OUTPUT_STEMS:
            digest = hashlib.sha1(str(file.resolve()).encode("utf-8")).hexdigest()[:8]
            stem = f"{stem}-{digest}"
        stems.append(stem)
    return stems


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
    dets, hus = [], []
    for box, label, score in zip(
        detections.boxes, detections.labels, detections.scores, strict=True
    ):
        mean_hu = slice_box_mean_hu(ct, box)
        hu_class = classify_hu(mean_hu, tuple(hu_thresholds))
        hu_label = CLASS_NAMES[hu_class] if hu_class is not None else None
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
            "roi": "trabecular core of each detected box (dsnet.models.hu_baseline)",
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
    if not paths:
        raise InputError("PATH", "no input files or folders given")
    settings = inference_settings(params)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "is a file; --out is the output folder")
    device = select_device(settings["device"], setting="evaluate.device")
    configure_backends(settings["cudnn_benchmark"])
    detector, ckpt = load_detector(
        resolve_model(model), device, settings["threshold"], settings["channels_last"]
    )
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
