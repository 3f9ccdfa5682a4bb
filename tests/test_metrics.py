"""Hand-checked cases for the paper's metrics (pycocotools AP50, recall, accuracy, ...)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from dsnet.data.classes import CATEGORIES
from dsnet.evaluation.coco import average_precision
from dsnet.evaluation.detection import (
    ImageDetections,
    answers,
    box_iou,
    match_counts,
    patient_accuracy,
    patient_grades,
    vertebra_labels_by_confidence,
    vertebra_mean_hu,
)
from dsnet.evaluation.plots import loss_series, write_confusion, write_loss_curve, write_pr_curves

NORMAL, OSTEOPENIA, OSTEOPOROSIS = 1, 2, 3
IMAGES = [{"id": 1}, {"id": 2}, {"id": 3}]
BOX = [10.0, 20.0, 40.0, 50.0]  # COCO xywh
BOX_XYXY = [10.0, 20.0, 50.0, 70.0]


def gt(image_id, category_id, bbox=BOX):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox}


def det(image_id, category_id, score, bbox=BOX):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


# image 1: perfect hit; image 2: right place, wrong class; image 3: missed
GROUND_TRUTH = [gt(1, NORMAL), gt(2, OSTEOPENIA), gt(3, OSTEOPOROSIS)]
DETECTIONS = [det(1, NORMAL, 0.9), det(2, NORMAL, 0.8)]


def test_coco_ap50_hit_wrong_class_and_miss():
    ap = average_precision(IMAGES, CATEGORIES, GROUND_TRUTH, DETECTIONS)
    # normal: its one GT found by the top detection before the false positive -> AP 1
    # (pycocotools divides by tp + fp + eps, so a perfect precision is 1 - 2e-16)
    assert ap.ap_per_class == pytest.approx({NORMAL: 1.0, OSTEOPENIA: 0.0, OSTEOPOROSIS: 0.0})
    assert ap.mean_ap == pytest.approx(1 / 3)
    assert ap.max_recall[NORMAL] == 1.0
    assert ap.recall_thresholds.shape == (101,)


def test_coco_ap50_class_agnostic_is_101_point_interpolated():
    ap = average_precision(IMAGES, CATEGORIES, GROUND_TRUTH, DETECTIONS, class_agnostic=True)
    # 2 of 3 bodies found at precision 1: recall points 0.00..0.66 (67 of 101) score 1
    assert ap.mean_ap == pytest.approx(67 / 101)
    assert ap.max_recall[1] == pytest.approx(2 / 3)


def test_coco_false_positive_ranked_first_halves_ap():
    detections = [det(2, NORMAL, 0.95), det(1, NORMAL, 0.9)]
    ap = average_precision(IMAGES, CATEGORIES, [gt(1, NORMAL)], detections)
    assert ap.ap_per_class[NORMAL] == pytest.approx(0.5)
    assert ap.ap_per_class[OSTEOPENIA] is None  # no ground truth: left out of the mean
    assert ap.mean_ap == pytest.approx(0.5)


def test_coco_iou_threshold_is_inclusive_at_half_and_excludes_below():
    # GT 0..10 x 0..10; detection 0..10 x 0..20 has IoU exactly 0.5
    images = [{"id": 1}]
    ground_truth = [gt(1, NORMAL, [0, 0, 10, 10])]
    at_half = average_precision(
        images, CATEGORIES, ground_truth, [det(1, NORMAL, 0.9, [0, 0, 10, 20])]
    )
    below = average_precision(
        images, CATEGORIES, ground_truth, [det(1, NORMAL, 0.9, [0, 0, 10, 21])]
    )
    assert at_half.ap_per_class[NORMAL] == pytest.approx(1.0)
    assert below.ap_per_class[NORMAL] == 0.0


def test_coco_without_detections_is_zero():
    ap = average_precision(IMAGES, CATEGORIES, GROUND_TRUTH, [])
    assert ap.mean_ap == 0.0


def image(image_id, truth, boxes, labels, scores):
    return ImageDetections(
        image_id=image_id,
        gt_boxes=np.array([BOX_XYXY], dtype=float),
        gt_labels=np.array([truth]),
        boxes=np.array(boxes, dtype=float).reshape(-1, 4),
        labels=np.array(labels, dtype=np.int64),
        scores=np.array(scores, dtype=float),
    )


HAND_IMAGES = [
    image(1, NORMAL, [BOX_XYXY], [NORMAL], [0.9]),
    image(2, OSTEOPENIA, [BOX_XYXY], [NORMAL], [0.8]),
    image(3, OSTEOPOROSIS, [], [], []),
]


def test_recall_accuracy_confusion_hand_case():
    counts = match_counts(HAND_IMAGES, [1, 2, 3], decision_threshold=0.5)
    assert counts.n_gt == 3
    assert counts.recall == pytest.approx(1 / 3)
    assert counts.accuracy == pytest.approx(1 / 3)
    np.testing.assert_array_equal(
        counts.confusion,
        [
            [1, 0, 0, 0],
            [1, 0, 0, 0],
            [0, 0, 0, 1],
        ],  # columns: normal, osteopenia, osteoporosis, missed
    )


def test_recall_counts_any_right_detection_accuracy_only_the_most_confident():
    # the right class is there, but a wrong-class box on the same body scores higher
    both = image(1, OSTEOPENIA, [BOX_XYXY, BOX_XYXY], [NORMAL, OSTEOPENIA], [0.9, 0.6])
    counts = match_counts([both], [1, 2, 3], decision_threshold=0.5)
    assert (counts.recall, counts.accuracy) == (1.0, 0.0)
    assert counts.confusion[1].tolist() == [1, 0, 0, 0]


def test_decision_threshold_and_iou_decide_missed():
    low = image(1, NORMAL, [BOX_XYXY], [NORMAL], [0.3])
    elsewhere = image(2, NORMAL, [[100, 100, 140, 150]], [NORMAL], [0.9])
    counts = match_counts([low, elsewhere], [1, 2, 3], decision_threshold=0.5)
    assert counts.recall == 0.0
    assert counts.confusion[0].tolist() == [0, 0, 0, 2]
    labels, indices = answers(low, decision_threshold=0.2)
    assert labels.tolist() == [NORMAL] and indices.tolist() == [0]


def test_box_iou_known_values():
    iou = box_iou(
        np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 20], [5, 5, 15, 15], [20, 20, 30, 30]])
    )
    np.testing.assert_allclose(iou, [[0.5, 25 / 175, 0.0]])


def test_patient_level_lowest_grade_and_accuracy():
    slices = [
        ("p1", "L1", NORMAL, 0.9),
        ("p1", "L2", OSTEOPENIA, 0.7),
        ("p1", "L2", OSTEOPOROSIS, 0.6),  # less confident slice of L2: ignored
        ("p2", "L1", None, None),
        ("p3", "L3", OSTEOPOROSIS, 0.8),
    ]
    vertebrae = vertebra_labels_by_confidence(slices)
    assert vertebrae[("p1", "L2")] == OSTEOPENIA
    grades = patient_grades(vertebrae)
    assert grades == {"p1": OSTEOPENIA, "p2": None, "p3": OSTEOPOROSIS}
    truth = {"p1": OSTEOPENIA, "p2": NORMAL, "p3": NORMAL}
    assert patient_accuracy(grades, truth) == pytest.approx(1 / 3)  # p2 unanswered = wrong


def test_vertebra_mean_hu_skips_non_finite():
    means = vertebra_mean_hu([("p", "L1", 100.0), ("p", "L1", 140.0), ("p", "L2", math.nan)])
    assert means[("p", "L1")] == 120.0
    assert math.isnan(means[("p", "L2")])


def test_plot_files_are_written_with_dvc_friendly_rows(tmp_path):
    ap = average_precision(IMAGES, CATEGORIES, GROUND_TRUTH, DETECTIONS)
    names = {1: "normal", 2: "osteopenia", 3: "osteoporosis"}
    written = write_pr_curves(ap, names, tmp_path)
    assert {p.name for p in written} == {"pr_curves.csv", "pr_curves.png"}
    with (tmp_path / "pr_curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 101 and float(rows[-1]["normal"]) == pytest.approx(1.0)
    assert float(rows[0]["osteopenia"]) == 0.0

    counts = match_counts(HAND_IMAGES, [1, 2, 3], decision_threshold=0.5)
    write_confusion(counts.confusion, counts.class_ids, names, tmp_path)
    with (tmp_path / "confusion.csv").open() as handle:
        pairs = sorted((r["actual"], r["predicted"]) for r in csv.DictReader(handle))
    assert pairs == [("normal", "normal"), ("osteopenia", "normal"), ("osteoporosis", "missed")]
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_pr_csv_keeps_a_blank_column_for_a_class_absent_from_the_hold_out(tmp_path):
    ap = average_precision(IMAGES[:2], CATEGORIES, GROUND_TRUTH[:2], DETECTIONS)
    assert 3 not in ap.precision
    write_pr_curves(ap, {1: "normal", 2: "osteopenia", 3: "osteoporosis"}, tmp_path)
    with (tmp_path / "pr_curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["recall", "normal", "osteopenia", "osteoporosis"]
    assert {row["osteoporosis"] for row in rows} == {""}
    assert float(rows[0]["normal"]) == pytest.approx(1.0)


def test_loss_curve_from_training_csv(tmp_path):
    assert write_loss_curve(tmp_path / "absent.csv", tmp_path / "loss.png") is None
    log = tmp_path / "train_loss.csv"
    log.write_text("epoch,loss,loss_classifier,lr\n1,1.5,0.7,0.01\n2,1.1,0.5,0.01\n")
    x_name, series = loss_series(log)
    assert x_name == "epoch" and set(series) == {"loss", "loss_classifier"}  # lr left out
    assert series["loss"] == [(1.0, 1.5), (2.0, 1.1)]
    out = write_loss_curve(log, tmp_path / "loss.png")
    assert out is not None and out.read_bytes()[:4] == b"\x89PNG"
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,loss\n")
    assert write_loss_curve(empty, tmp_path / "none.png") is None
