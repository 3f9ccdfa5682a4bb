"""KFP components and their library steps (dsnet.platform), called directly.

The components' Python functions run here with real artifacts on local paths; the
library steps run against real stores: a git + DVC data repository with its remote on a
moto S3 server, and an MLflow SQLite registry. The one stand-in is the Kubernetes API
(no cluster here): an in-process CustomObjectsApi with TrainJob state transitions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from kfp import dsl
from kubernetes.client.exceptions import ApiException

from dsnet.core.errors import InputError
from dsnet.platform.datasource import fetch_dvc_data
from dsnet.platform.metrics_views import evaluation_markdown, kfp_confusion_matrix
from dsnet.platform.retraining import decision_markdown, retraining_decision
from dsnet.platform.run_params import KNOBS, parse_profile, resolve_run_params
from dsnet.platform.services import use_services
from dsnet.platform.trainjob import (
    TrainingJobError,
    job_name,
    job_state,
    run_trainjob,
    train_distributed,
    trainjob_manifest,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # components/ is a top-level folder beside dsnet/

from k8s_render import TRAINJOB_SCHEMA  # noqa: E402

from components.gate import gate  # noqa: E402
from components.resolve_params import resolve_params  # noqa: E402
from components.synth_data import synth_data  # noqa: E402

K8S_VERSION = "1.30.0"
METRICS = {
    "map50": 0.71,
    "recall": 0.9,
    "acc": 0.8,
    "hu_baseline_acc": 0.6,
    "patient_acc": 0.75,
    "hu_baseline_patient_acc": 0.5,
    "fps": 12.5,
    "device": "cpu",
    "n_images": 16,
    "n_patients": 2,
    "ap_per_class": {"normal": 0.8, "osteopenia": 0.62, "osteoporosis": None},
    "confusion_matrix": {
        "rows": ["normal", "osteopenia", "osteoporosis"],
        "columns": ["normal", "osteopenia", "osteoporosis", "missed"],
        "matrix": [[5, 1, 0, 1], [0, 4, 1, 0], [0, 0, 0, 0]],
    },
}


def artifact(kind, path: Path, **metadata):
    """A KFP artifact on a local path, as the executor hands it to a component."""
    return kind(name=path.name, uri=str(path), metadata=dict(metadata))


# ---------------------------------------------------------------------- run parameters


def test_resolve_params_merges_profile_then_set_knobs_and_keeps_integers(tmp_path, params):
    base = tmp_path / "params.yaml"
    base.write_text(yaml.safe_dump(params))
    profile = "train: {epochs: 3, momentum: 0.8}\nmodel: {attention: se}\n"
    knobs = {name: unset for name, (_, unset) in KNOBS.items()}
    knobs |= {"backbone": "vgg16", "min_map50": 0.0, "lr": 0.002}
    resolved = resolve_run_params(base, profile, knobs)
    assert resolved["train"]["epochs"] == 3 and isinstance(resolved["train"]["epochs"], int)
    assert resolved["train"]["momentum"] == 0.8
    assert resolved["model"]["attention"] == "se"  # profile, no knob set
    assert resolved["model"]["backbone"] == "vgg16"  # knob
    assert resolved["train"]["lr"] == 0.002
    assert resolved["register"]["min_map50"] == 0.0  # 0 is a real threshold, not "unset"
    assert resolved["register"]["min_recall"] == params["register"]["min_recall"]
    assert resolved["train"]["batch_size"] == params["train"]["batch_size"]


@pytest.mark.parametrize(
    ("profile", "reason"),
    [("train: [1, 2]", "must be a mapping"), ("- a", "mapping of sections"), (":", "YAML")],
)
def test_bad_profile_is_an_input_error(profile, reason):
    with pytest.raises(InputError, match=reason):
        parse_profile(profile)


def test_unknown_knob_is_an_input_error(tmp_path):
    (tmp_path / "p.yaml").write_text("train: {epochs: 1}\n")
    with pytest.raises(InputError, match="unknown pipeline knob"):
        resolve_run_params(tmp_path / "p.yaml", "", {"epoch": 3})


def test_resolve_params_component_writes_yaml_and_its_params_hash(tmp_path, params):
    from dsnet.tracking.lineage import lineage_tags

    base = tmp_path / "params.yaml"
    base.write_text(yaml.safe_dump(params))
    out = artifact(dsl.Artifact, tmp_path / "out" / "params")
    knobs = {name: unset for name, (_, unset) in KNOBS.items()} | {"epochs": 2}
    resolve_params.python_func(
        params_file=str(base), params_profile="model: {backbone: mobilenet_v3}", params=out, **knobs
    )
    written = yaml.safe_load(Path(out.path).read_text())
    assert written["train"]["epochs"] == 2
    assert out.metadata["model"] == "mobilenet_v3+" + params["model"]["attention"]
    (tmp_path / "d").mkdir()
    assert out.metadata["params_hash"] == lineage_tags(tmp_path / "d", written)["params_hash"]


def test_use_services_sets_clients_environment(monkeypatch):
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    assert use_services("", "") == {}
    assert "MLFLOW_TRACKING_URI" not in os.environ
    use_services("http://mlflow:5000", "http://minio:9000")
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == os.environ["AWS_ENDPOINT_URL"]


# ------------------------------------------------------------------------------- data


def test_synth_data_component_records_the_dvc_hash(tmp_path):
    from dsnet.tracking.lineage import data_version

    params_file = tmp_path / "params.yaml"
    params_file.write_text("synth: {patients: 2, seed: 5, slices_per_vertebra: 1}\n")
    data = artifact(dsl.Dataset, tmp_path / "data")
    synth_data.python_func(params=artifact(dsl.Artifact, params_file), data=data)
    assert data.metadata["patients"] == 2 and data.metadata["images"] == 8
    assert data.metadata["data_version"] == data_version(tmp_path / "data")
    assert data.metadata["data_version"].endswith(".dir")


@pytest.fixture(scope="module")
def data_repo(tmp_path_factory, s3_server):
    """A git data repository whose data dir lives only in its DVC remote on moto S3."""
    from dsnet.synth.generate import synthesize

    repo = tmp_path_factory.mktemp("data-repo")
    env = {**os.environ, **s3_server.env}

    def run(*cmd):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True, text=True)

    run("git", "init", "-q", "-b", "main")
    run("git", "config", "user.email", "ci@example.org")
    run("git", "config", "user.name", "ci")
    run("dvc", "init", "-q")
    run("dvc", "remote", "add", "-d", "storage", "s3://dsnet-data/pipeline-test")
    synthesize(repo / "data" / "synthetic", patients=2, seed=11, slices_per_vertebra=1)
    run("dvc", "add", "-q", "data/synthetic")
    run("dvc", "push", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "data v1")
    run("git", "tag", "data-v1")
    shutil.rmtree(repo / ".dvc" / "cache")  # only the remote has the files now
    shutil.rmtree(repo / "data" / "synthetic")
    dvc_file = yaml.safe_load((repo / "data" / "synthetic.dvc").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    return {"path": repo, "md5": dvc_file["outs"][0]["md5"], "commit": head.stdout.strip()}


def test_fetch_data_pulls_the_revision_from_the_s3_remote(
    data_repo, s3_server, tmp_path, monkeypatch
):
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint comes from the argument
    out = tmp_path / "fetched"
    fetched = fetch_dvc_data(
        str(data_repo["path"]), "data-v1", "data/synthetic", out, endpoint_url=s3_server.url
    )
    assert fetched["data_version"] == data_repo["md5"]  # the hash in the repo's .dvc file
    assert fetched["commit"] == data_repo["commit"]
    assert (fetched["patients"], fetched["images"]) == (2, 8)
    assert len(list((out / "dicom").rglob("*.dcm"))) == 8
    assert (out / "annotations.json").is_file()


@pytest.mark.parametrize(
    ("revision", "path", "reason"),
    [("data-v9", "data/synthetic", "unknown Git revision"), ("main", "data/real", "no such")],
)
def test_fetch_data_names_a_bad_revision_or_path(
    data_repo, s3_server, tmp_path, monkeypatch, revision, path, reason
):
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(InputError, match=reason):
        fetch_dvc_data(str(data_repo["path"]), revision, path, tmp_path / "out", s3_server.url)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ retraining


def _register_version(name: str, data_version: str, alias: str | None) -> str:
    import mlflow

    from dsnet.tracking.runs import configure_mlflow, ensure_experiment

    configure_mlflow()
    client = mlflow.MlflowClient()
    run = client.create_run(ensure_experiment())
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(
        name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    ).version
    client.set_model_version_tag(name, version, "data_version", data_version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return str(version)


def test_retraining_decision_against_the_champions_data_version(local_mlflow):
    params = {"register": {"model_name": "dsnet"}}
    first = retraining_decision("aaa.dir", params)
    assert first["retrain"] and "no champion" in first["reason"]

    _register_version("dsnet", "aaa.dir", "challenger")  # a challenger is not a champion
    assert retraining_decision("aaa.dir", params)["retrain"]

    champion = _register_version("dsnet", "aaa.dir", "champion")
    same = retraining_decision("aaa.dir", params)
    assert not same["retrain"]
    assert same["champion_version"] == champion and same["champion_data_version"] == "aaa.dir"
    assert "data unchanged" in same["reason"] and f"v{champion}" in same["reason"]
    assert "skip training" in decision_markdown(same)

    changed = retraining_decision("bbb.dir", params)
    assert changed["retrain"] and "aaa.dir" in changed["reason"] and "bbb.dir" in changed["reason"]
    forced = retraining_decision("aaa.dir", params, force=True)
    assert forced["retrain"] and forced["reason"].startswith("forced")


def test_retraining_decision_with_tracking_off(monkeypatch):
    monkeypatch.setenv("DSNET_TRACKING", "off")
    decision = retraining_decision("aaa.dir", {})
    assert decision["retrain"] and "tracking is off" in decision["reason"]


# ------------------------------------------------------------------- evaluation views


def test_evaluation_markdown_shows_metrics_per_class_ap_and_confusion():
    text = evaluation_markdown(METRICS)
    assert "| mAP@0.5 (class-aware) | 0.7100 |" in text
    assert "| osteopenia | 0.6200 |" in text
    assert "| osteoporosis | n/a |" in text  # undefined AP: class absent from the hold-out
    assert "| normal | 5 | 1 | 0 | 1 |" in text
    assert "16 slices of 2 patients" in text


def test_confusion_matrix_is_made_square_for_kfp():
    categories, matrix = kfp_confusion_matrix(METRICS)
    assert categories == ["normal", "osteopenia", "osteoporosis", "missed"]
    assert matrix == [[5, 1, 0, 1], [0, 4, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    metrics = dsl.ClassificationMetrics(name="confusion")
    metrics.log_confusion_matrix(categories, matrix)  # KFP accepts it
    rows = metrics.metadata["confusionMatrix"]["rows"]
    assert [r["row"] for r in rows][0] == [5, 1, 0, 1]
    broken = {"confusion_matrix": {**METRICS["confusion_matrix"], "columns": ["a", "b", "c", "x"]}}
    with pytest.raises(ValueError, match="unexpected confusion column"):
        kfp_confusion_matrix(broken)


@pytest.mark.parametrize(
    ("min_map50", "passed", "reason"),
    [(0.5, True, "thresholds passed"), (0.8, False, "failed: map50")],
)
def test_gate_component_decides_on_the_thresholds(tmp_path, min_map50, passed, reason):
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps(METRICS))
    settings = {"min_map50": min_map50, "min_recall": 0.8, "min_acc": 0.5, "beat_hu_baseline": True}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"register": settings}))
    criteria = artifact(dsl.Markdown, tmp_path / "criteria.md")
    result = gate.python_func(
        evaluation=artifact(dsl.Artifact, evaluation),
        params=artifact(dsl.Artifact, params_file),
        criteria=criteria,
    )
    assert result is passed
    assert criteria.metadata == {"passed": passed, "reason": reason}
    text = Path(criteria.path).read_text()
    assert f"# Registration gate: {reason}" in text
    assert "| map50 | 0.7100 | >= " in text
    assert "compared with the champion in the register step" not in text  # note stays in JSON
    assert "| vs_champion_map50 | 0.7100 | — | skipped |" in text


# ------------------------------------------------------------------------ TrainJob


class FakeCustomObjectsApi:
    """In-process stand-in for kubernetes.client.CustomObjectsApi (no cluster here).

    Stores created objects; every `get` moves a TrainJob one step along `states` (e.g.
    Created -> Complete), calling `on_success` when it completes, as the Trainer controller
    would after the nodes wrote their outputs.
    """

    def __init__(self, states, on_success=None, message=""):
        self.states = list(states)
        self.on_success = on_success
        self.message = message
        self.objects: dict[tuple[str, str], dict] = {}
        self.calls: list[str] = []
        self.deleted: list[str] = []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append("create")
        assert (group, version, plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
        key = (namespace, body["metadata"]["name"])
        if key in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.objects[key] = {**body, "status": {"conditions": []}}
        return self.objects[key]

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append("get")
        job = self.objects[(namespace, name)]
        if self.states:
            state = self.states.pop(0)
            message = self.message if state == "Failed" else f"job is {state.lower()}"
            job["status"]["conditions"].append(
                {"type": state, "status": "True", "reason": state, "message": message}
            )
            if state == "Complete" and self.on_success:
                self.on_success(job)
        return job

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.deleted.append(name)
        return self.objects.pop((namespace, name))


def _manifest(name="dsnet-train-abc"):
    return trainjob_manifest(
        name, "registry.example.com/dsnet:0.1.0", ["train", "/data/x"], namespace="kubeflow"
    )


def test_job_name_is_stable_per_run_and_a_dns_label():
    assert job_name("run-1") == job_name("run-1") != job_name("run-2")
    assert len(job_name("x" * 500)) <= 63 and job_name("RUN").islower()


def test_job_state_reads_the_terminal_conditions_first():
    assert job_state({}) == ("Pending", "")
    job = {
        "status": {
            "conditions": [
                {"type": "Created", "status": "True"},
                {"type": "Failed", "status": "True", "message": "OOMKilled"},
                {"type": "Complete", "status": "False"},
            ]
        }
    }
    assert job_state(job) == ("Failed", "OOMKilled")
    job["status"]["conditions"][1]["status"] = "False"
    assert job_state(job) == ("Created", "")


def test_run_trainjob_waits_until_complete():
    api = FakeCustomObjectsApi(["Created", "Created", "Complete"])
    lines: list[str] = []
    job = run_trainjob(api, _manifest(), timeout_s=60, poll_s=0, log=lines.append)
    assert job_state(job)[0] == "Complete"
    assert api.calls == ["create", "get", "get", "get"]
    assert lines == [
        "created TrainJob kubeflow/dsnet-train-abc",
        "TrainJob dsnet-train-abc: Created (job is created)",  # logged once per change
        "TrainJob dsnet-train-abc: Complete (job is complete)",
    ]


def test_run_trainjob_reports_a_failure_with_the_controllers_message():
    api = FakeCustomObjectsApi(["Created", "Failed"], message="node-0 exited with code 137")
    with pytest.raises(TrainingJobError, match="failed: node-0 exited with code 137"):
        run_trainjob(api, _manifest(), timeout_s=60, poll_s=0, log=lambda _: None)


def test_run_trainjob_times_out_and_deletes_the_job():
    api = FakeCustomObjectsApi(["Created"])  # then stays Created
    with pytest.raises(TrainingJobError, match="still Created after 0 s; deleted"):
        run_trainjob(api, _manifest(), timeout_s=0.2, poll_s=0.05, log=lambda _: None)
    assert api.calls.count("get") >= 3  # kept polling while it ran
    assert api.deleted == ["dsnet-train-abc"] and not api.objects


def test_a_retried_step_follows_the_job_it_created():
    api = FakeCustomObjectsApi(["Created", "Complete"])
    manifest = _manifest()
    api.create_namespaced_custom_object(
        "trainer.kubeflow.org", "v1alpha1", "kubeflow", "trainjobs", manifest
    )
    lines: list[str] = []
    run_trainjob(api, manifest, timeout_s=60, poll_s=0, log=lines.append)
    assert lines[0] == "TrainJob kubeflow/dsnet-train-abc exists (a retried step): following it"
    assert api.calls.count("create") == 2 and len(api.objects) == 1


def _inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    data = tmp_path / "inputs" / "data"
    (data / "dicom").mkdir(parents=True)
    (data / "annotations.json").write_text("{}")
    split_file = tmp_path / "inputs" / "split.json"
    split_file.write_text('{"train": ["P1"], "test": ["P2"]}')
    params_file = tmp_path / "inputs" / "params.yaml"
    params_file.write_text("train: {epochs: 1}\n")
    return data, split_file, params_file


def test_train_distributed_stages_inputs_runs_the_job_and_collects_the_model(tmp_path):
    data, split_file, params_file = _inputs(tmp_path)
    shared = tmp_path / "pvc"
    seen: dict = {}

    def nodes_train(job):  # what `dsnet train` on the nodes leaves on the volume
        args = job["spec"]["trainer"]["args"]
        seen["job"] = json.loads(json.dumps(job))
        seen["staged_data"] = sorted(p.name for p in Path(args[3]).iterdir())
        out = Path(args[args.index("--out") + 1])
        (out / "plots").mkdir(parents=True)
        (out / "model.pt").write_bytes(b"weights")
        (out / "last.ckpt").write_bytes(b"optimizer state")
        (out / "train_run.json").write_text('{"run_id": "r1"}')
        (out / "plots" / "train_loss.csv").write_text("epoch,loss\n1,0.5\n")

    api = FakeCustomObjectsApi(["Created", "Complete"], on_success=nodes_train)
    result = train_distributed(
        data, split_file, params_file, tmp_path / "model",
        api=api, run_id="run-42", image="registry.example.com/dsnet:0.1.0",
        namespace="kubeflow", shared_dir=shared, nodes=3, gpus_per_node=4,
        node_selector={"pool": "a100"}, image_pull_secrets=["registry"],
        env={"MLFLOW_TRACKING_URI": "http://mlflow:5000", "DSNET_KFP_RUN_ID": "run-42"},
        poll_s=0, log=lambda _: None,
    )  # fmt: skip
    name = job_name("run-42")
    assert result == {
        "job": name,
        "namespace": "kubeflow",
        "world_size": 12,
        "run_dir": str(shared / "runs" / name),
    }
    assert sorted(p.name for p in (tmp_path / "model").rglob("*")) == [
        "model.pt",
        "plots",
        "train_loss.csv",
        "train_run.json",
    ]  # fmt: skip  (no last.ckpt in the artifact)
    assert seen["staged_data"] == ["annotations.json", "dicom"]
    assert not (shared / "runs" / name / "data").exists()  # staged copy removed

    job = seen["job"]
    job.pop("status")
    jsonschema.Draft202012Validator(TRAINJOB_SCHEMA).validate(job)
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 4)
    run_dir = shared / "runs" / name
    assert trainer["command"] + trainer["args"] == [
        "torchrun", "--module", "dsnet", "train", str(run_dir / "data"),
        "--split", str(run_dir / "split.json"),
        "--out", str(run_dir / "model"), "--plots-dir", str(run_dir / "model" / "plots"),
        "--params", str(run_dir / "params.yaml"),
    ]  # fmt: skip
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 4
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["DSNET_KFP_RUN_ID"] == "run-42"  # the nodes' MLflow runs carry it
    (patch,) = job["spec"]["runtimePatches"]
    pod = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]
    assert pod["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "a100"}
    assert pod["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "registry"}]


def test_train_distributed_failure_keeps_no_model_and_no_staged_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "split.json").write_text("{}")
    (tmp_path / "params.yaml").write_text("{}")
    api = FakeCustomObjectsApi(["Created", "Failed"], message="NCCL timeout")
    with pytest.raises(TrainingJobError, match="NCCL timeout"):
        train_distributed(
            data, tmp_path / "split.json", tmp_path / "params.yaml", tmp_path / "model",
            api=api, run_id="run-7", image="dsnet:1", namespace="kubeflow",
            shared_dir=tmp_path / "pvc", nodes=2, gpus_per_node=1,
            poll_s=0, log=lambda _: None,
        )  # fmt: skip
    assert not (tmp_path / "model").exists()
    assert not (tmp_path / "pvc" / "runs" / job_name("run-7") / "data").exists()


# ------------------------------------------------------------- placement and the Model artifact


def test_placement_component_gpu_count_zero_is_a_cpu_pod():
    from components.placement import placement

    cpu = placement.python_func(
        gpu_count=0, gpu_type="nvidia.com/gpu", gpu_node_selector={"a": "b"}
    )
    assert (cpu.accelerator, cpu.gpus, cpu.eval_gpus) == ("", "0", "0")
    assert cpu.tolerations == [] and cpu.node_selector == {}
    assert (cpu.cpu_request, cpu.memory_limit) == ("1", "8G")
    gpu = placement.python_func(gpu_count=4, gpu_type="amd.com/gpu", gpu_node_selector={"a": "b"})
    assert (gpu.accelerator, gpu.gpus, gpu.eval_gpus) == ("amd.com/gpu", "4", "1")
    assert gpu.tolerations == [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert gpu.node_selector == {"a": "b"}
    with pytest.raises(InputError, match="gpu_count"):
        placement.python_func(gpu_count=-1, gpu_type="nvidia.com/gpu", gpu_node_selector={})


def test_model_artifact_leaves_the_resume_state_out(tmp_path):
    from dsnet.platform.model_artifact import publish_model

    train_dir = tmp_path / "train"
    (train_dir / "plots").mkdir(parents=True)
    for name, content in (("model.pt", b"w"), ("last.ckpt", b"opt"), ("train_run.json", b"{}")):
        (train_dir / name).write_bytes(content)
    (train_dir / "plots" / "train_loss.csv").write_text("epoch,loss\n")
    copied = publish_model(train_dir, tmp_path / "model")
    assert copied == ["model.pt", "plots/train_loss.csv", "train_run.json"]
    with pytest.raises(InputError, match="training wrote no checkpoint"):
        publish_model(tmp_path / "empty", tmp_path / "other")


def test_mlflow_runs_of_a_pipeline_step_carry_the_kfp_run_and_pipeline_version(
    local_mlflow, monkeypatch
):
    import mlflow

    from dsnet.tracking.runs import start_run

    for key in ("DSNET_KFP_RUN_ID", "DSNET_PIPELINE_VERSION"):
        monkeypatch.delenv(key, raising=False)
    use_services("", "", "kfp-run-9", "0.1.0+abc123")
    try:
        with start_run(step="evaluate") as run:
            run_id = run.run_id
    finally:
        for key in ("DSNET_KFP_RUN_ID", "DSNET_PIPELINE_VERSION"):
            os.environ.pop(key, None)
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    assert tags["kfp.run_id"] == "kfp-run-9"
    assert tags["kfp.pipeline_version"] == "0.1.0+abc123"


def test_split_component_keeps_the_split_carried_by_an_intake_data_dir(tmp_path):
    from types import SimpleNamespace

    from components.split import split as split_component
    from dsnet.data.contract import load_data_dir
    from dsnet.data.split import read_split, split_patients, write_split
    from dsnet.synth.generate import synthesize

    data_dir = tmp_path / "data"
    synthesize(data_dir, patients=6, seed=3, slices_per_vertebra=1)
    dataset = load_data_dir(data_dir)
    default = split_patients(dataset, test_fraction=0.2, seed=0)
    # The carried split swaps one test patient into train: the component must keep it.
    moved = default["test"][0]
    carried = {**default, "train": sorted([*default["train"], moved]),
               "test": [p for p in default["test"] if p != moved]}  # fmt: skip
    write_split(carried, data_dir / "split.json")
    params_file = tmp_path / "params.yaml"
    params_file.write_text("split:\n  test_fraction: 0.2\n  seed: 0\n")

    out = SimpleNamespace(path=str(tmp_path / "split_out.json"), metadata={})
    split_component.python_func(
        data=SimpleNamespace(path=str(data_dir)),
        params=SimpleNamespace(path=str(params_file)),
        patient_split=out,
    )
    result = read_split(out.path)
    assert moved in result["train"]
    assert set(carried["test"]) <= set(result["test"])
    assert out.metadata["train_patients"] == len(result["train"])
