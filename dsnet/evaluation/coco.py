"""COCO-style average precision at one IoU threshold, computed with pycocotools.

Ground truth and detections are COCO dicts in the same pixel grid (``bbox`` =
``[x, y, w, h]``). COCOeval runs with its IoU thresholds restricted to the one asked
for (default 0.5), a single "all" area range and at most ``max_dets`` detections per
image, so ``precision[0, :, k, 0, -1]`` is the 101-point interpolated precision-recall
curve of class ``k`` and its mean is the class's AP50, exactly as COCO defines it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ALL_AREAS = [0.0, 1e12]


@dataclass(frozen=True)
class CocoAP:
    """Average precision at one IoU threshold.

    Attributes:
        mean_ap: Mean of the per-class APs over the classes that have ground truth
            (COCO convention); ``nan`` when no class has ground truth.
        ap_per_class: Category id -> AP, or ``None`` for a class without ground truth.
        recall_thresholds: The 101 recall points ``0, 0.01, ..., 1`` (float64[101]).
        precision: Category id -> interpolated precision at each recall point
            (float64[101]); absent for classes without ground truth.
        max_recall: Category id -> the highest recall any score threshold reaches.

    """

    mean_ap: float
    ap_per_class: dict[int, float | None]
    recall_thresholds: np.ndarray
    precision: dict[int, np.ndarray]
    max_recall: dict[int, float]


def _coco(images: Sequence[Mapping[str, Any]], categories, annotations) -> Any:

    coco = COCO()
    coco.dataset = {
        "images": [{"id": int(img["id"])} for img in images],
        "categories": [dict(c) for c in categories],
        "annotations": list(annotations),
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _box_row(n: int, item: Mapping[str, Any], agnostic: bool) -> dict:
    """The COCO annotation fields a ground-truth box and a detection share (id `n`)."""
    x, y, w, h = (float(v) for v in item["bbox"])
    return {
        "id": n,
        "image_id": int(item["image_id"]),
        "category_id": 1 if agnostic else int(item["category_id"]),
        "bbox": [x, y, w, h],
        "area": w * h,
    }


def _gt_annotations(annotations: Sequence[Mapping[str, Any]], agnostic: bool) -> list[dict]:
    return [
        {**_box_row(n, ann, agnostic), "iscrowd": int(ann.get("iscrowd", 0))}
        for n, ann in enumerate(annotations, start=1)
    ]


def _dt_annotations(detections: Sequence[Mapping[str, Any]], agnostic: bool) -> list[dict]:
    return [
        {**_box_row(n, det, agnostic), "score": float(det["score"]), "iscrowd": 0}
        for n, det in enumerate(detections, start=1)
    ]


def average_precision(
    images: Sequence[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
    gt_annotations: Sequence[Mapping[str, Any]],
    detections: Sequence[Mapping[str, Any]],
    iou_threshold: float = 0.5,
    max_dets: int = 100,
    class_agnostic: bool = False,
) -> CocoAP:
    """COCO AP at one IoU threshold, per class and averaged, via pycocotools' COCOeval.

    A detection matches a ground-truth box of its own class when IoU >= `iou_threshold`
    (greedy by descending score, each ground truth matched at most once); unmatched
    detections are false positives.

    Args:
        images: COCO images; only ``id`` is used. Images without boxes count (their
            detections are false positives).
        categories: COCO categories ``[{"id", "name"}]``.
        gt_annotations: Ground truth, ``{"image_id", "category_id", "bbox": [x, y, w, h]}``
            (``iscrowd`` honoured when present).
        detections: COCO results, ``{"image_id", "category_id", "bbox", "score"}``, in the
            same pixel grid as the ground truth.
        iou_threshold: The single IoU threshold (0.5 for AP50).
        max_dets: At most this many detections per image and class are scored.
        class_agnostic: Ignore classes (one "object" category): AP of box finding alone.

    Returns:
        The per-class APs, their mean and the precision-recall curves.

    """
    cats = [{"id": 1, "name": "object"}] if class_agnostic else list(categories)
    gt = _coco(images, cats, _gt_annotations(gt_annotations, class_agnostic))
    dt = _coco(images, cats, _dt_annotations(detections, class_agnostic))
    evaluator = COCOeval(gt, dt, iouType="bbox")
    evaluator.params.imgIds = sorted(int(img["id"]) for img in images)
    evaluator.params.catIds = sorted(int(c["id"]) for c in cats)
    evaluator.params.iouThrs = np.array([float(iou_threshold)])
    evaluator.params.areaRng = [ALL_AREAS]
    evaluator.params.areaRngLbl = ["all"]
    evaluator.params.maxDets = [int(max_dets)]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # [T=1, R=101, K, A=1, M=1]
    recall = evaluator.eval["recall"]  # [T=1, K, A=1, M=1]
    ap_per_class: dict[int, float | None] = {}
    curves: dict[int, np.ndarray] = {}
    max_recall: dict[int, float] = {}
    for k, cat_id in enumerate(int(c) for c in evaluator.params.catIds):
        curve = precision[0, :, k, 0, 0]
        if np.all(curve < 0):  # -1: no ground truth of this class
            ap_per_class[cat_id] = None
            continue
        curves[cat_id] = curve.copy()
        ap_per_class[cat_id] = float(np.mean(curve))
        max_recall[cat_id] = float(recall[0, k, 0, 0])
    present = [ap for ap in ap_per_class.values() if ap is not None]
    return CocoAP(
        mean_ap=float(np.mean(present)) if present else float("nan"),
        ap_per_class=ap_per_class,
        recall_thresholds=np.asarray(evaluator.params.recThrs, dtype=np.float64),
        precision=curves,
        max_recall=max_recall,
    )
