"""The trabecular-HU baseline: grade a vertebra from the mean HU of its cancellous bone.

This is what opportunistic screening does without a model (Pickhardt et al. 2013): an oval
region of interest in the anterior trabecular bone of the vertebral body, away from the
cortex and the basivertebral vein, and two HU thresholds. Evaluation reports it next to
the detector (params ``evaluate.hu_thresholds``).

Boxes are ``(x1, y1, x2, y2)`` in pixel-edge coordinates of the image (pixel ``(r, c)``
covers ``[c, c + 1) x [r, r + 1)``), as in COCO ``[x, y, w, h]`` -> ``[x, y, x + w, y + h]``.
Row 0 is anterior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dsnet.data.classes import NORMAL, OSTEOPENIA, OSTEOPOROSIS

ROI_HALF_WIDTH = 0.30  # ROI semi-axes as fractions of the box width / height
ROI_HALF_HEIGHT = 0.25
ROI_ANTERIOR_SHIFT = 0.06  # ROI centre moved anteriorly by this fraction of the box height
HU_THRESHOLDS = (160.0, 110.0)  # (normal above, osteoporosis at or below), params default


def trabecular_roi(hu: np.ndarray, box_xyxy: Sequence[float]) -> np.ndarray:
    """The trabecular region of interest of a vertebral body.

    An ellipse centred in the box, moved slightly anterior, with semi-axes 30 % of the box
    width and 25 % of its height: well inside the cortical shell, in front of the
    basivertebral vein.

    Args:
        hu: [H, W] image (only its shape is used).
        box_xyxy: Vertebral-body box (x1, y1, x2, y2), pixel-edge coordinates.

    Returns:
        bool [H, W] mask; never empty for a box inside the image (it holds at least the
        pixel under the ROI centre).

    Raises:
        ValueError: If the box is not inside the image or has no area.
    """
    height, width = hu.shape[:2]
    x1, y1, x2, y2 = (float(c) for c in box_xyxy)
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ValueError(f"box {list(box_xyxy)} is empty or outside the {width}x{height} image")
    box_w, box_h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 - ROI_ANTERIOR_SHIFT * box_h
    ax, ay = max(ROI_HALF_WIDTH * box_w, 0.5), max(ROI_HALF_HEIGHT * box_h, 0.5)
    r0, r1 = int(np.floor(y1)), int(np.ceil(y2))
    c0, c1 = int(np.floor(x1)), int(np.ceil(x2))
    rows = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5
    cols = np.arange(c0, c1, dtype=np.float64)[None, :] + 0.5
    inside = ((cols - cx) / ax) ** 2 + ((rows - cy) / ay) ** 2 <= 1.0
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = inside
    mask[min(int(cy), height - 1), min(int(cx), width - 1)] = True
    return mask


def trabecular_mean_hu(hu: np.ndarray, box_xyxy: Sequence[float]) -> float:
    """Mean HU inside `trabecular_roi` of the box.

    Args:
        hu: float [H, W] Hounsfield units.
        box_xyxy: Vertebral-body box (x1, y1, x2, y2), pixel-edge coordinates.

    Returns:
        The mean HU of the region of interest.
    """
    return float(np.mean(hu[trabecular_roi(hu, box_xyxy)], dtype=np.float64))


def box_roi(hu: np.ndarray, box_xyxy: Sequence[float]) -> np.ndarray:
    """`trabecular_roi` of a predicted box, or an empty mask for a box without area.

    A detector box may be degenerate or outside the image; its ROI is then undefined.

    Args:
        hu: [H, W] image (only its shape is used).
        box_xyxy: (x1, y1, x2, y2) in pixel-edge coordinates of `hu`.

    Returns:
        bool [H, W] mask, all False for such a box.

    """
    try:
        return trabecular_roi(hu, box_xyxy)
    except ValueError:
        return np.zeros(hu.shape[:2], dtype=bool)


def box_mean_hu(hu: np.ndarray, box_xyxy: Sequence[float]) -> float:
    """Trabecular mean HU of a predicted box (`box_roi`), ``nan`` when its ROI is empty.

    Args:
        hu: float [H, W] Hounsfield units.
        box_xyxy: (x1, y1, x2, y2) in pixel-edge coordinates of `hu`.

    Returns:
        The mean HU of the ROI, or ``nan`` for a box with no area inside the image.

    """
    roi = box_roi(hu, box_xyxy)
    return float(np.mean(hu[roi], dtype=np.float64)) if roi.any() else math.nan


def classify_hu(mean_hu: float, thresholds: Sequence[float] = HU_THRESHOLDS) -> int | None:
    """WHO-style class from the trabecular mean HU.

    Args:
        mean_hu: Trabecular mean HU.
        thresholds: (normal_above, osteoporosis_at_or_below): ``> high`` normal,
            ``(low, high]`` osteopenia, ``<= low`` osteoporosis.

    Returns:
        1 normal, 2 osteopenia or 3 osteoporosis; ``None`` when `mean_hu` is not a finite
        number (no ROI: `box_mean_hu` gave ``nan``).

    Raises:
        ValueError: If the thresholds are not two numbers with high > low.
    """
    if len(thresholds) != 2:
        raise ValueError(f"expected two HU thresholds (high, low), got {list(thresholds)}")
    high, low = (float(t) for t in thresholds)
    if not high > low:
        raise ValueError(f"HU thresholds must be (high, low) with high > low, got {[high, low]}")
    if mean_hu is None or not math.isfinite(mean_hu):
        return None
    if mean_hu > high:
        return NORMAL
    if mean_hu <= low:
        return OSTEOPOROSIS
    return OSTEOPENIA
