"""Bone-status classes from DXA T-scores (WHO definition) and the COCO categories.

The detector has three foreground classes (COCO category ids; 0 is background):
1 normal (T >= -1.0), 2 osteopenia (-2.5 < T < -1.0), 3 osteoporosis (T <= -2.5).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

NORMAL, OSTEOPENIA, OSTEOPOROSIS = 1, 2, 3

CLASS_NAMES: dict[int, str] = {
    NORMAL: "normal",
    OSTEOPENIA: "osteopenia",
    OSTEOPOROSIS: "osteoporosis",
}

CATEGORIES: list[dict[str, int | str]] = [
    {"id": class_id, "name": name} for class_id, name in CLASS_NAMES.items()
]

NORMAL_MIN_T = -1.0
OSTEOPOROSIS_MAX_T = -2.5


def who_class(t_score: float) -> int:
    """Map a DXA T-score to its WHO class id.

    Args:
        t_score: T-score in standard deviations from the young-adult mean.

    Returns:
        1 normal (T >= -1.0), 2 osteopenia (-2.5 < T < -1.0) or 3 osteoporosis (T <= -2.5).

    Raises:
        ValueError: If `t_score` is not a finite number.

    """
    t = float(t_score)
    if not math.isfinite(t):
        raise ValueError(f"T-score must be a finite number, got {t_score!r}")
    if t >= NORMAL_MIN_T:
        return NORMAL
    if t <= OSTEOPOROSIS_MAX_T:
        return OSTEOPOROSIS
    return OSTEOPENIA


def patient_diagnosis(t_scores: Iterable[float]) -> int:
    """A patient's diagnosis: the WHO class of their lowest T-score (over L1-L4).

    Args:
        t_scores: The patient's T-scores, one per measured vertebra.

    Returns:
        The class id (1, 2 or 3) of the lowest T-score.

    Raises:
        ValueError: If `t_scores` is empty or holds a non-finite value.

    """
    classes = [who_class(t) for t in t_scores]
    if not classes:
        raise ValueError("a diagnosis needs at least one T-score")
    return max(classes)  # class ids grow as T falls, so the worst class is the lowest T's
