"""Per-patient table of the hold-out: DXA diagnosis, model grade and HU-baseline grade.

The grades follow docs/metrics.md: the model grades a vertebra by its most confident slice
and a patient by the lowest grade over their vertebrae; the HU baseline classifies the mean
trabecular HU of a vertebra's slices in the ground-truth box the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dsnet.evaluation.detection import (
    patient_grades,
    top_detection,
    vertebra_labels_by_confidence,
    vertebra_mean_hu,
)
from dsnet.evaluation.scoring import SliceResult
from dsnet.models.hu_baseline import classify_hu

COLUMNS = ("patient", "slices", "dxa_class", "predicted", "correct", "hu_baseline",
           "lowest_vertebra_hu")  # fmt: skip


def patient_table(
    results: Sequence[SliceResult],
    truth: Mapping[str, int],
    names: Mapping[int, str],
    decision_threshold: float,
    hu_thresholds: Sequence[float],
) -> list[dict[str, Any]]:
    """One row per hold-out patient, in patient-id order.

    Args:
        results: The evaluated slices.
        truth: Patient id -> DXA diagnosis (class id).
        names: Class id -> name.
        decision_threshold: ``evaluate.decision_threshold``.
        hu_thresholds: ``evaluate.hu_thresholds``.

    Returns:
        Rows with the keys of `COLUMNS`: ``predicted`` / ``hu_baseline`` are class names
        or ``none`` (no answer / no reading); ``lowest_vertebra_hu`` the lowest
        per-vertebra mean HU in the ground-truth box (``None`` without a reading).

    """
    answers_by_slice, readings, count = [], [], {}
    for r in results:
        label, score, _ = top_detection(r.detections, decision_threshold)
        patient, vertebra = r.image["patient_id"], r.image["vertebra"]
        answers_by_slice.append((patient, vertebra, label, score))
        readings += [(patient, vertebra, value) for value in r.gt_mean_hu]
        count[patient] = count.get(patient, 0) + 1
    model = patient_grades(vertebra_labels_by_confidence(answers_by_slice))
    vertebra_hu = vertebra_mean_hu(readings)
    baseline = patient_grades(
        {key: classify_hu(value, tuple(hu_thresholds)) for key, value in vertebra_hu.items()}
    )
    rows = []
    for patient in sorted(truth):
        values = [v for (p, _), v in vertebra_hu.items() if p == patient and v == v]
        rows.append(
            {
                "patient": patient,
                "slices": count.get(patient, 0),
                "dxa_class": names[truth[patient]],
                "predicted": names.get(model.get(patient) or 0, "none"),
                "correct": model.get(patient) == truth[patient],
                "hu_baseline": names.get(baseline.get(patient) or 0, "none"),
                "lowest_vertebra_hu": round(min(values), 1) if values else None,
            }
        )
    return rows
