"""`dsnet.evaluation.evaluate` on detectors whose answers are known: exact metric values.

The detectors are oracles that read the ground truth of the data dir: they look the slice
up by its model input (the exact pixels `evaluate` feeds them) and answer, at score 0.9,
with a box and label that a rule of the test makes from its ground truth (in canvas pixels).
They run through the same `evaluate_detector` as a checkpoint does (slice reading, the
canonical frame, box mapping back to the stored grid, pycocotools AP, matching, patient
grades).

The data set is hand-made so that each expected value below is counted by hand (WHO
classes: normal T > -1, osteopenia -2.5 < T <= -1, osteoporosis T <= -2.5; a patient's
diagnosis is the class of their lowest T-score):

- PN: L1 0.5 normal, L2 0.0 normal -> normal;
- PP: L1 -1.5 osteopenia, L2 -2.0 osteopenia -> osteopenia;
- PO: L1 -3.0 osteoporosis, L2 -2.8 osteoporosis -> osteoporosis;
- PM: L1 -0.2 normal, L2 -2.7 osteoporosis -> osteoporosis;
- PX: L1 -1.5 osteopenia, L2 -3.0 osteoporosis -> osteoporosis.

10 ground-truth boxes (one per slice): normal 3, osteopenia 3, osteoporosis 4.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from datadir_factory import make_data_dir
from tiny import PREPROCESS
from torchvision.ops import box_convert

from dsnet.data.contract import load_data_dir
from dsnet.evaluation.scoring import evaluate_detector
from dsnet.inference.detect import model_input
from dsnet.io.dicom import read_slice

T_SCORES = {
    "PN": {"L1": 0.5, "L2": 0.0},
    "PP": {"L1": -1.5, "L2": -2.0},
    "PO": {"L1": -3.0, "L2": -2.8},
    "PM": {"L1": -0.2, "L2": -2.7},
    "PX": {"L1": -1.5, "L2": -3.0},
}
CFG = {
    "score_threshold": 0.05,
    "iou_threshold": 0.5,
    "decision_threshold": 0.5,
    "hu_thresholds": [162, 128],
    "fps_warmup": 1,
}
NAMES = ["normal", "osteopenia", "osteoporosis"]
CPU = torch.device("cpu")

# A label and a box (xyxy, original pixels) for one ground-truth box -> the detector's answer.
Answer = Callable[[int, np.ndarray, int, int], tuple[int, np.ndarray]]


class Oracle:
    """A torchvision-style detector that answers each slice from its ground truth.

    Args:
        data: The data dir.
        answer: ``(true class, gt box xyxy, image height, width) -> (label, box xyxy)`` in
            original pixels.

    """

    def __init__(self, data, answer: Answer) -> None:
        self.by_input: dict[str, dict[str, torch.Tensor]] = {}
        for image in data.images:
            ct = read_slice(data.image_path(image))
            tensor, placement = model_input(ct, PREPROCESS)
            labels, boxes = [], []
            for ann in data.annotations[image["id"]]:
                label, box = answer(
                    int(ann["category_id"]),
                    box_convert(torch.tensor(ann["bbox"]), "xywh", "xyxy").numpy(),
                    image["height"],
                    image["width"],
                )
                labels.append(label)
                boxes.append(box)
            key = self.key(tensor)
            assert key not in self.by_input, "two slices with the same pixels"
            self.by_input[key] = {
                "boxes": torch.as_tensor(placement.stored_to_canvas(np.array(boxes))).float(),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "scores": torch.full((len(labels),), 0.9),
            }

    @staticmethod
    def key(tensor: torch.Tensor) -> str:
        return hashlib.sha256(tensor.cpu().numpy().tobytes()).hexdigest()

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [dict(self.by_input[self.key(image)]) for image in images]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_data_dir(tmp_path_factory.mktemp("known") / "data", T_SCORES, seed=3)
    return load_data_dir(root)


def run(data, answer: Answer) -> tuple[dict, np.ndarray]:
    metrics, _, counts, _ = evaluate_detector(
        Oracle(data, answer), PREPROCESS, data, list(T_SCORES), CPU, CFG
    )
    json.dumps(metrics)  # the values are plain numbers
    return metrics, counts.confusion


def perfect(label, box, height, width):
    return label, box


def rotated_grade(label, box, height, width):
    """Right box, wrong grade: normal -> osteopenia -> osteoporosis -> normal."""
    return label % 3 + 1, box


def off_the_body(label, box, height, width):
    """Right grade, box moved up by 0.3 of the image: the body sits in y 0.45-0.65 of it."""
    return label, box - np.array([0.0, 0.3 * height, 0.0, 0.3 * height])


def test_the_oracles_boxes_survive_the_trip_through_canvas_pixels(data):
    oracle = Oracle(data, perfect)
    assert len(oracle.by_input) == 10
    # off_the_body really is off: IoU 0 with the ground truth, and inside the image
    image = data.images[0]
    gt = box_convert(
        torch.tensor(data.annotations[image["id"]][0]["bbox"]), "xywh", "xyxy"
    ).numpy()
    _, moved = off_the_body(1, gt, image["height"], image["width"])
    assert moved[3] < gt[1] and moved[1] > 0


def test_perfect_detector_scores_one_everywhere(data):
    metrics, confusion = run(data, perfect)
    assert metrics["map50"] == 1.0
    assert metrics["ap50_agnostic"] == 1.0
    assert metrics["ap_per_class"] == {name: 1.0 for name in NAMES}
    assert (metrics["recall"], metrics["acc"], metrics["patient_acc"]) == (1.0, 1.0, 1.0)
    assert confusion.tolist() == [[3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 4, 0]]
    assert (metrics["n_images"], metrics["n_gt_boxes"], metrics["n_patients"]) == (10, 10, 5)
    # the HU baseline reads the same ROI in the detector's box as in the ground truth's
    assert metrics["hu_baseline_pred_box_acc"] == metrics["hu_baseline_acc"]
    assert metrics["hu_baseline_pred_box_patient_acc"] == metrics["hu_baseline_patient_acc"]
    assert metrics["fps"] > 0


def test_right_boxes_with_every_grade_wrong(data):
    metrics, confusion = run(data, rotated_grade)
    # Every detection of class c lies on a box of another class: no true positive in any
    # class, AP 0 each, mAP 0; ignoring classes every box is found once: AP 1.
    assert metrics["map50"] == 0.0
    assert metrics["ap_per_class"] == {name: 0.0 for name in NAMES}
    assert metrics["ap50_agnostic"] == 1.0
    # No ground-truth box has a detection of its class (recall 0); every answer exists
    # (nothing missed) and has the wrong class (accuracy 0): rows shift by one column.
    assert (metrics["recall"], metrics["acc"]) == (0.0, 0.0)
    assert confusion.tolist() == [[0, 3, 0, 0], [0, 0, 3, 0], [4, 0, 0, 0]]
    # Patient grade = worst vertebra grade. Answers: PN [2, 2] -> 2 (truth 1), PP [3, 3]
    # -> 3 (truth 2), PO [1, 1] -> 1 (truth 3), PM [2, 1] -> 2 (truth 3), PX [3, 1] -> 3
    # (truth 3): only PX is right, 1 / 5.
    assert metrics["patient_acc"] == 0.2
    # the HU baseline in the detector's box is the ground truth's: the boxes are right
    assert metrics["hu_baseline_pred_box_acc"] == metrics["hu_baseline_acc"]


def test_right_grades_in_the_wrong_place(data):
    metrics, confusion = run(data, off_the_body)
    # IoU 0 with every ground-truth box: every detection is a false positive.
    assert metrics["map50"] == 0.0
    assert metrics["ap_per_class"] == {name: 0.0 for name in NAMES}
    assert metrics["ap50_agnostic"] == 0.0
    assert (metrics["recall"], metrics["acc"]) == (0.0, 0.0)
    assert confusion.tolist() == [[0, 0, 0, 3], [0, 0, 0, 3], [0, 0, 0, 4]]
    # The patient grade reads each slice's most confident answer wherever it is
    # (docs/metrics.md): the labels are right, so every patient is: 5 / 5.
    assert metrics["patient_acc"] == 1.0
    # every body is missed, so the HU baseline in the detector's box has no reading
    assert metrics["hu_baseline_pred_box_acc"] == 0.0
    assert not math.isnan(metrics["hu_baseline_acc"])
