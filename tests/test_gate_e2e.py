"""The quality gate guards learning: a tiny real training passes a non-zero gate, and the
same training with learning switched off is refused.

`dsnet train` -> `dsnet evaluate` -> `dsnet register --strict` run as the CLI runs them,
on a phantom cohort (tests/datadir_factory.py: a bright elliptic vertebral body whose
trabecular HU follows the T-score) small enough to learn on one CPU thread: ResNet50-FPN
with DS attention trained from scratch at 96 px. Tracking is off, so `register` applies the
gate without registering (the gate is the same with MLflow on).

The broken run keeps every setting and sets the learning rate to 1e-12 (a learning rate of
0 is refused as bad input by `dsnet train`): the weights stay at their initialisation and
the gate must say no. Metrics and run times are printed (``-s``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datadir_factory import make_data_dir

from dsnet.data.contract import load_data_dir
from dsnet.data.split import split_patients, write_split

REPO = Path(__file__).resolve().parents[1]
SIZE = 96
# four vertebrae per patient, T-scores spread over the three WHO classes
T_SCORES = [0.8, 0.2, -0.4, -1.2, -1.6, -2.0, -2.3, -2.7, -3.1, -3.5]
PARAMS = [
    "model.backbone=resnet50",
    "model.attention=ds",
    f"preprocess.canvas_px={SIZE}",
    "model.anchor_sizes=[16,32,64,128,256]",
    "model.detector.box_batch_size_per_image=32",
    "model.detector.rpn_pre_nms_top_n_train=100",
    "model.detector.rpn_post_nms_top_n_train=50",
    "model.detector.rpn_pre_nms_top_n_test=100",
    "model.detector.rpn_post_nms_top_n_test=50",
    "preprocess.spacing_mm=1.0",
    "train.device=cpu",
    "train.threads=1",
    "train.workers=0",
    "train.batch_size=4",
    "train.lr=0.01",
    "train.warmup_iters=10",
    "train.lr_milestones=[]",
    "train.epochs=8",
    "evaluate.device=cpu",
    "evaluate.fps_warmup=0",
    "evaluate.decision_threshold=0.05",  # a tiny model's answers score low
]
GATE = [
    "register.min_map50=0.1",
    "register.min_recall=0.2",
    "register.min_acc=0.1",
    "register.beat_hu_baseline=false",
]
BROKEN = ["train.lr=1e-12"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """12 patients x L1-L4, one 96 x 96 slice each at 1 mm; 4 patients held out."""
    root = tmp_path_factory.mktemp("gate")
    vertebrae = ["L1", "L2", "L3", "L4"]
    t_scores = {
        f"P{p:02d}": {v: T_SCORES[(3 * p + i) % len(T_SCORES)] for i, v in enumerate(vertebrae)}
        for p in range(12)
    }
    data = make_data_dir(root / "data", t_scores, size=(SIZE, SIZE), seed=5)
    split = write_split(split_patients(load_data_dir(data), 0.25, seed=0), root / "split.json")
    return data, split


def lifecycle(root: Path, data: Path, split: Path, *overrides: str) -> dict:
    """Train, evaluate and gate one model with the CLI; returns what each step left."""
    settings = [arg for o in [*PARAMS, *GATE, *overrides] for arg in ("-S", o)]
    common = ["-p", str(REPO / "params.yaml"), *settings]
    env = {**os.environ, "DSNET_TRACKING": "off", "OMP_NUM_THREADS": "1"}
    dsnet = [sys.executable, "-m", "dsnet"]
    started = time.monotonic()
    for step in (
        ["train", str(data), "--split", str(split), "--out", "models", "--plots-dir", "plots"],
        ["evaluate", "models/model.pt", str(data), "--split", str(split)],
    ):
        done = subprocess.run(
            [*dsnet, *step, *common], cwd=root, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
    trained = time.monotonic() - started
    gate = subprocess.run(
        [*dsnet, "register", "--strict", "--model", "models/model.pt", "--metrics",
         "metrics.json", "--out", "register.json", "--data", str(data), "--split", str(split),
         *common],
        cwd=root, env=env, capture_output=True, text=True,
    )  # fmt: skip
    metrics = json.loads((root / "metrics.json").read_text())
    shown = {k: metrics[k] for k in ("map50", "ap50_agnostic", "recall", "acc", "patient_acc")}
    print(f"\n{overrides or 'learning'}: {shown}, train+evaluate {trained:.0f} s")
    return {
        "metrics": metrics,
        "receipt": json.loads((root / "register.json").read_text()),
        "gate": gate,
    }


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_model_that_learns_passes_a_non_zero_gate(cohort, tmp_path):
    run = lifecycle(tmp_path, *cohort)
    assert run["gate"].returncode == 0, run["gate"].stderr
    assert run["receipt"]["gate"] == "passed"
    statuses = {c["name"]: c["status"] for c in run["receipt"]["criteria"]}
    assert statuses["map50"] == statuses["recall"] == statuses["acc"] == "pass"
    thresholds = {c["name"]: c["threshold"] for c in run["receipt"]["criteria"]}
    assert (thresholds["map50"], thresholds["recall"], thresholds["acc"]) == (0.1, 0.2, 0.1)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_model_that_cannot_learn_is_refused(cohort, tmp_path):
    run = lifecycle(tmp_path, *cohort, *BROKEN)
    assert run["gate"].returncode == 2
    assert run["gate"].stderr.strip().splitlines()[-1].startswith("error: ")
    assert "gate failed" in run["gate"].stderr
    assert run["receipt"]["gate"] == "failed" and run["receipt"]["registered"] is False
    failed = {c["name"] for c in run["receipt"]["criteria"] if c["status"] == "fail"}
    assert {"map50", "recall", "acc"} <= failed
