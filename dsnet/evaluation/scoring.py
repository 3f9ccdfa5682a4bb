"""Scoring a detector on the hold-out slices: run it, match answers, compute the metrics.

`evaluate_detector` runs any torchvision-style detector over the test patients' slices
(`run_test_set`), and `compute_metrics` turns the per-slice results into the metrics of
docs/metrics.md (COCO AP, recall, accuracy, confusion, patient accuracy, the HU baseline).
`dsnet.evaluation.evaluate` loads the checkpoint, calls these and writes the files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert

from dsnet.core.device import device_description, synchronize
from dsnet.evaluation.coco import CocoAP, average_precision
from dsnet.evaluation.detection import (
    ImageDetections,
    MatchCounts,
    answers,
    match_counts,
    patient_accuracy,
    patient_grades,
    top_detection,
    vertebra_labels_by_confidence,
    vertebra_mean_hu,
)
from dsnet.inference.detect import (
    DEFAULT_DECISION_THRESHOLD,
    detect,
    model_input,
    slice_box_mean_hu,
)
from dsnet.inference.results import SliceDetections
from dsnet.io import read_slice
from dsnet.models.hu_baseline import HU_THRESHOLDS, classify_hu


@dataclass(frozen=True)
class SliceResult:
    """One evaluated slice: its ground truth, detections and HU-baseline readings.

    Attributes:
        image: The COCO image record (``id``, ``patient_id``, ``vertebra``, ...).
        detections: ImageDetections in original pixels.
        gt_mean_hu: float[G] trabecular mean HU inside each ground-truth box.
        pred_mean_hu: float[G] trabecular mean HU inside the detector's answer for each
            ground-truth box (``nan`` where the box was missed).
        seconds: Inference time of the slice (model input -> boxes in original pixels).

    """

    image: dict[str, Any]
    detections: ImageDetections
    gt_mean_hu: np.ndarray
    pred_mean_hu: np.ndarray
    seconds: float


def run_test_set(
    model: Any,
    data: Any,
    images: Sequence[dict[str, Any]],
    preprocess: Mapping[str, Any],
    device: Any,
    warmup: int,
    decision_threshold: float,
    iou_threshold: float,
) -> list[SliceResult]:
    """Run the detector on each test slice, timing it after `warmup` untimed passes.

    Args:
        model: Detector in eval mode on `device`.
        data: The `DataDir` (image paths and annotations).
        images: The test images' COCO records.
        preprocess: The checkpoint's ``preprocess`` (spacing_mm, canvas_px, windows).
        device: torch device.
        warmup: Untimed forward passes on the first slice before timing starts.
        decision_threshold: Minimum score of an answer (for the HU in the answer's box).
        iou_threshold: Minimum IoU of an answer to its ground-truth box.

    Returns:
        One `SliceResult` per image, in `images` order.

    """
    results = []
    for index, image in enumerate(images):
        ct = read_slice(data.image_path(image))
        tensor, placement = model_input(ct, preprocess)
        if index == 0:
            for _ in range(max(0, int(warmup))):
                detect(model, tensor, placement, device)
        synchronize(device)
        tick = time.perf_counter()
        found: SliceDetections = detect(model, tensor, placement, device)
        synchronize(device)
        seconds = time.perf_counter() - tick
        anns = data.annotations[image["id"]]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        gt_boxes = box_convert(xywh, "xywh", "xyxy").numpy()
        detections = ImageDetections(
            image_id=int(image["id"]),
            gt_boxes=gt_boxes.reshape(-1, 4),
            gt_labels=np.array([a["category_id"] for a in anns], dtype=np.int64),
            boxes=found.boxes,
            labels=found.labels,
            scores=found.scores,
        )
        _, answer = answers(detections, decision_threshold, iou_threshold)
        results.append(
            SliceResult(
                image=image,
                detections=detections,
                gt_mean_hu=np.array([slice_box_mean_hu(ct, b) for b in gt_boxes]),
                pred_mean_hu=np.array(
                    [slice_box_mean_hu(ct, found.boxes[i]) if i >= 0 else math.nan for i in answer]
                ),
                seconds=seconds,
            )
        )
    return results


def hu_baseline_metrics(
    results: Sequence[SliceResult],
    truth: Mapping[str, int],
    thresholds: Sequence[float],
) -> dict[str, float]:
    """Accuracy of the HU-threshold baseline on the evaluated slices and patients.

    Args:
        results: Evaluated slices.
        truth: Patient id -> DXA diagnosis.
        thresholds: ``evaluate.hu_thresholds`` (normal above the first, osteoporosis at
            or below the second).

    Returns:
        ``hu_baseline_acc`` / ``hu_baseline_patient_acc`` (ROI in the ground-truth box)
        and ``hu_baseline_pred_box_acc`` / ``hu_baseline_pred_box_patient_acc`` (ROI in
        the detector's box; a missed body counts as wrong).

    """
    out: dict[str, float] = {}
    for name, readings in (
        ("hu_baseline", [r.gt_mean_hu for r in results]),
        ("hu_baseline_pred_box", [r.pred_mean_hu for r in results]),
    ):
        right = total = 0
        per_slice = []
        for result, values in zip(results, readings, strict=True):
            for label, value in zip(result.detections.gt_labels, values, strict=True):
                right += int(classify_hu(value, tuple(thresholds)) == int(label))
                total += 1
                per_slice.append((result.image["patient_id"], result.image["vertebra"], value))
        vertebrae = {
            key: classify_hu(value, tuple(thresholds))
            for key, value in vertebra_mean_hu(per_slice).items()
        }
        out[f"{name}_acc"] = right / total if total else math.nan
        out[f"{name}_patient_acc"] = patient_accuracy(patient_grades(vertebrae), truth)
    return out


def compute_metrics(
    results: Sequence[SliceResult],
    categories: Sequence[Mapping[str, Any]],
    truth: Mapping[str, int],
    cfg: Mapping[str, Any],
) -> tuple[dict[str, Any], CocoAP, MatchCounts]:
    """All metrics of the evaluation from the evaluated slices (see the module docstring).

    Args:
        results: Evaluated slices.
        categories: COCO categories.
        truth: Patient id -> DXA diagnosis of the test patients.
        cfg: The ``evaluate`` parameters.

    Returns:
        ``(metrics, class-aware AP, match counts)``; the metrics dict lacks the speed and
        device entries, the other two feed the plots.

    """
    iou = float(cfg.get("iou_threshold", 0.5))
    threshold = float(cfg.get("decision_threshold", DEFAULT_DECISION_THRESHOLD))
    images = [{"id": int(r.image["id"])} for r in results]
    gt, dt = [], []
    for r in results:
        d = r.detections
        for box, label in zip(_xywh(d.gt_boxes), d.gt_labels, strict=True):
            gt.append({"image_id": d.image_id, "category_id": int(label), "bbox": box})
        for box, label, score in zip(_xywh(d.boxes), d.labels, d.scores, strict=True):
            dt.append(
                {
                    "image_id": d.image_id,
                    "category_id": int(label),
                    "bbox": box,
                    "score": float(score),
                }
            )
    aware = average_precision(images, categories, gt, dt, iou_threshold=iou)
    agnostic = average_precision(images, categories, gt, dt, iou_threshold=iou, class_agnostic=True)
    class_ids = [int(c["id"]) for c in categories]
    counts = match_counts([r.detections for r in results], class_ids, threshold, iou)
    slices = []
    for r in results:
        label, score, _ = top_detection(r.detections, threshold)
        slices.append((r.image["patient_id"], r.image["vertebra"], label, score))
    grades = patient_grades(vertebra_labels_by_confidence(slices))
    names = {int(c["id"]): str(c["name"]) for c in categories}
    return (
        {
            "map50": aware.mean_ap,
            "ap_per_class": {names[c]: ap for c, ap in aware.ap_per_class.items()},
            "ap50_agnostic": agnostic.mean_ap,
            "recall": counts.recall,
            "acc": counts.accuracy,
            "patient_acc": patient_accuracy(grades, truth),
            **hu_baseline_metrics(results, truth, cfg.get("hu_thresholds", HU_THRESHOLDS)),
            "confusion_matrix": {
                "rows": [names[c] for c in counts.class_ids],
                "columns": [*(names[c] for c in counts.class_ids), "missed"],
                "matrix": counts.confusion.tolist(),
            },
            "n_images": len(results),
            "n_gt_boxes": counts.n_gt,
            "n_patients": len(truth),
            "iou_threshold": iou,
            "decision_threshold": threshold,
            "score_threshold": float(cfg.get("score_threshold", 0.05)),
        },
        aware,
        counts,
    )


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (undefined metrics) by ``None`` so the JSON is valid."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _xywh(boxes_xyxy: Any) -> list[list[float]]:
    """COCO ``[x, y, w, h]`` lists of float[N, 4] xyxy boxes (`torchvision.ops.box_convert`)."""
    xyxy = torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float64)).reshape(-1, 4)
    return box_convert(xyxy, "xyxy", "xywh").tolist()


def evaluate_detector(
    model: Any,
    preprocess: Mapping[str, Any],
    data: Any,
    test_patients: Sequence[str],
    device: Any,
    cfg: Mapping[str, Any],
) -> tuple[dict[str, Any], CocoAP, MatchCounts, list[SliceResult]]:
    """Run a detector on the slices of the test patients and compute every metric.

    Args:
        model: Detector in eval mode on `device`: called with ``[FloatTensor[3, H', W']]``,
            it returns ``[{"boxes": float[N, 4] xyxy model pixels, "labels": int64[N],
            "scores": float[N]}]`` like torchvision's detectors.
        preprocess: The checkpoint's ``preprocess`` (spacing_mm, canvas_px, windows).
        data: The `DataDir` holding the test patients.
        test_patients: Patient ids to evaluate (each must have slices in `data`).
        device: torch device of `model`.
        cfg: The ``evaluate`` parameters.

    Returns:
        ``(metrics, class-aware AP, match counts, results)``: the first three as
        `compute_metrics`, the metrics with the speed and device entries added (undefined
        values still ``nan``); `results` the evaluated slices (`run_test_set`).

    """
    results = run_test_set(
        model,
        data,
        data.images_of(test_patients),
        preprocess,
        device,
        warmup=int(cfg.get("fps_warmup", 3)),
        decision_threshold=float(cfg.get("decision_threshold", DEFAULT_DECISION_THRESHOLD)),
        iou_threshold=float(cfg.get("iou_threshold", 0.5)),
    )
    truth = {p: data.diagnosis(p) for p in test_patients}
    metrics, aware, counts = compute_metrics(results, data.categories, truth, cfg)
    total = sum(r.seconds for r in results)
    metrics |= {
        "fps": len(results) / total if total > 0 else math.nan,
        "seconds_per_image": total / len(results),
        "device": device_description(device),
    }
    return metrics, aware, counts, results
