"""Challenger vs champion on the same hold-out slices: where their answers differ."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dsnet.evaluation.detection import answers
from dsnet.evaluation.scoring import SliceResult


def disagreements(
    challenger: Sequence[SliceResult],
    champion: Sequence[SliceResult],
    names: Mapping[int, str],
    decision_threshold: float,
    iou_threshold: float,
) -> list[dict[str, Any]]:
    """The ground-truth boxes whose answer differs between the two models.

    Args:
        challenger: The model under review, per slice.
        champion: The champion on the same slices, in the same order.
        names: Class id -> name (``missed`` for no answer).
        decision_threshold: ``evaluate.decision_threshold``.
        iou_threshold: ``evaluate.iou_threshold``.

    Returns:
        One row per differing box: ``image_id``, ``patient_id``, ``vertebra``, ``truth``,
        ``challenger`` / ``champion`` (answer class or ``missed``), their scores, and
        ``right`` (``challenger``, ``champion`` or ``neither``).

    """
    rows = []
    for mine, theirs in zip(challenger, champion, strict=True):
        if mine.image["id"] != theirs.image["id"]:
            raise ValueError("challenger and champion results are not on the same slices")
        ours, our_index = answers(mine.detections, decision_threshold, iou_threshold)
        other, other_index = answers(theirs.detections, decision_threshold, iou_threshold)
        for g, truth in enumerate(mine.detections.gt_labels):
            if ours[g] == other[g]:
                continue
            right = (
                "challenger" if ours[g] == truth else "champion" if other[g] == truth else "neither"
            )
            rows.append(
                {
                    "image_id": int(mine.image["id"]),
                    "patient_id": str(mine.image["patient_id"]),
                    "vertebra": str(mine.image.get("vertebra", "")),
                    "truth": names[int(truth)],
                    "challenger": names.get(int(ours[g]), "missed"),
                    "challenger_score": _score(mine, our_index[g]),
                    "champion": names.get(int(other[g]), "missed"),
                    "champion_score": _score(theirs, other_index[g]),
                    "right": right,
                }
            )
    return rows


def _score(result: SliceResult, index: int) -> float | None:
    return None if index < 0 else float(result.detections.scores[index])
