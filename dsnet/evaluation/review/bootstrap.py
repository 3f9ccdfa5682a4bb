"""Patient-level bootstrap intervals of the evaluation metrics (docs/metrics.md).

The hold-out's patients are drawn with replacement (as many as there are), every slice of a
drawn patient comes along (a patient drawn twice contributes its slices twice, under a new
patient and image id), and the metrics are recomputed with
:func:`dsnet.evaluation.scoring.compute_metrics` on the per-slice results the evaluation already has
(the model is not run again). The 2.5th and 97.5th percentiles of the `draws` values are
the 95 % interval. With a second model's results on the same slices (the champion), every
draw is shared, giving the paired difference and its interval.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dsnet.evaluation.scoring import SliceResult, compute_metrics
from dsnet.tracking.runs import numeric_metrics

# Keys of compute_metrics that are counts or settings, not measures with an uncertainty.
NOT_ESTIMATES = frozenset(
    {"n_images", "n_gt_boxes", "n_patients", "iou_threshold", "decision_threshold",
     "score_threshold"}
)  # fmt: skip
SPEED_KEYS = ("fps", "seconds_per_image")


def estimates(
    results: Sequence[SliceResult],
    categories: Sequence[Mapping[str, Any]],
    truth: Mapping[str, int],
    cfg: Mapping[str, Any],
) -> dict[str, float]:
    """The scalar metrics of one set of slices (nested keys dotted, e.g. ``ap_per_class.normal``).

    Returns:
        Metric name -> value (``nan`` where undefined, e.g. a class absent from the draw),
        including ``fps`` and ``seconds_per_image`` from the slices' timings.

    """
    metrics, _, _ = compute_metrics(results, categories, truth, cfg)
    values = {
        key: value for key, value in _flat_numbers(metrics).items() if key not in NOT_ESTIMATES
    }
    total = sum(r.seconds for r in results)
    values["fps"] = len(results) / total if total > 0 else math.nan
    values["seconds_per_image"] = total / len(results) if results else math.nan
    return values


def _flat_numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Dotted scalar metrics; ``None`` (undefined) kept as ``nan`` so every draw has every key."""
    flat = numeric_metrics(metrics)
    for key, value in metrics.get("ap_per_class", {}).items():
        flat.setdefault(f"ap_per_class.{key}", math.nan if value is None else float(value))
    return flat


def patients_of(results: Sequence[SliceResult]) -> dict[str, list[int]]:
    """Patient id -> indices of that patient's slices in `results` (first-seen order)."""
    found: dict[str, list[int]] = {}
    for index, result in enumerate(results):
        found.setdefault(str(result.image["patient_id"]), []).append(index)
    return found


def resample(
    results: Sequence[SliceResult],
    truth: Mapping[str, int],
    drawn: Sequence[str],
    slices: Mapping[str, Sequence[int]],
) -> tuple[list[SliceResult], dict[str, int]]:
    """Build the slices and patient diagnoses of one bootstrap draw.

    Args:
        results: The evaluated slices.
        truth: Patient id -> DXA diagnosis.
        drawn: The drawn patient ids (with repeats).
        slices: :func:`patients_of` of `results`.

    Returns:
        ``(slices, truth)`` of the draw; the k-th drawn patient is renamed ``<id>#k`` and
        its images get fresh ids, so repeats count as separate patients and images.

    """
    out: list[SliceResult] = []
    drawn_truth: dict[str, int] = {}
    for k, patient in enumerate(drawn):
        name = f"{patient}#{k}"
        drawn_truth[name] = truth[patient]
        for index in slices[patient]:
            result = results[index]
            image_id = len(out) + 1
            out.append(
                dataclasses.replace(
                    result,
                    image={**result.image, "id": image_id, "patient_id": name},
                    detections=dataclasses.replace(result.detections, image_id=image_id),
                )
            )
    return out, drawn_truth


def interval(values: Sequence[float]) -> tuple[float | None, float | None]:
    """The 2.5th and 97.5th percentiles of the finite `values` (``None`` if there are none)."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return None, None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def bootstrap(
    results: Sequence[SliceResult],
    categories: Sequence[Mapping[str, Any]],
    truth: Mapping[str, int],
    cfg: Mapping[str, Any],
    draws: int,
    seed: int,
    reference: Sequence[SliceResult] | None = None,
) -> dict[str, dict[str, Any]]:
    """Patient-level bootstrap 95 % intervals of every scalar metric.

    Args:
        results: The evaluated slices of the model under review.
        categories: COCO categories.
        truth: Patient id -> DXA diagnosis of the hold-out patients.
        cfg: The ``evaluate`` parameters (thresholds), as for the point estimates.
        draws: Number of bootstrap draws B (``review.bootstrap_draws``).
        seed: Seed of the draws (``review.seed``): the same seed gives the same intervals.
        reference: The same slices, in the same order, evaluated with another model (the
            champion); each draw then also yields the paired difference.

    Returns:
        Metric name -> ``{"value", "low", "high"}``; with `reference` also
        ``"reference", "reference_low", "reference_high", "diff", "diff_low",
        "diff_high"`` (diff = model - reference). Bounds are ``None`` where no draw
        defines the metric.

    """
    if reference is not None and [r.image["id"] for r in reference] != [
        r.image["id"] for r in results
    ]:
        raise ValueError("the reference results must cover the same slices in the same order")
    point = estimates(results, categories, truth, cfg)
    point_ref = estimates(reference, categories, truth, cfg) if reference is not None else {}
    slices = patients_of(results)
    patients = sorted(slices)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {key: [] for key in point}
    paired: dict[str, tuple[list[float], list[float]]] = {key: ([], []) for key in point_ref}
    for _ in range(int(draws)):
        drawn = [patients[i] for i in rng.integers(0, len(patients), size=len(patients))]
        drawn_results, drawn_truth = resample(results, truth, drawn, slices)
        mine = estimates(drawn_results, categories, drawn_truth, cfg)
        for key in samples:
            samples[key].append(mine.get(key, math.nan))
        if reference is not None:
            drawn_reference, _ = resample(reference, truth, drawn, slices)
            theirs = estimates(drawn_reference, categories, drawn_truth, cfg)
            for key, (ref, diff) in paired.items():
                ref.append(theirs.get(key, math.nan))
                diff.append(mine.get(key, math.nan) - theirs.get(key, math.nan))
    out: dict[str, dict[str, Any]] = {}
    for key, value in point.items():
        low, high = interval(samples[key])
        row: dict[str, Any] = {"value": _finite(value), "low": low, "high": high}
        if key in paired:
            ref, diff = paired[key]
            row["reference"] = _finite(point_ref[key])
            row["reference_low"], row["reference_high"] = interval(ref)
            row["diff"] = _finite(value - point_ref[key])
            row["diff_low"], row["diff_high"] = interval(diff)
        out[key] = row
    return out


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
