"""The compiled Kubeflow pipeline, its submission, and a whole local run with kfp.local.

- The committed YAML is what ``pipeline/compile.py`` writes, and it shows the platform
  wiring: run-time placement, secrets, volumes, retries, deliberate caching, registration
  only under the gate, training only when the data changed (how it meets the rendered
  manifests on a cluster: ``tests/test_cluster.py``).
- ``dsnet pipeline run | schedule`` talk to a real HTTP server on 127.0.0.1 that answers
  like the KFP API and records the requests (there is no KFP server here).
- ``dsnet pipeline local`` runs the compiled pipeline with kfp.local against a real MLflow
  server (artifacts in moto S3): by default the fast path (the champion was trained on
  this data: the run ends at ``check_data_changed``); marked slow, the whole pipeline on
  the synthetic data with tiny parameters, which registers a version with its lineage and
  then ends early on a second run.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import yaml
from servers import free_port

from dsnet.core.errors import InputError
from dsnet.platform.arguments import (
    PROFILE_PARAMETER,
    kfp_cron,
    pipeline_arguments,
    pipeline_inputs,
    profile_from,
)
from dsnet.platform.run_params import KNOBS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline" / "dsnet_pipeline.yaml"
COMPILE = ROOT / "pipeline" / "compile.py"
DEFAULT_IMAGE = "dsnet:0.1.0"  # infra/k8s/image/kustomization.yaml


def dsnet(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "dsnet", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def compile_to(out: Path, **env_changes: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DSNET_IMAGE"} | env_changes
    return subprocess.run(
        [sys.executable, str(COMPILE), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def compiled():
    spec, platform = yaml.safe_load_all(PACKAGE.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def tasks(spec: dict):
    """Every task of the DAG: (path of task names, task spec, component name, conditions)."""

    def walk(component: dict, path: list[str], conditions: list[str]):
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            ref = task["componentRef"]["name"]
            here = conditions + [task.get("triggerPolicy", {}).get("condition", "")]
            yield path + [name], task, ref, [c for c in here if c]
            child = spec["components"].get(ref, {})
            if "dag" in child:
                yield from walk(child, path + [name], [c for c in here if c])

    yield from walk(spec["root"], [], [])


def executor_of(spec: dict, component: str) -> str:
    return spec["components"][component]["executorLabel"]


def steps(spec: dict, step: str):
    """(task, component, conditions) of every task that runs component `step`."""
    for _path, task, ref, conditions in tasks(spec):
        if "executorLabel" in spec["components"][ref] and ref.startswith(f"comp-{step}"):
            suffix = ref.removeprefix(f"comp-{step}")
            if suffix == "" or suffix.replace("-", "").isdigit():
                yield task, ref, conditions


# ----------------------------------------------------------------------------- compile


def test_committed_yaml_is_what_compile_writes(tmp_path):
    result = compile_to(tmp_path / "fresh.yaml")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fresh.yaml").read_text() == PACKAGE.read_text(), (
        "pipeline/dsnet_pipeline.yaml is stale: run python pipeline/compile.py"
    )
    check = subprocess.run(
        [sys.executable, str(COMPILE), "--check"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "DSNET_IMAGE"},
        timeout=120,
    )
    assert check.returncode == 0 and "up to date" in check.stdout


def test_image_comes_from_dsnet_image_only(tmp_path):
    result = compile_to(tmp_path / "mine.yaml", DSNET_IMAGE="registry.example.org/dsnet:9.9")
    assert result.returncode == 0, result.stderr
    spec = next(yaml.safe_load_all((tmp_path / "mine.yaml").read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example.org/dsnet:9.9"}
    distributed = next(steps(spec, "train-distributed"))[0]
    image = distributed["inputs"]["parameters"]["image"]["runtimeValue"]["constant"]
    assert image == "registry.example.org/dsnet:9.9"  # the TrainJob runs the same image


def test_the_image_is_named_once_for_pipeline_and_overlays(compiled):
    from components import image_reference

    setting = yaml.safe_load((ROOT / "infra" / "k8s" / "image" / "kustomization.yaml").read_text())
    assert image_reference() == DEFAULT_IMAGE == "{newName}:{newTag}".format(**setting["images"][0])
    for overlay in ("local", "gpu"):
        kustomization = ROOT / "infra" / "k8s" / "overlays" / overlay / "kustomization.yaml"
        text = yaml.safe_load(kustomization.read_text())
        assert "../../image" in text["components"] and "images" not in text, overlay


def test_image_pull_secrets_reach_every_step_and_the_trainjob(tmp_path):
    result = compile_to(tmp_path / "private.yaml", DSNET_IMAGE_PULL_SECRETS="registry-a")
    assert result.returncode == 0, result.stderr
    spec, platform = yaml.safe_load_all((tmp_path / "private.yaml").read_text())
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for label in spec["deploymentSpec"]["executors"]:
        assert [s["secretName"] for s in k8s[label]["imagePullSecret"]] == ["registry-a"], label
    distributed = next(steps(spec, "train-distributed"))[0]
    secrets = distributed["inputs"]["parameters"]["image_pull_secrets"]["runtimeValue"]
    assert secrets["constant"] == ["registry-a"]


def test_every_step_runs_the_dsnet_image_and_installs_nothing(compiled):
    spec, _ = compiled
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        assert container["image"] == DEFAULT_IMAGE, name
        script = " ".join(container["command"] + container.get("args", []))
        assert "pip install" not in script and "kfp.dsl.executor_main" in script, name


def test_parameter_defaults_leave_every_knob_unset(compiled):
    inputs = pipeline_inputs(PACKAGE)
    for knob, (_, unset) in KNOBS.items():
        assert inputs[knob]["default"] == unset, knob
    assert inputs["data_repo"]["default"] == ""  # embedded synthetic data by default
    assert inputs["distributed"]["default"] is False and inputs["force"]["default"] is False
    assert inputs[PROFILE_PARAMETER]["type"] == "STRING"


# ------------------------------------------------------------------- platform wiring


def test_training_and_evaluation_are_placed_by_the_placement_step_at_run_time(compiled):
    spec, platform = compiled
    for step, gpus in (("train", "gpus"), ("evaluate", "eval_gpus")):
        found = list(steps(spec, step))
        assert found, step
        for _, ref, _ in found:
            label = executor_of(spec, ref)
            resources = spec["deploymentSpec"]["executors"][label]["container"]["resources"]
            channel = r"\{\{\$\.inputs\.parameters\['pipelinechannel--placement(-\d+)?-%s'\]\}\}"
            assert re.fullmatch(channel % "accelerator", resources["accelerator"]["resourceType"])
            assert re.fullmatch(channel % gpus, resources["accelerator"]["resourceCount"])
            assert re.fullmatch(channel % "cpu_request", resources["resourceCpuRequest"])
            assert re.fullmatch(channel % "memory_limit", resources["resourceMemoryLimit"])
            k8s = platform[label]
            selector = k8s["nodeSelector"]["nodeSelectorJson"]["taskOutputParameter"]
            assert selector["outputParameterKey"] == "node_selector"
            (toleration,) = k8s["tolerations"]
            assert toleration["tolerationJson"]["taskOutputParameter"]["outputParameterKey"] == (
                "tolerations"
            )
            assert k8s["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
            assert k8s["podMetadata"]["labels"]["dsnet.io/mlflow-client"] == "true"
    inputs = pipeline_inputs(PACKAGE)
    assert inputs["gpu_count"]["default"] == 0  # runs anywhere, e.g. kind
    assert inputs["gpu_node_selector"]["default"] == {}


def test_credentials_come_from_kubernetes_secrets(compiled):
    spec, platform = compiled
    s3_steps = ("fetch-data", "train", "evaluate", "register")
    mlflow_steps = ("check-data-changed", "train", "evaluate", "register")
    for step in set(s3_steps) | set(mlflow_steps):
        for _, ref, _ in steps(spec, step):
            secrets = {s["secretName"]: s for s in platform[executor_of(spec, ref)]["secretAsEnv"]}
            assert ("s3-credentials" in secrets) == (step in s3_steps), step
            if step in s3_steps:
                s3 = secrets["s3-credentials"]
                assert {k["envVar"] for k in s3["keyToEnv"]} == {
                    "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY",
                }
                assert s3["optional"] is False
            if step in mlflow_steps:
                assert secrets["mlflow-credentials"]["optional"] is True
    for step in ("synth-data", "resolve-params", "split", "gate", "placement"):
        for _, ref, _ in steps(spec, step):  # need no credentials
            assert "secretAsEnv" not in platform.get(executor_of(spec, ref), {}), step


def test_distributed_training_shares_the_data_volume_with_its_trainjob(compiled):
    spec, platform = compiled
    found = list(steps(spec, "train-distributed"))
    assert found
    for task, ref, conditions in found:
        k8s = platform[executor_of(spec, ref)]
        assert k8s["pvcMount"][0]["constant"] == "dsnet-data"
        assert k8s["pvcMount"][0]["mountPath"] == "/data"
        assert k8s["fieldPathAsEnv"] == [
            {"fieldPath": "metadata.namespace", "name": "POD_NAMESPACE"}
        ]
        assert "secretAsEnv" not in k8s  # the TrainJob's runtime reads s3-credentials itself
        params = task["inputs"]["parameters"]
        assert params["kfp_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
        assert "accelerator" not in spec["deploymentSpec"]["executors"][executor_of(spec, ref)][
            "container"
        ].get("resources", {})  # the launcher waits; the nodes hold the GPUs
        assert any("distributed'] == false)" in c and c.startswith("!") for c in conditions)


def test_steps_that_talk_to_mlflow_s3_or_git_retry_with_backoff(compiled):
    spec, _ = compiled
    retried = ("fetch-data", "version-data", "check-data-changed", "train",
               "train-distributed", "evaluate", "register")  # fmt: skip
    for step in retried:
        for task, _, _ in steps(spec, step):
            assert task["retryPolicy"] == {
                "maxRetryCount": 3,
                "backoffDuration": "30s",
                "backoffFactor": 2.0,
                "backoffMaxDuration": "600s",
            }, step
    for step in ("resolve-params", "synth-data", "split", "gate", "placement"):
        for task, _, _ in steps(spec, step):
            assert "retryPolicy" not in task, step


def test_steps_that_start_mlflow_runs_get_the_kfp_run_id_and_pipeline_version(compiled):
    from pipeline.dsnet_pipeline import PIPELINE_VERSION

    spec, _ = compiled
    for step in ("train", "evaluate", "register", "version-data", "train-distributed"):
        for task, _, _ in steps(spec, step):
            params = task["inputs"]["parameters"]
            assert params["kfp_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
            assert params["pipeline_version"]["runtimeValue"]["constant"] == PIPELINE_VERSION
    assert re.fullmatch(r"\d+\.\d+\.\d+.*\+[0-9a-f]{12}", PIPELINE_VERSION)


def test_the_retraining_check_reads_the_data_version_without_the_data(compiled):
    spec, _ = compiled
    for _, ref, _ in steps(spec, "check-data-changed"):
        inputs = spec["components"][ref]["inputDefinitions"]
        assert "data" not in inputs.get("artifacts", {})  # no download of the data dir
        assert inputs["parameters"]["data_version"]["parameterType"] == "STRING"


def test_registration_only_runs_when_the_gate_passed(compiled):
    spec, _ = compiled
    registers = list(steps(spec, "register"))
    assert len(registers) >= 2  # single-node and distributed branches
    for task, _, conditions in registers:
        assert conditions[-1].endswith("-Output'] == true")
        assert "pipelinechannel--gate" in conditions[-1]
        assert task.get("cachingOptions", {}).get("enableCache") is not True


def test_training_only_runs_when_the_data_changed_or_forced(compiled):
    spec, _ = compiled
    for step in ("split", "train", "train-distributed", "evaluate", "gate", "register"):
        for _, _, conditions in steps(spec, step):
            assert any("check-data-changed-Output'] == true" in c for c in conditions), step
    for _, _, conditions in steps(spec, "check-data-changed"):
        assert not any("check-data-changed" in c for c in conditions)


def test_caching_is_set_deliberately_per_step(compiled):
    spec, _ = compiled
    expected = {
        "resolve-params": True,
        "synth-data": True,
        "check-data-changed": False,  # the registry changes between runs
        "split": True,
        "train": True,
        "evaluate": True,
        "gate": True,
        "register": False,  # writes the registry
    }
    for step, enabled in expected.items():
        for task, _, _ in steps(spec, step):
            assert task.get("cachingOptions", {}).get("enableCache", False) is enabled, step
    moving = [
        task
        for task, _, _ in steps(spec, "fetch-data")
        if "componentInputParameter" in task["inputs"]["parameters"]["revision"]
    ]
    assert moving and all(not t.get("cachingOptions", {}).get("enableCache") for t in moving)


# -------------------------------------------------------------------------- arguments


def test_pipeline_arguments_are_checked_against_the_compiled_parameters(tmp_path):
    profile_file = tmp_path / "paper.yaml"
    profile_file.write_text("train: {epochs: 24, lr: 0.02}\n")
    profile = profile_from([profile_file], ["train.epochs=30", "model.attention=ds"])
    args = pipeline_arguments(PACKAGE, {"lr": 1, "force": True, "nodes": 3}, profile)
    assert args["lr"] == 1.0 and isinstance(args["lr"], float)
    assert args["force"] is True and args["nodes"] == 3
    sent = yaml.safe_load(args[PROFILE_PARAMETER])
    assert sent == {"train": {"epochs": 30, "lr": 0.02}, "model": {"attention": "ds"}}
    with pytest.raises(InputError, match="no such parameter"):
        pipeline_arguments(PACKAGE, {"epoch": 3})
    with pytest.raises(InputError, match="expected NUMBER_INTEGER"):
        pipeline_arguments(PACKAGE, {"epochs": "3"})
    with pytest.raises(InputError, match="expected NUMBER_INTEGER"):
        pipeline_arguments(PACKAGE, {"nodes": True})
    with pytest.raises(InputError, match="not a compiled KFP pipeline"):
        pipeline_inputs(profile_file)


def test_cron_expressions_get_kfps_seconds_field():
    assert kfp_cron("0 3 * * 0") == "0 0 3 * * 0"
    assert kfp_cron("30 0 3 * * 0") == "30 0 3 * * 0"
    with pytest.raises(InputError, match="--cron"):
        kfp_cron("weekly")


# --------------------------------------------------- submission against an HTTP server


class RecordingKfpApi(http.server.BaseHTTPRequestHandler):
    """Answers the KFP v2beta1 calls the client makes and records each request."""

    calls: list[dict] = []
    status = 200

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body: dict | None) -> None:
        self.calls.append(
            {
                "method": self.command,
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "body": body,
            }
        )

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._record(None)
        if self.status != 200:
            self.send_error(self.status, "Unauthorized")
            return
        self._answer({"experiments": [], "total_size": 0} if "experiments" in self.path else {})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self._record(body)
        if self.path.endswith("/experiments"):
            self._answer({"experiment_id": "exp-7", "display_name": body["display_name"]})
        elif self.path.endswith("/recurringruns"):
            self._answer({"recurring_run_id": "rr-9", "display_name": body["display_name"]})
        else:
            self._answer({"run_id": "run-3", "display_name": body["display_name"]})

    def log_message(self, *args):
        pass


@pytest.fixture()
def kfp_api():
    RecordingKfpApi.calls = []
    RecordingKfpApi.status = 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingKfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", RecordingKfpApi
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _posted(api, suffix: str) -> dict:
    return next(c for c in api.calls if c["method"] == "POST" and c["path"].endswith(suffix))


def test_run_submits_the_compiled_pipeline_with_its_arguments(kfp_api):
    host, api = kfp_api
    env = {**os.environ, "KF_PIPELINES_TOKEN": "secret-token"}
    result = dsnet(
        "pipeline", "run", "--host", host, "--package", str(PACKAGE),
        "--data-repo", "https://git.example.org/dsnet-data.git", "--revision", "data-v3",
        "-a", "epochs=30", "-a", "distributed=true", "-S", "train.momentum=0.95",
        "--service-account", "dsnet-pipeline", "--run-name", "nightly", "--no-cache",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"run run-3: {host}/#/runs/details/run-3" in result.stdout
    run = _posted(api, "/apis/v2beta1/runs")
    body = run["body"]
    assert body["display_name"] == "nightly" and body["service_account"] == "dsnet-pipeline"
    assert body["experiment_id"] == "exp-7"
    submitted = body["pipeline_spec"]["pipeline_spec"]  # with the platform spec beside it
    assert submitted["pipelineInfo"]["name"] == "dsnet-training"
    platform = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    train_k8s = platform["deploymentSpec"]["executors"]["exec-train"]
    assert train_k8s["tolerations"][0]["tolerationJson"]["taskOutputParameter"] == {
        "producerTask": "placement",
        "outputParameterKey": "tolerations",
    }
    parameters = body["runtime_config"]["parameters"]
    assert parameters["data_repo"] == "https://git.example.org/dsnet-data.git"
    assert parameters["data_revision"] == "data-v3"
    assert parameters["epochs"] == 30 and parameters["distributed"] is True
    assert yaml.safe_load(parameters[PROFILE_PARAMETER]) == {"train": {"momentum": 0.95}}
    assert "force" not in parameters  # not given: the compiled default applies
    tasks_caching = [
        t.get("cachingOptions", {})
        for c in submitted["components"].values()
        for t in c.get("dag", {}).get("tasks", {}).values()
    ]
    assert tasks_caching and not any(o.get("enableCache") for o in tasks_caching)
    assert {c["auth"] for c in api.calls} == {"Bearer secret-token"}


def test_schedule_creates_a_recurring_run_without_catch_up(kfp_api):
    host, api = kfp_api
    env = {k: v for k, v in os.environ.items() if k != "KF_PIPELINES_TOKEN"}
    result = dsnet(
        "pipeline", "schedule", "--host", host, "--package", str(PACKAGE),
        "--cron", "0 3 * * 0", "--data-repo", "https://git.example.org/dsnet-data.git",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "recurring run rr-9 (0 0 3 * * 0)" in result.stdout
    body = _posted(api, "/apis/v2beta1/recurringruns")["body"]
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 0"}}
    assert body["max_concurrency"] == 1 and body["no_catchup"] is True
    assert body["mode"] == "ENABLE" and body["display_name"] == "dsnet-retraining"
    assert body["experiment_id"] == "exp-7"
    assert body["runtime_config"]["parameters"] == {
        "data_repo": "https://git.example.org/dsnet-data.git"
    }
    assert all(c["auth"] is None for c in api.calls)  # no token given


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-a", "epochz=3"], "pipeline argument epochz: no such parameter"),
        (["-a", "gpu_count=two"], "expected NUMBER_INTEGER"),
        (["--cron", "weekly"], "--cron"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(kfp_api, args, message):
    host, api = kfp_api
    command = "schedule" if "--cron" in args else "run"
    result = dsnet("pipeline", command, "--host", host, "--package", str(PACKAGE), *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not [c for c in api.calls if c["method"] == "POST"]  # nothing submitted


def test_refused_or_unreachable_server_exits_2_naming_the_host(kfp_api, tmp_path):
    host, api = kfp_api
    api.status = 401
    refused = dsnet("pipeline", "run", "--host", host, "--package", str(PACKAGE))
    assert refused.returncode == 2
    assert f"error: {host}: KFP API answered 401" in refused.stderr
    assert "KF_PIPELINES_TOKEN" in refused.stderr
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = dsnet("pipeline", "run", "--host", closed, "--package", str(PACKAGE))
    assert unreachable.returncode == 2
    assert f"error: {closed}: KFP API unreachable" in unreachable.stderr
    missing = dsnet("pipeline", "run", "--host", host, "--package", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "compiled pipeline not found" in missing.stderr


# ------------------------------------------------------------------------ kfp.local run


TINY = {
    "synth": {"patients": 4, "seed": 7, "slices_per_vertebra": 1},  # 2 train / 2 test patients
    "split": {"test_fraction": 0.5},
    "preprocess": {"spacing_mm": 3.0, "canvas_px": 128},
    "model": {"backbone": "mobilenet_v3"},
    "train": {"epochs": 1, "batch_size": 2, "workers": 0, "warmup_iters": 1, "lr_milestones": []},
    "evaluate": {"fps_warmup": 0},
    "register": {"min_map50": 0.0, "min_recall": 0.0, "min_acc": 0.0, "beat_hu_baseline": False},
}


def _task_output(run_root: Path, task: str) -> dict:
    return json.loads((run_root / task / "executor_output.json").read_text())


def _artifact_metadata(run_root: Path, task: str, name: str) -> dict:
    return _task_output(run_root, task)["artifacts"][name]["artifacts"][0]["metadata"]


def _runs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def local_workdir(root: Path, model_name: str) -> tuple[Path, str]:
    """A git work tree with params.yaml and the tiny profile; returns it and its HEAD."""
    work = root / "work"
    work.mkdir()
    shutil.copyfile(ROOT / "params.yaml", work / "params.yaml")
    profile = {**TINY, "register": {**TINY["register"], "model_name": model_name}}
    (work / "tiny.yaml").write_text(yaml.safe_dump(profile))
    git = {"cwd": work, "check": True, "capture_output": True, "text": True}
    subprocess.run(["git", "init", "-q"], **git)
    subprocess.run(["git", "add", "params.yaml"], **git)
    subprocess.run(
        ["git", "-c", "user.name=ci", "-c", "user.email=ci@x", "commit", "-qm", "params"], **git
    )
    return work, subprocess.run(["git", "rev-parse", "HEAD"], **git).stdout.strip()


def local_env(mlflow_server, model_name: str) -> dict[str, str]:
    return {
        **os.environ,
        **mlflow_server.env,
        "DSNET_TRACKING": "on",
        "MLFLOW_EXPERIMENT_NAME": model_name,
        "OMP_NUM_THREADS": "1",
    }


LOCAL_RUN = ["pipeline", "local", "--package", str(PACKAGE), "-p", "tiny.yaml", "--out", "out"]


def assert_ended_at_the_check(run: Path, stdout: str, champion: str) -> None:
    assert f"check-data-changed: data unchanged: champion v{champion} was trained on" in stdout
    assert "register: gate" not in stdout
    assert sorted(p.name for p in run.iterdir()) == [
        "check-data-changed",
        "resolve-params",
        "synth-data",
    ]
    decision = (run / "check-data-changed" / "decision").read_text()
    assert "# Retraining check: skip training" in decision
    assert _task_output(run, "check-data-changed")["parameterValues"] == {"Output": False}


def test_local_run_ends_early_when_the_champion_was_trained_on_this_data(
    mlflow_server, tmp_path, monkeypatch
):
    """The fast local run: compiled YAML, kfp.local, conditions, a real MLflow registry."""
    import mlflow

    from dsnet.synth.generate import synthesize
    from dsnet.tracking.lineage import data_version

    model_name = f"dsnet-kfp-{uuid.uuid4().hex[:8]}"
    work, _ = local_workdir(tmp_path, model_name)
    same = synthesize(tmp_path / "same-data", **TINY["synth"]).out_dir  # deterministic
    client = mlflow.MlflowClient(mlflow_server.url)
    client.create_registered_model(model_name)
    version = client.create_model_version(model_name, source="s3://mlflow/artifacts/none")
    client.set_model_version_tag(model_name, version.version, "data_version", data_version(same))
    client.set_registered_model_alias(model_name, "champion", version.version)

    result = dsnet(*LOCAL_RUN, env=local_env(mlflow_server, model_name), cwd=work, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = _runs(work / "out")
    assert_ended_at_the_check(run, result.stdout, version.version)
    synthesized = _artifact_metadata(run, "synth-data", "data")
    assert synthesized["data_version"] == data_version(same)
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1


@pytest.mark.slow
def test_local_run_registers_a_version_with_lineage_then_skips_unchanged_data(
    mlflow_server, tmp_path, monkeypatch
):
    """The whole pipeline with kfp.local: trains, evaluates, gates, registers (3-4 min here)."""
    import mlflow

    from dsnet.lifecycle.registry.promotion import promote
    from dsnet.tracking.lineage import data_version

    model_name = f"dsnet-kfp-{uuid.uuid4().hex[:8]}"
    work, head = local_workdir(tmp_path, model_name)
    env = local_env(mlflow_server, model_name)

    first = dsnet(*LOCAL_RUN, env=env, cwd=work, timeout=540)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"register: gate passed as models:/{model_name}/1" in first.stdout
    assert f"check-data-changed: no champion of '{model_name}' yet" in first.stdout
    run = _runs(work / "out")[0]

    client = mlflow.MlflowClient(mlflow_server.url)
    version = client.get_model_version(model_name, "1")
    synthesized = _artifact_metadata(run, "synth-data", "data")
    resolved = _artifact_metadata(run, "resolve-params", "params")
    assert version.tags["git_sha"] == head
    assert version.tags["data_version"] == synthesized["data_version"]
    assert synthesized["data_version"] == data_version(run / "synth-data" / "data")
    assert version.tags["params_hash"] == resolved["params_hash"]
    assert (version.tags["backbone"], version.tags["attention"]) == ("mobilenet_v3", "ds")
    assert "challenger" in version.aliases
    evaluation = json.loads((run / "evaluate" / "evaluation" / "metrics.json").read_text())
    assert version.tags["map50"] == f"{evaluation['map50']:.6g}"
    report = (run / "evaluate" / "report").read_text()
    assert "mAP@0.5 (class-aware)" in report and "Confusion matrix" in report
    confusion = _artifact_metadata(run, "evaluate", "confusion")["confusionMatrix"]
    assert len(confusion["rows"]) == len(confusion["annotationSpecs"]) == 4
    receipt = json.loads((run / "register" / "receipt").read_text())
    assert receipt["gate"] == "passed" and receipt["version"] == 1

    for key, value in mlflow_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DSNET_TRACKING", "on")
    promote(model_name, 1, "kfp.local pipeline test")

    second = dsnet(*LOCAL_RUN, env=env, cwd=work, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    rerun = _runs(work / "out")[-1]
    assert rerun != run
    assert_ended_at_the_check(rerun, second.stdout, "1")
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1


def without_retries(tree):
    """A compiled pipeline (YAML tree) with every task's retry policy removed."""
    if isinstance(tree, dict):
        return {k: without_retries(v) for k, v in tree.items() if k != "retryPolicy"}
    return [without_retries(v) for v in tree] if isinstance(tree, list) else tree


def test_local_run_failure_names_the_failed_task_in_one_line(tmp_path):
    shutil.copyfile(ROOT / "params.yaml", tmp_path / "params.yaml")
    env = {**os.environ, "DSNET_TRACKING": "off"}
    missing = tmp_path / "no-such-repo"
    # fetch-data retries 3 times with 30/60/120 s back-off (checked above): 3.5 min of
    # waiting for a repository that cannot appear, so this run takes the package without them
    package = tmp_path / "no_retries.yaml"
    documents = list(yaml.safe_load_all(PACKAGE.read_text()))
    assert "retryPolicy" in PACKAGE.read_text()
    package.write_text(yaml.safe_dump_all([without_retries(d) for d in documents], sort_keys=False))
    result = dsnet(
        "pipeline", "local", "--package", str(package), "--out", "out",
        "--data-repo", str(missing), env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "\x1b[" not in result.stderr
    assert "Inner task failed: 'fetch-data'" in result.stderr
    assert f"{missing}@main: cannot fetch data/synthetic" in result.stdout  # the step's log
