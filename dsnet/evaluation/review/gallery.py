"""Error gallery: every missed or misgraded hold-out slice as truth-vs-answer overlay.

A slice is an error when the answer for one of its ground-truth boxes (the most confident
detection overlapping it, docs/metrics.md) is missing or of another class. Errors are
ordered worst first: missed bodies, then wrong grades by the confidence of the wrong answer,
and the first ``review.gallery_max`` are drawn. Each overlay is a PNG (bone window, the
ground-truth box in white, the answer's box in the colour of its grade, the trabecular ROI
of the ground-truth box in cyan); the numbers go into the report's caption.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dsnet.evaluation.detection import answers
from dsnet.evaluation.scoring import SliceResult
from dsnet.inference.overlays import GRADE_COLOURS, OTHER_COLOUR, ROI_COLOUR
from dsnet.io import read_slice, window
from dsnet.models.hu_baseline import box_roi

SIDE_PX = 256  # width of each panel of a gallery overlay (whole slice | zoom)
TRUTH_COLOUR = (255, 255, 255)


def slice_errors(
    result: SliceResult,
    names: Mapping[int, str],
    decision_threshold: float,
    iou_threshold: float,
) -> list[dict[str, Any]]:
    """The missed or misgraded ground-truth boxes of one slice.

    Returns:
        One dict per wrong box: ``image_id``, ``patient_id``, ``vertebra``, ``box_index``,
        ``truth``, ``answer`` (class name or ``missed``), ``score`` (of the answer, ``None``
        when missed), ``answer_box`` (xyxy or ``None``), ``truth_box``, ``gt_hu`` and
        ``answer_hu`` (trabecular mean HU in the two boxes, ``None`` where not measured).

    """
    d = result.detections
    labels, indices = answers(d, decision_threshold, iou_threshold)
    errors = []
    for g, (truth, answer, index) in enumerate(zip(d.gt_labels, labels, indices, strict=True)):
        if int(truth) == int(answer):
            continue
        errors.append(
            {
                "image_id": int(result.image["id"]),
                "patient_id": str(result.image["patient_id"]),
                "vertebra": str(result.image.get("vertebra", "")),
                "file": str(result.image.get("file_name", "")),
                "box_index": g,
                "truth": names[int(truth)],
                "answer": "missed" if index < 0 else names.get(int(answer), str(answer)),
                "score": None if index < 0 else float(d.scores[index]),
                "truth_box": [float(v) for v in d.gt_boxes[g]],
                "answer_box": None if index < 0 else [float(v) for v in d.boxes[index]],
                "gt_hu": _number(result.gt_mean_hu[g]),
                "answer_hu": _number(result.pred_mean_hu[g]),
            }
        )
    return errors


def worst_errors(
    results: Sequence[SliceResult],
    names: Mapping[int, str],
    decision_threshold: float,
    iou_threshold: float,
) -> list[dict[str, Any]]:
    """Every error of the hold-out (:func:`slice_errors`), worst first.

    Missed bodies come first, then wrong grades by decreasing score of the wrong answer;
    ties keep the evaluation order.
    """
    found = [
        error
        for result in results
        for error in slice_errors(result, names, decision_threshold, iou_threshold)
    ]
    return sorted(found, key=lambda e: (e["score"] is not None, -(e["score"] or 0.0)))


def overlay_png(hu: np.ndarray, error: Mapping[str, Any], bone_window: Sequence[float]) -> bytes:
    """Draw one error: the whole slice and a zoomed view of the body, truth vs answer.

    Both panels show the slice in the bone window with the ground-truth box (white), the
    answer's box (colour of its grade) and the trabecular ROI of the ground-truth box
    (cyan); the right panel zooms on the ground-truth and answer boxes.

    Args:
        hu: float32[H, W] the slice in HU.
        error: A :func:`slice_errors` entry.
        bone_window: (low, high) HU of the displayed window.

    Returns:
        PNG bytes, ``2 * SIDE_PX`` wide.

    """
    grey = (window(hu, float(bone_window[0]), float(bone_window[1])) * 255).astype(np.uint8)
    height, width = grey.shape
    roi = box_roi(hu, error["truth_box"]).astype(np.uint8) * 255
    boxes = [error["truth_box"]] + ([error["answer_box"]] if error["answer_box"] else [])
    x1 = min(b[0] for b in boxes)
    y1 = min(b[1] for b in boxes)
    x2 = max(b[2] for b in boxes)
    y2 = max(b[3] for b in boxes)
    half = max(x2 - x1, y2 - y1, 16.0) * 0.75
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    whole = _panel(grey, roi, error, (0.0, 0.0, float(width), float(height)), SIDE_PX)
    zoom = _panel(grey, roi, error, (cx - half, cy - half, cx + half, cy + half), SIDE_PX)
    canvas = Image.new("RGB", (2 * SIDE_PX + 4, max(whole.height, zoom.height)), (255, 255, 255))
    canvas.paste(whole, (0, 0))
    canvas.paste(zoom, (SIDE_PX + 4, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _panel(
    grey: np.ndarray,
    roi: np.ndarray,
    error: Mapping[str, Any],
    extent: tuple[float, float, float, float],
    side: int,
):
    """Render the `extent` (x1, y1, x2, y2 in slice pixels) of the slice `side` px wide."""
    left, top, right, bottom = extent
    size = (side, max(1, round(side * (bottom - top) / (right - left))))
    scale = side / (right - left)
    picture = (
        Image.fromarray(grey)
        .convert("RGB")
        .transform(size, Image.Transform.EXTENT, extent, Image.Resampling.BILINEAR)
    )
    mask = Image.fromarray(roi).transform(
        size, Image.Transform.EXTENT, extent, Image.Resampling.NEAREST
    )
    picture.paste(ROI_COLOUR, mask=mask.filter(ImageFilter.FIND_EDGES))
    draw = ImageDraw.Draw(picture)

    def mapped(box: Sequence[float]) -> list[float]:
        return [(box[0] - left) * scale, (box[1] - top) * scale,
                (box[2] - left) * scale, (box[3] - top) * scale]  # fmt: skip

    draw.rectangle(mapped(error["truth_box"]), outline=TRUTH_COLOUR, width=2)
    if error["answer_box"] is not None:
        colour = GRADE_COLOURS.get(error["answer"], OTHER_COLOUR)
        draw.rectangle(mapped(error["answer_box"]), outline=colour, width=2)
    return picture


def gallery(
    results: Sequence[SliceResult],
    data: Any,
    names: Mapping[int, str],
    cfg: Mapping[str, Any],
    bone_window: Sequence[float],
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """Draw the worst `limit` errors of the hold-out.

    Args:
        results: The evaluated slices.
        data: The `DataDir` (to read the error slices again; only those are read).
        names: Class id -> name.
        cfg: The ``evaluate`` parameters (``decision_threshold``, ``iou_threshold``).
        bone_window: The displayed HU window (the checkpoint's first window).
        limit: ``review.gallery_max``.

    Returns:
        ``(entries, total)``: the drawn errors, each with ``png`` (base64 PNG), and the
        number of errors on the whole hold-out.

    """
    by_id = {int(r.image["id"]): r for r in results}
    errors = worst_errors(
        results,
        names,
        float(cfg.get("decision_threshold", 0.5)),
        float(cfg.get("iou_threshold", 0.5)),
    )
    drawn = []
    for error in errors[: max(0, int(limit))]:
        ct = read_slice(data.image_path(by_id[error["image_id"]].image))
        png = overlay_png(ct.hu, error, bone_window)
        drawn.append({**error, "png": base64.b64encode(png).decode("ascii")})
    return drawn, len(errors)


def _number(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
