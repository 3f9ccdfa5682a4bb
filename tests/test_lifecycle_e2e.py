"""End to end: tiny `dvc repro` -> MLflow server (artifacts in moto S3) -> gate -> registry
-> promotion -> pyfunc in a fresh process -> prediction on pydicom's CT_small.dcm, and the
DVC side (no-op repro, metrics/plots, exp run, push / fresh clone / pull).

One project copy with tiny params (6 patients x 4 slices, one epoch of MobileNetV3+DS at
128 px) and one MLflow server of its own serve the whole module; the pipeline runs once.
The fresh and no-op `dvc repro` times are printed (``-s``), never asserted.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from project_copy import TINY, checked, commit, project_copy, run, tree_bytes, use_remote
from servers import ACCESS_KEY, SECRET_KEY, mlflow_tracking_server

from dsnet.core.config import deep_merge, params_hash
from dsnet.inference.pyfunc import OUTPUT_COLUMNS

# tiny models learn nothing in one epoch: these thresholds let the gate pass on purpose
PERMISSIVE = {
    "register": {"min_map50": 0.0, "min_recall": 0.0, "min_acc": 0.0, "beat_hu_baseline": False}
}
FRESH_PROCESS = """
import json
import mlflow, pandas as pd
from pydicom.data import get_testdata_file
from dsnet.io import read_slice

path = get_testdata_file("CT_small.dcm")
ct = read_slice(path)
model = mlflow.pyfunc.load_model("models:/dsnet@champion")
by_path = model.predict(pd.DataFrame({"path": [path]}), params={"score_threshold": 0.0})
by_hu = model.predict(
    pd.DataFrame({"hu": [ct.hu.tolist()], "spacing": [list(ct.spacing)], "file": ["ct"]}),
    params={"score_threshold": 0.0},
)
print(json.dumps({
    "columns": list(by_path.columns),
    "rows": by_path.drop(columns="file").values.tolist(),
    "rows_hu": by_hu.drop(columns="file").values.tolist(),
    "files": sorted(set(by_path["file"])),
    "shape": list(ct.hu.shape),
}))
"""


@dataclass
class Pipeline:
    """The module's project copy after one `dvc repro`, and how to reach its services."""

    repo: Path
    head: str
    env: dict[str, str]
    client: Any
    artifact_root: str
    fresh: Any


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, s3_server, mlflow_db_template):
    import mlflow

    root = tmp_path_factory.mktemp("e2e")
    repo = project_copy(root / "repo", deep_merge(TINY, PERMISSIVE))
    use_remote(repo, s3_server.url, ACCESS_KEY, SECRET_KEY)
    head = checked(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    with (
        mlflow_tracking_server(
            root / "mlflow", s3_server, template=mlflow_db_template, auth=True
        ) as srv,
        pytest.MonkeyPatch.context() as mp,
    ):
        for key, value in srv.login(*srv.admin).items():  # the in-process client logs in too
            mp.setenv(key, value)
        env = {
            **srv.login(*srv.admin),
            "DSNET_USER": "e2e-reviewer",  # ignored: the server says who promotes
            "DSNET_MODEL_CACHE": str(root / "model-cache"),
            "OMP_NUM_THREADS": "1",
            "DVC_NO_ANALYTICS": "1",
        }
        started = time.monotonic()
        fresh = checked(["dvc", "repro"], repo, env)
        print(f"\nfresh dvc repro: {time.monotonic() - started:.1f} s")
        commit(repo, "pipeline outputs")
        yield Pipeline(repo, head, env, mlflow.MlflowClient(srv.url), srv.artifact_root, fresh)


def test_repro_registers_a_challenger_with_lineage_and_metrics(pipeline):
    repo, client = pipeline.repo, pipeline.client
    for stage in ("synth", "split", "train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in pipeline.fresh.stdout
    receipt = json.loads((repo / "register.json").read_text())
    assert receipt["gate"] == "passed", receipt
    assert (receipt["version"], receipt["aliases"]) == (1, ["challenger"])
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    metrics = json.loads((repo / "metrics.json").read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    version = client.get_model_version("dsnet", "1")
    assert version.tags["git_sha"] == pipeline.head
    assert version.tags["data_version"] == lock["synth"]["outs"][0]["md5"]
    model_sections = [s for s in params if s != "register"]
    assert version.tags["params_hash"] == params_hash(params, model_sections)
    assert (version.tags["backbone"], version.tags["attention"]) == ("mobilenet_v3", "ds")
    assert float(version.tags["map50"]) == metrics["map50"]
    assert version.tags["gate"] == "passed"
    train_run_id = json.loads((repo / "models" / "train_run.json").read_text())["run_id"]
    assert version.run_id == train_run_id
    run = client.get_run(train_run_id)
    assert run.info.artifact_uri.startswith(f"{pipeline.artifact_root}/")
    assert {"loss", "map50"} <= set(run.data.metrics)
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.artifact_location.startswith(f"{pipeline.artifact_root}/")
    assert version.tags["review_report"] == f"runs:/{train_run_id}/review/report.html"
    artifacts = {a.path for a in client.list_artifacts(train_run_id, "review")}
    assert {"review/report.html", "review/evidence.json", "review/patients.json"} <= artifacts
    assert (repo / "review" / "report.html").stat().st_size > 10_000
    assert {d.dataset.digest for d in run.inputs.dataset_inputs} == {
        version.tags["data_version"][:36]
    }


def test_nothing_changed_nothing_runs(pipeline):
    started = time.monotonic()
    noop = checked(["dvc", "repro"], pipeline.repo, pipeline.env)
    print(f"\nno-op dvc repro: {time.monotonic() - started:.1f} s")
    assert "Running stage" not in noop.stdout
    assert noop.stdout.count("didn't change, skipping") == 5
    assert len(pipeline.client.search_model_versions("name = 'dsnet'")) == 1


def test_metrics_and_plots_are_readable_by_dvc(pipeline):
    repo = pipeline.repo
    shown = json.loads(checked(["dvc", "metrics", "show", "--json"], repo).stdout)
    workspace = shown.get("workspace", shown.get(""))["data"]
    metrics = json.loads((repo / "metrics.json").read_text())
    assert workspace["metrics.json"]["data"]["map50"] == metrics["map50"]
    assert workspace["register.json"]["data"]["version"] == 1
    plots = json.loads(checked(["dvc", "plots", "show", "--json"], repo).stdout)
    assert {"Training loss", "Confusion matrix"} <= set(plots["data"])
    # the tiny hold-out lacks a class, whose PR column is then absent from the CSV
    assert {error["name"] for error in plots.get("errors", [])} <= {"Precision-recall (IoU 0.5)"}


def test_a_train_parameter_invalidates_training_not_data(pipeline):
    path = pipeline.repo / "params.yaml"
    original = path.read_text()
    try:
        changed = deep_merge(yaml.safe_load(original), {"train": {"lr": 0.02}})
        path.write_text(yaml.safe_dump(changed, sort_keys=False))
        status = json.loads(checked(["dvc", "status", "--json"], pipeline.repo).stdout)
    finally:
        path.write_text(original)
    assert set(status) == {"train"}
    assert status["train"] == [{"changed deps": {"params.yaml": {"train": "modified"}}}]


def test_promoted_champion_serves_in_a_fresh_process(pipeline, tmp_path):
    repo, client, env = pipeline.repo, pipeline.client, pipeline.env
    promote = [sys.executable, "-m", "dsnet", "registry", "promote", "--version", "1"]
    promoted = run([*promote, "--reason", "e2e review"], repo, env)
    assert promoted.returncode == 0, promoted.stderr
    champion = client.get_model_version_by_alias("dsnet", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["promoted_by"] == "admin"  # the authenticated user

    served = checked([sys.executable, "-c", FRESH_PROCESS], tmp_path, env)
    result = json.loads(served.stdout.strip().splitlines()[-1])
    assert result["columns"] == list(OUTPUT_COLUMNS)
    assert result["rows"], "score_threshold 0 keeps every detection"
    assert result["rows"] == result["rows_hu"]  # DICOM path and HU array agree
    height, width = result["shape"]
    for x1, y1, x2, y2, label, score in result["rows"]:
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
        assert label in {"normal", "osteopenia", "osteoporosis"} and 0 <= score <= 1

    from pydicom.data import get_testdata_file

    out = tmp_path / "preds"
    predict = [sys.executable, "-m", "dsnet", "predict", get_testdata_file("CT_small.dcm")]
    predicted = run([*predict, "--model", "models:/dsnet@champion", "--out", str(out)], repo, env)
    assert predicted.returncode == 0, predicted.stderr
    record = json.loads((out / "CT_small.json").read_text())
    assert record["file"].endswith("CT_small.dcm") and record["shape"] == [height, width]


def test_a_stricter_gate_via_exp_run_reruns_only_register_and_registers_nothing(pipeline):
    repo, client = pipeline.repo, pipeline.client
    aliases_before = client.get_registered_model("dsnet").aliases
    try:
        strict = checked(["dvc", "exp", "run", "-S", "register.min_map50=0.99"], repo, pipeline.env)
        refused = json.loads((repo / "register.json").read_text())
    finally:
        checked(["git", "checkout", "--", "params.yaml", "dvc.lock", "register.json"], repo)
    assert "Running stage 'register'" in strict.stdout
    assert "Running stage 'train'" not in strict.stdout
    assert refused["gate"] == "failed" and not refused["registered"]
    map50 = next(c for c in refused["criteria"] if c["name"] == "map50")
    assert (map50["threshold"], map50["status"]) == (0.99, "fail")
    assert len(client.search_model_versions("name = 'dsnet'")) == 1
    assert client.get_registered_model("dsnet").aliases == aliases_before


def test_push_then_a_fresh_clone_pulls_identical_data(pipeline, s3_server, tmp_path):
    repo = pipeline.repo
    checked(["dvc", "push"], repo, s3_server.env)
    clone = tmp_path / "clone"
    checked(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    use_remote(clone, s3_server.url, ACCESS_KEY, SECRET_KEY)
    checked(["dvc", "pull"], clone, s3_server.env)
    assert tree_bytes(clone / "data" / "synthetic") == tree_bytes(repo / "data" / "synthetic")
    model = ("models", "model.pt")
    assert clone.joinpath(*model).read_bytes() == repo.joinpath(*model).read_bytes()
    assert json.loads(checked(["dvc", "status", "--json"], clone).stdout) == {}
