"""Matching-based detection metrics: recall, accuracy, confusion matrix, patient level.

All boxes are ``[x1, y1, x2, y2]`` in one pixel grid (the original image's). Class ids
are the COCO category ids 1 normal, 2 osteopenia, 3 osteoporosis; 0 means "no answer".
Only detections scoring at least the decision threshold count as the model's answers.
The exact definitions are in docs/metrics.md:

- *hit*: a detection with IoU >= 0.5 to a ground-truth box **and** that box's class;
- *recall* = ground-truth boxes with at least one hit / all ground-truth boxes;
- *answer* for a ground-truth box: the highest-scoring detection with IoU >= 0.5 to it
  (any class), or "missed" if there is none;
- *accuracy* = ground-truth boxes whose answer has the right class / all ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision import ops

MISSED = 0


@dataclass(frozen=True)
class ImageDetections:
    """Ground truth and detections of one image, in the same pixel grid.

    Attributes:
        image_id: The COCO image id.
        gt_boxes: float[G, 4] ground-truth boxes, xyxy.
        gt_labels: int[G] their class ids.
        boxes: float[D, 4] detected boxes, xyxy.
        labels: int[D] detected class ids.
        scores: float[D] detection scores in [0, 1].

    """

    image_id: int
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class MatchCounts:
    """Counts behind recall, accuracy and the confusion matrix.

    Attributes:
        n_gt: Ground-truth boxes.
        hits: Ground-truth boxes with at least one hit (right place and class).
        correct: Ground-truth boxes whose answer has the right class.
        confusion: int[K, K + 1]; row = true class (id order), column = class of the
            answer, the last column counts missed boxes.
        class_ids: The K class ids, in row/column order.

    """

    n_gt: int
    hits: int
    correct: int
    confusion: np.ndarray
    class_ids: tuple[int, ...]

    @property
    def recall(self) -> float:
        """Hits / ground-truth boxes (``nan`` without ground truth)."""
        return self.hits / self.n_gt if self.n_gt else float("nan")

    @property
    def accuracy(self) -> float:
        """Correctly located and classified / ground-truth boxes (``nan`` without any)."""
        return self.correct / self.n_gt if self.n_gt else float("nan")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes (`torchvision.ops.box_iou`).

    Args:
        a: float[N, 4].
        b: float[M, 4].

    Returns:
        float[N, M] intersection over union (0 where a union is empty).

    """
    iou = ops.box_iou(
        torch.as_tensor(np.asarray(a, dtype=np.float64)).reshape(-1, 4),
        torch.as_tensor(np.asarray(b, dtype=np.float64)).reshape(-1, 4),
    )
    return torch.nan_to_num(iou, nan=0.0).numpy()


def answers(
    image: ImageDetections, decision_threshold: float, iou_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Find the model's answer for each ground-truth box of one image.

    Args:
        image: Ground truth and detections.
        decision_threshold: Detections scoring below this are ignored.
        iou_threshold: Minimum IoU for a detection to be about a ground-truth box.

    Returns:
        ``(labels, indices)``: int[G] class of the answer (0 = missed) and int[G] index
        of the answering detection in ``image.boxes`` (-1 = missed).

    """
    n_gt = len(image.gt_labels)
    keep = np.flatnonzero(np.asarray(image.scores) >= decision_threshold)
    labels = np.full(n_gt, MISSED, dtype=np.int64)
    indices = np.full(n_gt, -1, dtype=np.int64)
    if n_gt == 0 or keep.size == 0:
        return labels, indices
    iou = box_iou(image.gt_boxes, np.asarray(image.boxes)[keep])
    scores = np.asarray(image.scores)[keep]
    for g in range(n_gt):
        overlapping = np.flatnonzero(iou[g] >= iou_threshold)
        if overlapping.size:
            best = keep[overlapping[np.argmax(scores[overlapping])]]
            labels[g] = int(image.labels[best])
            indices[g] = int(best)
    return labels, indices


def has_hit(
    image: ImageDetections, decision_threshold: float, iou_threshold: float = 0.5
) -> np.ndarray:
    """Whether each ground-truth box has a hit (IoU >= threshold and the same class).

    Returns:
        bool[G].

    """
    keep = np.asarray(image.scores) >= decision_threshold
    if len(image.gt_labels) == 0 or not keep.any():
        return np.zeros(len(image.gt_labels), dtype=bool)
    iou = box_iou(image.gt_boxes, np.asarray(image.boxes)[keep])
    same_class = np.asarray(image.gt_labels)[:, None] == np.asarray(image.labels)[keep][None, :]
    return np.any((iou >= iou_threshold) & same_class, axis=1)


def match_counts(
    images: Iterable[ImageDetections],
    class_ids: Sequence[int],
    decision_threshold: float,
    iou_threshold: float = 0.5,
) -> MatchCounts:
    """Recall, accuracy and confusion-matrix counts over a set of images.

    Args:
        images: Per-image ground truth and detections.
        class_ids: The foreground class ids (row/column order of the confusion matrix).
        decision_threshold: Minimum score of a detection that counts as an answer.
        iou_threshold: Minimum IoU of a hit.

    Returns:
        The counts; see `MatchCounts`.

    """
    class_ids = tuple(int(c) for c in class_ids)
    column = {c: i for i, c in enumerate(class_ids)} | {MISSED: len(class_ids)}
    confusion = np.zeros((len(class_ids), len(class_ids) + 1), dtype=np.int64)
    n_gt = hits = correct = 0
    for image in images:
        answer_labels, _ = answers(image, decision_threshold, iou_threshold)
        hits += int(has_hit(image, decision_threshold, iou_threshold).sum())
        for truth, answer in zip(image.gt_labels, answer_labels, strict=True):
            confusion[column[int(truth)], column[int(answer)]] += 1
            correct += int(truth == answer)
            n_gt += 1
    return MatchCounts(n_gt, hits, correct, confusion, class_ids)


def top_detection(
    image: ImageDetections, decision_threshold: float
) -> tuple[int | None, float | None, int]:
    """Return the most confident detection at the decision threshold (ground truth unused).

    Returns:
        ``(label, score, index)``, or ``(None, None, -1)`` when nothing reaches it.

    """
    scores = np.asarray(image.scores, dtype=np.float64)
    if scores.size == 0 or scores.max() < decision_threshold:
        return None, None, -1
    best = int(np.argmax(scores))
    return int(image.labels[best]), float(scores[best]), best


def vertebra_labels_by_confidence(
    slices: Iterable[tuple[str, str, int | None, float | None]],
) -> dict[tuple[str, str], int | None]:
    """Grade each vertebra by its most confident slice.

    Args:
        slices: ``(patient_id, vertebra, label, score)`` per slice, where label/score
            are the slice's top detection or ``None`` when it has none.

    Returns:
        ``(patient_id, vertebra) -> label`` of the highest-scoring slice (``None`` if no
        slice of that vertebra has a detection).

    """
    best: dict[tuple[str, str], tuple[float, int | None]] = {}
    for patient, vertebra, label, score in slices:
        key = (patient, vertebra)
        rank = -math.inf if score is None else float(score)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, label)
    return {key: label for key, (_, label) in best.items()}


def vertebra_mean_hu(
    slices: Iterable[tuple[str, str, float]],
) -> dict[tuple[str, str], float]:
    """Mean of the slices' trabecular HU per vertebra (non-finite values skipped).

    Args:
        slices: ``(patient_id, vertebra, mean_hu)`` per slice.

    Returns:
        ``(patient_id, vertebra) -> mean HU`` (``nan`` if no slice had a finite value).

    """
    values: dict[tuple[str, str], list[float]] = {}
    for patient, vertebra, hu in slices:
        bucket = values.setdefault((patient, vertebra), [])
        if hu is not None and math.isfinite(hu):
            bucket.append(float(hu))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in values.items()}


def patient_grades(
    vertebra_labels: Mapping[tuple[str, str], int | None],
) -> dict[str, int | None]:
    """Grade each patient by their worst (lowest bone density) graded vertebra, L1-L4.

    Class ids grow as bone density falls, so the worst grade is the largest id.

    Returns:
        ``patient_id -> class id``, ``None`` when none of the patient's vertebrae is graded.

    """
    grades: dict[str, int | None] = {}
    for (patient, _), label in vertebra_labels.items():
        current = grades.get(patient)
        grades[patient] = label if current is None else max(current, label or 0)
    return grades


def patient_accuracy(predicted: Mapping[str, int | None], truth: Mapping[str, int]) -> float:
    """Share of patients whose predicted grade equals the reference diagnosis.

    Args:
        predicted: ``patient_id -> class id`` or ``None`` (no answer: counts as wrong).
        truth: ``patient_id -> class id`` (DXA diagnosis); defines the patients counted.

    Returns:
        Accuracy in [0, 1] (``nan`` without patients).

    """
    if not truth:
        return float("nan")
    right = sum(predicted.get(patient) == label for patient, label in truth.items())
    return right / len(truth)
