"""dsnet.evaluation.review: bootstrap intervals, the evidence of an evaluation and its HTML report.

A real (untrained) checkpoint is evaluated on a small synthetic hold-out (tracking off);
the report is read back as HTML and opened in headless chromium when it is installed.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tiny
from review_pages import decode_png, read_report

from dsnet.core.errors import InputError
from dsnet.evaluation.detection import ImageDetections
from dsnet.evaluation.evaluate import evaluate
from dsnet.evaluation.review.bootstrap import bootstrap, estimates, resample
from dsnet.evaluation.review.card import LINEAGE_FIELDS, TRAINING_FIELDS
from dsnet.evaluation.review.evidence import review_paths, review_settings
from dsnet.evaluation.review.report_html import METRIC_ORDER, card_html
from dsnet.evaluation.scoring import SliceResult, compute_metrics

CATEGORIES = [{"id": 1, "name": "normal"}, {"id": 2, "name": "osteopenia"},
              {"id": 3, "name": "osteoporosis"}]  # fmt: skip
CFG = {"decision_threshold": 0.5, "iou_threshold": 0.5, "hu_thresholds": [162, 128]}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def slice_result(image_id, patient, vertebra, truth, answer, score, seconds=0.1):
    """One slice with one body; the answer sits on the body (``answer`` 0: nothing found)."""
    gt = np.array([[40.0, 40.0, 80.0, 80.0]])
    boxes = gt.copy() if answer else np.zeros((0, 4))
    return SliceResult(
        image={"id": image_id, "patient_id": patient, "vertebra": vertebra},
        detections=ImageDetections(
            image_id,
            gt,
            np.array([truth]),
            boxes,
            np.array([answer] if answer else [], dtype=np.int64),
            np.array([score] if answer else []),
        ),  # fmt: skip
        gt_mean_hu=np.array([150.0]),
        pred_mean_hu=np.array([150.0 if answer else math.nan]),
        seconds=seconds,
    )


def cohort(wrong: set[str]):
    """Four patients x two vertebrae; the patients in `wrong` are graded one class off."""
    truth = {"A": 1, "B": 2, "C": 3, "D": 1}
    results = []
    for patient, label in truth.items():
        for vertebra in ("L1", "L2"):
            answer = label % 3 + 1 if patient in wrong else label
            results.append(slice_result(len(results) + 1, patient, vertebra, label, answer, 0.9))
    return results, truth


def test_point_estimates_are_the_metrics_of_the_evaluation():
    results, truth = cohort(wrong={"B"})
    metrics, _, _ = compute_metrics(results, CATEGORIES, truth, CFG)
    values = estimates(results, CATEGORIES, truth, CFG)
    assert values["acc"] == metrics["acc"] == 0.75
    assert values["patient_acc"] == metrics["patient_acc"] == 0.75
    assert values["map50"] == metrics["map50"]
    assert values["fps"] == pytest.approx(10.0)


def test_a_draw_renames_repeated_patients_and_images():
    results, truth = cohort(wrong=set())
    slices = {"A": [0, 1], "B": [2, 3], "C": [4, 5], "D": [6, 7]}
    drawn, drawn_truth = resample(results, truth, ["B", "B", "C"], slices)
    assert drawn_truth == {"B#0": 2, "B#1": 2, "C#2": 3}
    assert [r.image["id"] for r in drawn] == [1, 2, 3, 4, 5, 6]
    assert [r.detections.image_id for r in drawn] == [1, 2, 3, 4, 5, 6]
    assert [r.image["patient_id"] for r in drawn] == ["B#0"] * 2 + ["B#1"] * 2 + ["C#2"] * 2


def test_bootstrap_intervals_are_reproducible_and_bracket_the_value():
    results, truth = cohort(wrong={"B"})
    first = bootstrap(results, CATEGORIES, truth, CFG, draws=60, seed=3)
    again = bootstrap(results, CATEGORIES, truth, CFG, draws=60, seed=3)
    other = bootstrap(results, CATEGORIES, truth, CFG, draws=60, seed=4)
    assert first == again and first != other
    acc = first["acc"]
    assert acc["value"] == 0.75 and acc["low"] <= 0.75 <= acc["high"]
    # one of four patients wrong: a draw holds 0..4 copies of B, acc in {0, .25, ..., 1}
    assert 0.0 <= acc["low"] < acc["high"] <= 1.0
    assert first["recall"]["low"] < first["recall"]["high"]


def test_paired_difference_against_a_reference_model():
    better, truth = cohort(wrong=set())
    worse, _ = cohort(wrong={"A", "B"})
    paired = bootstrap(better, CATEGORIES, truth, CFG, draws=60, seed=0, reference=worse)
    acc = paired["acc"]
    assert (acc["value"], acc["reference"], acc["diff"]) == (1.0, 0.5, 0.5)
    assert acc["diff_low"] >= 0.0 and acc["diff_high"] <= 1.0
    same = bootstrap(better, CATEGORIES, truth, CFG, draws=20, seed=0, reference=better)
    assert {(row["diff_low"], row["diff_high"]) for row in same.values() if "diff_low" in row} <= {
        (0.0, 0.0), (None, None)
    }  # fmt: skip
    with pytest.raises(ValueError, match="same slices"):
        bootstrap(better, CATEGORIES, truth, CFG, draws=1, seed=0, reference=better[::-1])


def test_review_settings_are_checked():
    assert review_settings({}) == {"bootstrap_draws": 100, "seed": 0, "gallery_max": 16}
    with pytest.raises(InputError, match="evaluate.review.gallery_max"):
        review_settings({"review": {"gallery_max": -1}})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, monkeypatch_module):
    """A tiny evaluation (6 synthetic patients, half held out) with its review."""
    from dsnet.data.contract import load_data_dir
    from dsnet.data.split import split_patients, write_split
    from dsnet.synth.generate import synthesize

    monkeypatch_module.setenv("DSNET_TRACKING", "off")
    monkeypatch_module.setenv("DSNET_KFP_RUN_ID", "run-7f3a")  # as a pipeline step sets it
    root = tmp_path_factory.mktemp("review")
    synthesize(root / "data", patients=6, seed=5, slices_per_vertebra=1)
    write_split(split_patients(load_data_dir(root / "data"), 0.5, 0), root / "split.json")
    checkpoint = tiny.untrained_checkpoint(root / "model", {"epochs": 1, "git_sha": "abc123"})
    params = {
        "evaluate": {"decision_threshold": 0.0, "device": "cpu", "fps_warmup": 0,
                     "review": {"bootstrap_draws": 30, "seed": 0, "gallery_max": 3}},
    }  # fmt: skip
    metrics = evaluate(
        checkpoint, root / "data", root / "split.json", root / "metrics.json", root / "plots",
        params,
    )  # fmt: skip
    evidence_path, report_path = review_paths(root / "metrics.json")
    return {
        "root": root,
        "metrics": metrics,
        "evidence": json.loads(evidence_path.read_text()),
        "report": report_path,
    }


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_the_report_numbers_equal_metrics_json(evaluated):
    metrics = json.loads((evaluated["root"] / "metrics.json").read_text())
    page = read_report(evaluated["report"].read_text())
    shown = {key: float(v) for (key, role), v in page.values.items() if role == "value" and v}
    assert set(shown) >= {"map50", "recall", "acc", "patient_acc", "hu_baseline_acc", "fps"}
    for key, value in shown.items():
        group, _, name = key.partition(".")
        expected = metrics[group][name] if name else metrics[key]
        assert value == expected, key
    intervals = evaluated["evidence"]["intervals"]
    assert set(intervals) >= {k for k in METRIC_ORDER if not k.startswith("ap_per_class.")}
    for key in ("recall", "acc", "patient_acc", "hu_baseline_acc"):
        row = intervals[key]
        assert row["value"] == metrics[key]
        assert row["low"] <= row["value"] <= row["high"], key


def test_the_model_card_names_the_pipeline_run_and_the_training_commit(evaluated):
    lineage = evaluated["evidence"]["card"]["lineage"]
    assert lineage["kfp_run_id"] == "run-7f3a" and lineage["git_sha"] == "abc123"
    assert "run-7f3a" in evaluated["report"].read_text()


def test_card_rows_keep_their_order_through_the_sorted_evidence_json(evaluated):
    """The report attached at registration is rendered from evidence.json (sorted keys)."""
    card = evaluated["evidence"]["card"]  # read back from evidence.json
    assert list(card["training"]) == sorted(TRAINING_FIELDS)  # the JSON order is alphabetical
    assert list(card["lineage"]) == sorted(LINEAGE_FIELDS)
    text = read_report(evaluated["report"].read_text()).text
    for rendered in (text, read_report(card_html(card)).text):
        starts = [rendered.index(f"training: {k.replace('_', ' ')}") for k in TRAINING_FIELDS]
        starts += [rendered.index(f"lineage: {k.replace('_', ' ')}") for k in LINEAGE_FIELDS]
        assert starts == sorted(starts)


def test_the_report_is_self_contained_and_complete(evaluated):
    text = evaluated["report"].read_text()
    page = read_report(text)
    assert page.scripts == 0 and page.references == []
    assert {"card", "gate", "metrics", "champion", "plots", "errors", "patients"} <= page.ids
    assert "Synthetic data" in page.text and "abc123" in page.text
    assert len(page.images) >= 2 + min(3, evaluated["evidence"]["errors_total"])
    for src in page.images:
        assert decode_png(src).size[0] > 50
    evidence = evaluated["evidence"]
    assert [row["patient"] for row in evidence["patients"]] == sorted(
        row["patient"] for row in evidence["patients"]
    )
    assert len(evidence["patients"]) == evaluated["metrics"]["n_patients"]
    assert len(evidence["gallery"]) == min(3, evidence["errors_total"])
    for entry in evidence["gallery"]:
        assert entry["answer"] != entry["truth"]
        assert f"truth {entry['truth']}" in page.text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_the_report_renders_in_headless_chromium(evaluated, tmp_path):
    from PIL import Image

    report = evaluated["report"].resolve()
    shot = tmp_path / "report.png"
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    common = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
              "--enable-logging=stderr", "--v=0", profile]  # fmt: skip
    shoot = subprocess.run(
        [*common, "--window-size=1200,2400", f"--screenshot={shot}", report.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    dom = subprocess.run(
        [*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert shoot.returncode == 0 and dom.returncode == 0, shoot.stderr[-2000:]
    console = [
        line for line in (shoot.stderr + dom.stderr).splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "net::ERR" in line
    ]  # fmt: skip
    assert console == []
    rendered = read_report(dom.stdout)
    assert rendered.images == read_report(report.read_text()).images  # every image in the DOM
    for src in rendered.images:
        decode_png(src)
    picture = Image.open(shot).convert("RGB")
    assert picture.size == (1200, 2400)
    colours = picture.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 500, "the screenshot looks blank"
    saved = Path(evaluated["root"]) / "report-screenshot.png"
    shutil.copy(shot, saved)
    print(f"\nscreenshot: {saved} ({len(colours)} colours)")
