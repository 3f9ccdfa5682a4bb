"""`dsnet evaluate` on a tiny synthetic data set with a real (untrained) checkpoint."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny

from dsnet.evaluation.evaluate import METRIC_KEYS, evaluate

CLASSES = ("normal", "osteopenia", "osteoporosis")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """Three synthetic patients, one slice per vertebra, and a patient-level split."""
    from dsnet.data.contract import load_data_dir
    from dsnet.data.split import read_split

    data_dir, split_path = tiny.synthetic_split(tmp_path_factory.mktemp("tiny"), seed=1)
    return load_data_dir(data_dir), split_path, read_split(split_path)


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory) -> Path:
    return tiny.untrained_checkpoint(tmp_path_factory.mktemp("model"), {})


def eval_params(**overrides):
    cfg = {
        "score_threshold": 0.05,
        "iou_threshold": 0.5,
        "hu_thresholds": [160, 110],
        "fps_warmup": 1,
        "decision_threshold": 0.2,
        "device": "cpu",
    }
    return {"evaluate": cfg | overrides}


def strict_json(path: Path):
    def reject(constant):
        raise ValueError(f"{constant} is not valid JSON")

    return json.loads(path.read_text(), parse_constant=reject)


def expected_hu_baseline_acc(data, patients, thresholds=(160, 110)):
    """The HU baseline computed directly from the ground-truth boxes."""
    from dsnet.io import read_slice
    from dsnet.models.hu_baseline import classify_hu, trabecular_mean_hu

    right = total = 0
    for image in data.images_of(patients):
        hu = read_slice(data.image_path(image)).hu
        for ann in data.annotations[image["id"]]:
            x, y, w, h = ann["bbox"]
            mean = trabecular_mean_hu(hu, (x, y, x + w, y + h))
            right += classify_hu(mean, thresholds) == ann["category_id"]
            total += 1
    return right / total


@pytest.fixture(scope="module")
def evaluated(tiny_set, untrained_checkpoint, tmp_path_factory):
    """One evaluation of the untrained model, with a training run recorded beside it."""
    from dsnet.tracking.runs import start_run

    data, split_path, _ = tiny_set
    root = tmp_path_factory.mktemp("evaluated")
    models, plots = root / "models", root / "plots"
    models.mkdir()
    plots.mkdir()
    (models / "model.pt").symlink_to(untrained_checkpoint)
    (plots / "train_loss.csv").write_text("epoch,loss,loss_classifier\n1,1.4,0.6\n2,1.0,0.4\n")
    with pytest.MonkeyPatch.context() as env:
        env.chdir(root)
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        env.setenv("DSNET_TRACKING", "on")
        with start_run(step="train") as run:
            run_id = run.run_id
        (models / "train_run.json").write_text(json.dumps({"run_id": run_id}))
        metrics = evaluate(
            models / "model.pt", data.root, split_path, root / "metrics.json", plots, eval_params()
        )
        yield {"metrics": metrics, "root": root, "plots": plots, "run_id": run_id}


def test_evaluate_writes_all_metrics_and_plots(tiny_set, evaluated):
    data, _, split = tiny_set
    plots = evaluated["plots"]
    saved = strict_json(evaluated["root"] / "metrics.json")
    assert saved == json.loads(json.dumps(evaluated["metrics"]))
    assert set(METRIC_KEYS) <= set(saved)
    test_images = data.images_of(split["test"])
    assert saved["n_images"] == len(test_images) == 4 * len(split["test"])
    assert saved["n_patients"] == len(split["test"])
    for key in ("map50", "recall", "acc", "ap50_agnostic", "patient_acc", "hu_baseline_acc",
                "hu_baseline_patient_acc"):  # fmt: skip
        assert 0.0 <= saved[key] <= 1.0, key
    assert saved["acc"] <= saved["recall"]
    assert saved["fps"] > 0 and saved["seconds_per_image"] == pytest.approx(1 / saved["fps"])
    assert saved["device"].startswith("cpu")

    # per-class AP: defined exactly for the classes present in the test ground truth
    test_labels = [a["category_id"] for i in test_images for a in data.annotations[i["id"]]]
    present = {CLASSES[label - 1] for label in test_labels}
    assert set(saved["ap_per_class"]) == set(CLASSES)
    assert {c for c, ap in saved["ap_per_class"].items() if ap is not None} == present
    defined = [ap for ap in saved["ap_per_class"].values() if ap is not None]
    assert saved["map50"] == pytest.approx(sum(defined) / len(defined))

    # confusion matrix: one count per ground-truth box, rows = true classes
    confusion = saved["confusion_matrix"]
    assert confusion["columns"] == [*CLASSES, "missed"]
    rows = confusion["matrix"]
    assert sum(map(sum, rows)) == saved["n_gt_boxes"] == len(test_images)
    assert [sum(r) for r in rows] == [test_labels.count(c) for c in (1, 2, 3)]
    assert saved["acc"] == pytest.approx(sum(rows[i][i] for i in range(3)) / len(test_images))

    # the HU baseline in the ground-truth box, recomputed independently
    assert saved["hu_baseline_acc"] == pytest.approx(expected_hu_baseline_acc(data, split["test"]))

    for name in ("pr_curves.png", "pr_curves.csv", "confusion_matrix.png", "confusion.csv",
                 "train_loss.png"):  # fmt: skip
        assert (plots / name).is_file(), name
    assert len((plots / "confusion.csv").read_text().splitlines()) == 1 + len(test_images)


def test_evaluate_logs_to_the_training_run(evaluated):
    import mlflow

    metrics, run_id = evaluated["metrics"], evaluated["run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{evaluated['root'] / 'mlflow.db'}")
    logged = client.get_run(run_id).data.metrics
    assert logged["acc"] == pytest.approx(metrics["acc"])
    assert logged["n_images"] == metrics["n_images"]
    assert math.isclose(logged["hu_baseline_acc"], metrics["hu_baseline_acc"])
    name, ap = next((c, ap) for c, ap in metrics["ap_per_class"].items() if ap is not None)
    assert logged[f"ap_per_class.{name}"] == pytest.approx(ap)
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert "evaluation/metrics.json" in artifacts
    plot_files = {a.path for a in client.list_artifacts(run_id, "evaluation/plots")}
    assert {"evaluation/plots/confusion_matrix.png", "evaluation/plots/pr_curves.csv"} <= plot_files


def test_cli_bad_split_exits_2_and_keeps_old_metrics(tiny_set, untrained_checkpoint, tmp_path):
    data, _, split = tiny_set
    bad = tmp_path / "split.json"
    bad.write_text(json.dumps({**split, "test": [*split["test"], "NOBODY"]}))
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"map50": 0.9}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "dsnet", "evaluate", str(untrained_checkpoint), str(data.root),
         "--split", str(bad), "--metrics", str(metrics), "--plots-dir", str(tmp_path / "plots")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "DSNET_TRACKING": "off"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "NOBODY" in lines[0]
    assert metrics.read_text() == '{"map50": 0.9}\n'
