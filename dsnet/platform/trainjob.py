"""Scale-out ``dsnet train`` as a Kubeflow Trainer v2 ``TrainJob``, from a pipeline step.

:func:`trainjob_manifest` builds a ``trainer.kubeflow.org/v1alpha1`` TrainJob on the stack's
``TrainingRuntime`` ``dsnet-torch-distributed`` (``infra/k8s/base/trainer``: upstream's
``torch-distributed`` made Pod Security "restricted"). Every node runs
``torchrun --module dsnet train ...``; the Trainer's torch plugin sets ``PET_NNODES``,
``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` in the
container ``node``, which torchrun reads as its defaults, so the command carries no
rendezvous flags. World size ``nodes * max(gpus_per_node, 1)``.

The pipeline's ``train_distributed`` step runs on a small CPU pod that mounts the shared
data volume (a ReadWriteMany PVC, also mounted by the runtime's pods). :func:`train_distributed`

1. stages the step's inputs on the volume, ``<shared>/runs/<job>/`` + ``data/``,
   ``split.json`` and ``params.yaml``;
2. creates the TrainJob (or adopts the one of that name: a retried step follows its job);
3. polls it until its ``Complete`` or ``Failed`` condition is true (or a timeout, after which
   the job is deleted to free the GPUs);
4. copies the model folder (`dsnet.platform.model_artifact`) into the step's ``Model``
   artifact, the layout the single-node ``train`` step writes.

The Kubernetes API is passed in (``kubernetes.client.CustomObjectsApi`` in the cluster), so
the waiting logic is tested against an in-process stand-in.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dsnet.core.errors import DsnetError, InputError
from dsnet.platform.model_artifact import publish_model
from dsnet.platform.placement import pod_placement

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainJob"
PLURAL = "trainjobs"
RUNTIME = {"apiGroup": GROUP, "kind": "TrainingRuntime", "name": "dsnet-torch-distributed"}
NODE = "node"  # the runtime's replicated Job and container (the Trainer's constants.Node)
PATCH_MANAGER = "dsnet.io/pipeline"  # owner of this TrainJob's runtime patch
NCCL_ENV: dict[str, str] = {
    "NCCL_DEBUG": "WARN",
    "NCCL_SOCKET_IFNAME": "eth0",  # the pod network interface
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # fail fast instead of hanging on a lost peer
}
LABELS = {"app.kubernetes.io/name": "dsnet-trainer", "app.kubernetes.io/part-of": "dsnet-ops"}

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class TrainingJobError(DsnetError):
    """The TrainJob failed or did not finish in time."""


def trainjob_manifest(
    name: str,
    image: str,
    command_args: Sequence[str],
    *,
    namespace: str | None = None,
    nodes: int = 1,
    gpus_per_node: int = 1,
    gpu_type: str = "nvidia.com/gpu",
    node_selector: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    image_pull_secrets: Sequence[str] = (),
    wait_for: Sequence[str] = (),
    cpu: str | None = None,
    memory: str | None = None,
) -> dict[str, Any]:
    """Build a TrainJob that runs ``dsnet <command_args>`` under torchrun on `nodes` nodes.

    Args:
        name: Job name (DNS-1035 label, at most 63 characters).
        image: The ``dsnet`` image (``infra/docker/Dockerfile``).
        command_args: The ``dsnet`` arguments, e.g. ``["train", "/data/d", "--split",
            "/data/s.json", "--out", "/data/runs/r1/model"]``.
        namespace: Namespace of the job; None leaves it to the applier (kustomize).
        nodes: Training nodes (pods), at least 1.
        gpus_per_node: GPUs of every node, also the torchrun processes per node; 0 trains
            on CPU with one process per node, without GPU resource, toleration or selector.
        gpu_type: Extended resource of the GPUs (and the tolerated taint key).
        node_selector: Node labels of the GPU pool (optional, GPU nodes only).
        env: Extra environment (e.g. ``MLFLOW_TRACKING_URI``); overrides the NCCL defaults.
        image_pull_secrets: Secrets of the image's registry (none for a public image).
        wait_for: Files on the data volume every node waits for before training.
        cpu: CPU request and limit per node (default: `dsnet.platform.placement`'s).
        memory: Memory request and limit per node (default: the placement's).

    Returns:
        The manifest as a dict, ready for :func:`dump_manifest` or the Kubernetes API.

    Raises:
        InputError: A name, count or argument list the API server would reject.
    """
    _check_name("name", name)
    if namespace is not None:
        _check_name("namespace", namespace)
    if not image:
        raise InputError("image", "must not be empty")
    if not command_args:
        raise InputError("command_args", "must name a dsnet command, e.g. train")
    if nodes < 1:
        raise InputError("nodes", f"must be >= 1, got {nodes}")
    if gpus_per_node < 0:
        raise InputError("gpus_per_node", f"must be >= 0, got {gpus_per_node}")
    placed = pod_placement(gpus_per_node, gpu_type, node_selector)
    quantities = {"cpu": cpu or placed["cpu_request"], "memory": memory or placed["memory_request"]}
    limits: dict[str, Any] = dict(quantities)
    if gpus_per_node:
        limits[gpu_type] = gpus_per_node
    command = ["torchrun", "--module", "dsnet", *command_args]
    if wait_for:
        checks = " && ".join(f"[ -e {shlex.quote(path)} ]" for path in wait_for)
        script = f'until {checks}; do echo waiting for data; sleep 10; done; exec "$@"'
        command = ["sh", "-c", script, "sh", *command]
    merged_env = {**(NCCL_ENV if gpus_per_node else {}), **(env or {})}
    pod: dict[str, Any] = {}
    if placed["node_selector"]:
        pod["nodeSelector"] = placed["node_selector"]
    if placed["tolerations"]:
        pod["tolerations"] = placed["tolerations"]
    if image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": secret} for secret in image_pull_secrets]
    metadata: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespace is not None:
        metadata["namespace"] = namespace
    spec: dict[str, Any] = {
        "runtimeRef": dict(RUNTIME),
        "trainer": {
            "image": image,
            "command": command[:1],
            "args": command[1:],
            "env": [{"name": key, "value": str(value)} for key, value in merged_env.items()],
            "numNodes": nodes,
            "numProcPerNode": max(gpus_per_node, 1),
            "resourcesPerNode": {"requests": dict(quantities), "limits": limits},
        },
    }
    if pod:
        spec["runtimePatches"] = [
            {
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {
                    "template": {
                        "spec": {
                            "replicatedJobs": [
                                {"name": NODE, "template": {"spec": {"template": {"spec": pod}}}}
                            ]
                        }
                    }
                },
            }
        ]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def dump_manifest(manifest: Mapping[str, Any]) -> str:
    """Return `manifest` as a YAML document (keys in the order they were built)."""
    return yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=False)


def _check_name(argument: str, value: str) -> None:
    if len(value) > 63 or not _DNS1035.match(value):
        raise InputError(
            argument,
            f"{value!r} is not a DNS-1035 label (lower-case letters, digits, '-', "
            "starting with a letter, at most 63 characters)",
        )


def job_name(run_id: str, prefix: str = "dsnet-train") -> str:
    """A TrainJob name unique to a pipeline run: ``<prefix>-<10 hex of sha1(run_id)>``.

    The same run id gives the same name, so a retried step finds the job it created.
    """
    digest = hashlib.sha1(run_id.encode("utf-8"), usedforsecurity=False).hexdigest()[:10]
    return f"{prefix}-{digest}"


def job_state(job: Mapping[str, Any]) -> tuple[str, str]:
    """Return ``(state, message)``: ``Complete`` or ``Failed`` when that condition is true.

    Args:
        job: A TrainJob as the API returns it (``status.conditions``: list of ``{"type":
            Created|Suspended|Complete|Failed, "status": "True"|"False", "message": ...}``).

    Returns:
        ``("Complete" | "Failed" | "Suspended" | "Created" | "Pending", message)``.
    """
    conditions = (job.get("status") or {}).get("conditions") or []
    current = {str(c.get("type")): c for c in conditions if str(c.get("status")) == "True"}
    for state in ("Failed", "Complete", "Suspended", "Created"):
        if state in current:
            return state, str(current[state].get("message", ""))
    return "Pending", ""


def staged_paths(run_dir: str | Path) -> dict[str, Path]:
    """Where the inputs and the model of one job live on the shared volume.

    Returns:
        ``{"data", "split", "params", "model"}`` under `run_dir`.
    """
    run_dir = Path(run_dir)
    return {
        "data": run_dir / "data",
        "split": run_dir / "split.json",
        "params": run_dir / "params.yaml",
        "model": run_dir / "model",
    }


def stage_inputs(
    data_dir: str | Path,
    split_path: str | Path,
    params_path: str | Path,
    staged: Mapping[str, Path],
) -> None:
    """Copy the training inputs to their `staged` paths (a stale copy is replaced)."""
    staged["data"].parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staged["data"], ignore_errors=True)
    shutil.copytree(data_dir, staged["data"])
    shutil.copyfile(split_path, staged["split"])
    shutil.copyfile(params_path, staged["params"])


def training_args(staged: Mapping[str, Path]) -> list[str]:
    """The ``dsnet`` command line of every node: ``train DATA --split S --out M ...``."""
    return [
        "train",
        str(staged["data"]),
        "--split",
        str(staged["split"]),
        "--out",
        str(staged["model"]),
        "--plots-dir",
        str(staged["model"] / "plots"),
        "--params",
        str(staged["params"]),
    ]


def run_trainjob(
    api: Any,
    manifest: Mapping[str, Any],
    timeout_s: float,
    poll_s: float = 15.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Create a TrainJob (or adopt the one of that name) and wait until it finishes.

    Args:
        api: ``kubernetes.client.CustomObjectsApi`` (``create_``/``get_``/
            ``delete_namespaced_custom_object``).
        manifest: The job (:func:`trainjob_manifest`, with a namespace).
        timeout_s: Give up (and delete the job) after this many seconds.
        poll_s: Seconds between status reads.
        log: Where progress lines go (the step's log).

    Returns:
        The finished job object (condition ``Complete``).

    Raises:
        TrainingJobError: The job failed, or did not finish within `timeout_s`.
    """
    from kubernetes.client.exceptions import ApiException  # lazy: [pipeline] extra

    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"]["namespace"]
    where = {"group": GROUP, "version": VERSION, "namespace": namespace, "plural": PLURAL}
    try:
        api.create_namespaced_custom_object(body=dict(manifest), **where)
        log(f"created TrainJob {namespace}/{name}")
    except ApiException as exc:
        if exc.status != 409:
            raise
        log(f"TrainJob {namespace}/{name} exists (a retried step): following it")
    deadline = time.monotonic() + timeout_s
    seen = None
    while True:
        job = api.get_namespaced_custom_object(name=name, **where)
        state, message = job_state(job)
        if state != seen:
            log(f"TrainJob {name}: {state}{f' ({message})' if message else ''}")
            seen = state
        if state == "Complete":
            return job
        if state == "Failed":
            raise TrainingJobError(f"TrainJob {namespace}/{name} failed: {message or 'no message'}")
        if time.monotonic() >= deadline:
            api.delete_namespaced_custom_object(name=name, **where)
            raise TrainingJobError(
                f"TrainJob {namespace}/{name} still {state} after {timeout_s:.0f} s; deleted"
            )
        time.sleep(poll_s)


def train_distributed(
    data_dir: str | Path,
    split_path: str | Path,
    params_path: str | Path,
    out_dir: str | Path,
    *,
    api: Any,
    run_id: str,
    image: str,
    namespace: str,
    shared_dir: str | Path,
    nodes: int,
    gpus_per_node: int,
    gpu_type: str = "nvidia.com/gpu",
    node_selector: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    image_pull_secrets: Sequence[str] = (),
    timeout_s: float = 24 * 3600,
    poll_s: float = 15.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train with a TrainJob on the shared volume and copy the model into `out_dir`.

    Args:
        data_dir: The data dir (step input).
        split_path: ``split.json`` (step input).
        params_path: The run's resolved ``params.yaml`` (step input).
        out_dir: Destination model folder (the step's ``Model`` artifact).
        api: ``kubernetes.client.CustomObjectsApi``.
        run_id: The pipeline run id (names the job and its folder).
        image: The ``dsnet`` image of the nodes.
        namespace: Namespace of the job, of the runtime and of the data claim (the step's own).
        shared_dir: Where the data claim is mounted here and in the runtime's pods (/data).
        nodes: Training nodes.
        gpus_per_node: GPUs (and torchrun processes) per node; 0 trains on CPU.
        gpu_type: Extended resource of the GPUs.
        node_selector: Node labels of the GPU pool (optional).
        env: Environment of the nodes (``MLFLOW_TRACKING_URI``, S3 endpoint, run tags).
        image_pull_secrets: Secrets of the image's registry.
        timeout_s: Give up after this many seconds.
        poll_s: Seconds between status reads.
        log: Progress lines.

    Returns:
        ``{"job", "namespace", "world_size", "run_dir"}``.

    Raises:
        TrainingJobError: The job failed or timed out (staged inputs are removed either way).
        InputError: Bad counts or names (:func:`trainjob_manifest`).
    """
    name = job_name(run_id)
    run_dir = Path(shared_dir) / "runs" / name
    staged = staged_paths(run_dir)
    manifest = trainjob_manifest(
        name,
        image,
        training_args(staged),
        namespace=namespace,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        gpu_type=gpu_type,
        node_selector=node_selector,
        env=env,
        image_pull_secrets=image_pull_secrets,
    )
    stage_inputs(data_dir, split_path, params_path, staged)
    try:
        run_trainjob(api, manifest, timeout_s, poll_s, log)
    finally:
        shutil.rmtree(staged["data"], ignore_errors=True)
    if not (staged["model"] / "model.pt").is_file():
        missing = staged["model"] / "model.pt"
        raise TrainingJobError(f"TrainJob {name} succeeded but {missing} is missing")
    publish_model(staged["model"], out_dir)
    return {
        "job": name,
        "namespace": namespace,
        "world_size": nodes * max(gpus_per_node, 1),
        "run_dir": str(run_dir),
    }
