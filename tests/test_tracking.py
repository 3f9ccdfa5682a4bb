"""dsnet.tracking.runs: MLflow runs (SQLite store, a real server with S3), lineage tags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from servers import free_port

from dsnet.core.errors import InputError
from dsnet.tracking.lineage import lineage_tags
from dsnet.tracking.runs import start_run, tracking_uri

PARAMS = {
    "train": {"epochs": 2, "lr": 0.01, "augment": {"scale": [0.9, 1.1]}},
    "register": {"min_map50": 0.5},
}


@pytest.fixture()
def local_store(local_mlflow):
    return local_mlflow


def _client():
    import mlflow

    return mlflow.MlflowClient(tracking_uri())


def test_tracking_off_yields_a_tracker_that_records_nothing(tmp_path, monkeypatch):
    local_store = tmp_path
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DSNET_TRACKING", "off")
    (local_store / "note.txt").write_text("x")
    with start_run("train", params=PARAMS) as run:
        run.log_metrics({"loss": 1.0}, step=0)
        run.log_params({"a": 1})
        run.log_artifact(local_store / "note.txt")
        run.set_tags({"t": "v"})
    assert run.run_id is None
    assert not (local_store / "mlflow.db").exists()
    assert not (local_store / "mlartifacts").exists()


def test_run_records_params_metrics_artifacts_and_tags(local_store):
    (local_store / "metrics.json").write_text('{"map50": 0.7}')
    (local_store / "plots").mkdir()
    (local_store / "plots" / "pr.csv").write_text("recall,normal\n0,1\n")
    with start_run("train", params=PARAMS, tags={"data_version": "abc.dir"}) as run:
        for epoch, loss in enumerate([0.9, 0.5, 0.25]):
            run.log_metrics({"loss": loss, "ap": {"normal": 0.1 * epoch}, "cm": [[1]]}, epoch)
        run.log_artifact(local_store / "metrics.json")
        run.log_artifact(local_store / "plots")

    client = _client()
    record = client.get_run(run.run_id)
    assert record.info.status == "FINISHED"
    assert record.info.run_name == "train"
    assert record.data.params["train.epochs"] == "2"
    assert record.data.params["train.augment.scale"] == "[0.9, 1.1]"
    assert record.data.params["register.min_map50"] == "0.5"
    assert record.data.tags["dsnet.step"] == "train"
    assert record.data.tags["data_version"] == "abc.dir"
    assert "cm" not in record.data.metrics  # lists go to artifacts, not metrics
    history = client.get_metric_history(run.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.25)]
    assert client.get_metric_history(run.run_id, "ap.normal")[-1].value == pytest.approx(0.2)
    artifacts = {a.path for a in client.list_artifacts(run.run_id)}
    assert artifacts == {"config", "metrics.json", "plots"}
    assert [a.path for a in client.list_artifacts(run.run_id, "plots")] == ["plots/pr.csv"]
    config = Path(client.download_artifacts(run.run_id, "config/params.yaml", str(local_store)))
    assert yaml.safe_load(config.read_text()) == PARAMS
    # default store: SQLite in the working directory, artifacts under ./mlartifacts
    assert (local_store / "mlflow.db").is_file()
    assert record.info.artifact_uri.startswith((local_store / "mlartifacts").as_uri())


def test_a_failing_step_marks_its_run_failed(local_store):
    with pytest.raises(RuntimeError), start_run("evaluate") as run:
        raise RuntimeError("boom")
    assert _client().get_run(run.run_id).info.status == "FAILED"


def test_datasets_tables_and_system_metrics_are_recorded(local_store, monkeypatch):
    import time

    import dsnet.tracking.system_metrics

    data = local_store / "data" / "synthetic"
    data.mkdir(parents=True)
    (data / "annotations.json").write_text("{}")
    monkeypatch.setattr(dsnet.tracking.system_metrics, "SYSTEM_METRICS_INTERVAL_S", 0.2)
    with start_run("train", system_metrics=True) as run:
        run.log_dataset(data, "0123456789abcdef0123456789abcdef.dir", "training")
        run.log_table([{"patient": "P1", "correct": True}, {"patient": "P2", "correct": False}],
                      "review/patients.json")  # fmt: skip
        time.sleep(1.5)
    record = _client().get_run(run.run_id)
    (dataset,) = record.inputs.dataset_inputs
    assert (dataset.dataset.name, dataset.dataset.digest) == (
        "synthetic", "0123456789abcdef0123456789abcdef.dir"[:36]
    )  # fmt: skip
    assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == "training"
    assert any(key.startswith("system/cpu") for key in record.data.metrics)
    import json

    local = _client().download_artifacts(run.run_id, "review/patients.json", str(local_store))
    table = json.loads(Path(local).read_text())  # MLflow's table format
    assert table["columns"] == ["patient", "correct"]
    assert table["data"] == [["P1", True], ["P2", False]]


def test_resuming_a_run_logs_into_the_same_run(local_store):
    with start_run("train", params=PARAMS) as first:
        first.log_metrics({"loss": 0.5}, step=0)
    with start_run("evaluate", run_id=first.run_id, tags={"evaluated": "yes"}) as again:
        again.log_metrics({"map50": 0.8})
    record = _client().get_run(first.run_id)
    assert again.run_id == first.run_id
    assert record.data.metrics == {"loss": 0.5, "map50": 0.8}
    assert record.data.tags["evaluated"] == "yes"
    assert record.info.status == "FINISHED"


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
    }
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_lineage_tags_match_dvc_git_and_params(tmp_path):
    _git(tmp_path, "init", "-q")
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    data = tmp_path / "data" / "real"
    (data / "dicom" / "P1").mkdir(parents=True)
    (data / "dicom" / "P1" / "a.dcm").write_bytes(b"\x00\x01" * 100)
    (data / "annotations.json").write_text("{}")
    (data / "dicom" / ".a.dcm.123.tmp").write_text("half-written")  # ignored by .dvcignore
    (tmp_path / ".dvcignore").write_text(".*.tmp\n")
    subprocess.run(["dvc", "add", "-q", "data/real"], cwd=tmp_path, check=True)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "data")
    dvc_md5 = yaml.safe_load((tmp_path / "data" / "real.dvc").read_text())["outs"][0]["md5"]

    tags = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json,dsnet.tracking.lineage as t;"
            "print(json.dumps(t.lineage_tags('data/real', {'train': {'lr': 0.01}})))",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lineage = yaml.safe_load(tags)
    assert lineage["data_version"] == dvc_md5
    assert lineage["data_version"].endswith(".dir")
    assert lineage["git_sha"] == _git(tmp_path, "rev-parse", "HEAD")
    same = lineage_tags(data, {"train": {"lr": 0.01}, "register": {"min_map50": 0.9}})
    other = lineage_tags(data, {"train": {"lr": 0.02}})
    assert same["params_hash"] == lineage["params_hash"]  # gate thresholds do not count
    assert other["params_hash"] != lineage["params_hash"]
    (data / "annotations.json").write_text('{"images": []}')
    assert lineage_tags(data, {})["data_version"] != dvc_md5


def test_lineage_of_a_missing_data_dir_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="data dir not found"):
        lineage_tags(tmp_path / "nope", {})


def test_unreachable_tracking_server_fails_fast_with_one_line(local_store, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(InputError) as err, start_run("train"):
        pass
    assert str(err.value).startswith("MLFLOW_TRACKING_URI: tracking server")
    assert "unreachable" in str(err.value) and "\n" not in str(err.value)


def _use(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_server_run_stores_artifacts_in_s3(local_store, monkeypatch, mlflow_server):
    import boto3

    _use(monkeypatch, mlflow_server.env)
    (local_store / "metrics.json").write_text('{"map50": 0.7}')
    with start_run("evaluate", params={"evaluate": {"iou_threshold": 0.5}}) as run:
        run.log_artifact(local_store / "metrics.json")
    record = _client().get_run(run.run_id)
    assert record.info.artifact_uri.startswith(f"{mlflow_server.artifact_root}/")
    key = record.info.artifact_uri.removeprefix("s3://mlflow/") + "/metrics.json"
    s3 = boto3.client("s3", endpoint_url=mlflow_server.env["MLFLOW_S3_ENDPOINT_URL"])
    body = s3.get_object(Bucket="mlflow", Key=key)["Body"].read()
    assert body == b'{"map50": 0.7}'


def test_missing_s3_credentials_are_reported_clearly(local_store, monkeypatch, mlflow_server):
    _use(monkeypatch, mlflow_server.env)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(local_store / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(local_store / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(InputError, match="no S3 credentials") as err, start_run("train"):
        pass
    assert err.value.path == "AWS_ACCESS_KEY_ID"


def test_git_sha_outside_git_comes_from_the_image_revision(tmp_path, monkeypatch):
    from dsnet.tracking.lineage import git_sha

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("DSNET_GIT_SHA", raising=False)
    assert git_sha(tmp_path) == "unknown"
    monkeypatch.setenv("DSNET_GIT_SHA", "0123abc")
    assert git_sha(tmp_path) == "0123abc"
