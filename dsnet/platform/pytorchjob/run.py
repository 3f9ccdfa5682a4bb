"""Scale-out training from a pipeline step: ``dsnet train`` as a PyTorchJob, then wait.

The pipeline's ``train_distributed`` step runs on a small CPU pod that mounts the shared
data volume (a ReadWriteMany PVC). It

1. stages the step's inputs on the volume, ``<shared>/runs/<job>/`` + ``data/``,
   ``split.json`` and ``params.yaml``;
2. creates a ``kubeflow.org/v1`` PyTorchJob
   (`dsnet.platform.pytorchjob.manifest.pytorchjob_manifest`) whose replicas
   mount the same volume and run ``dsnet train`` under torchrun;
3. polls the job until its last condition is ``Succeeded`` or ``Failed`` (or a timeout,
   after which the job is deleted to free the GPUs);
4. copies ``<shared>/runs/<job>/model`` (``model.pt``, ``last.ckpt``, ``train_run.json``,
   ``plots/train_loss.csv``) into the step's ``Model`` artifact, the same layout the
   single-node ``train`` step writes.

The Kubernetes API is passed in (``kubernetes.client.CustomObjectsApi`` in the cluster), so
the waiting logic is tested against an in-process stand-in.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dsnet.core.errors import DsnetError
from dsnet.platform.pytorchjob.manifest import API_VERSION, pytorchjob_manifest

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "pytorchjobs"
TERMINAL = ("Succeeded", "Failed")
MODEL_DIR = "model"  # model.pt, last.ckpt, train_run.json, plots/train_loss.csv


class TrainingJobError(DsnetError):
    """The PyTorchJob failed or did not finish in time."""


def job_name(run_id: str, prefix: str = "dsnet-train") -> str:
    """A PyTorchJob name unique to a pipeline run: ``<prefix>-<10 hex of sha1(run_id)>``.

    The same run id gives the same name, so a retried step finds the job it created.
    """
    digest = hashlib.sha1(run_id.encode("utf-8"), usedforsecurity=False).hexdigest()[:10]
    return f"{prefix}-{digest}"


def job_state(job: Mapping[str, Any]) -> tuple[str, str]:
    """Return ``(type, message)`` of the job's latest true condition, or ``("Pending", "")``.

    Args:
        job: A PyTorchJob object as the API returns it (``status.conditions``: list of
            ``{"type": Created|Running|Restarting|Succeeded|Failed, "status": "True", ...}``).

    """
    conditions = (job.get("status") or {}).get("conditions") or []
    current = [c for c in conditions if str(c.get("status")) == "True"]
    if not current:
        return "Pending", ""
    last = current[-1]
    return str(last.get("type", "Pending")), str(last.get("message", ""))


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
        "model": run_dir / MODEL_DIR,
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
    """The ``dsnet`` command line of every replica: ``train DATA --split S --out M ...``."""
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


def run_pytorchjob(
    api: Any,
    manifest: Mapping[str, Any],
    timeout_s: float,
    poll_s: float = 15.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Create a PyTorchJob (or adopt the one of that name) and wait until it finishes.

    Args:
        api: ``kubernetes.client.CustomObjectsApi`` (``create_``/``get_``/
            ``delete_namespaced_custom_object``).
        manifest: The job (`dsnet.platform.pytorchjob.manifest.pytorchjob_manifest`).
        timeout_s: Give up (and delete the job) after this many seconds.
        poll_s: Seconds between status reads.
        log: Where progress lines go (the step's log).

    Returns:
        The finished job object (last condition ``Succeeded``).

    Raises:
        TrainingJobError: The job failed, or did not finish within `timeout_s`.

    """
    from kubernetes.client.exceptions import ApiException  # lazy: the optional [pipeline] extra

    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"]["namespace"]
    where = {"group": GROUP, "version": VERSION, "namespace": namespace, "plural": PLURAL}
    try:
        api.create_namespaced_custom_object(body=dict(manifest), **where)
        log(f"created PyTorchJob {namespace}/{name}")
    except ApiException as exc:
        if exc.status != 409:
            raise
        log(f"PyTorchJob {namespace}/{name} exists (a retried step): following it")
    deadline = time.monotonic() + timeout_s
    seen = None
    while True:
        job = api.get_namespaced_custom_object(name=name, **where)
        state, message = job_state(job)
        if state != seen:
            log(f"PyTorchJob {name}: {state}{f' ({message})' if message else ''}")
            seen = state
        if state == "Succeeded":
            return job
        if state == "Failed":
            why = message or "no message"
            raise TrainingJobError(f"PyTorchJob {namespace}/{name} failed: {why}")
        if time.monotonic() >= deadline:
            api.delete_namespaced_custom_object(name=name, **where)
            raise TrainingJobError(
                f"PyTorchJob {namespace}/{name} still {state} after {timeout_s:.0f} s; deleted"
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
    data_pvc: str,
    workers: int,
    gpus_per_worker: int,
    env: Mapping[str, str] | None = None,
    env_from_secrets: Sequence[str] = (),
    node_selector: Mapping[str, str] | None = None,
    timeout_s: float = 24 * 3600,
    poll_s: float = 15.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train with a PyTorchJob on the shared volume and copy the model into `out_dir`.

    Args:
        data_dir: The data dir (step input).
        split_path: ``split.json`` (step input).
        params_path: The run's resolved ``params.yaml`` (step input).
        out_dir: Destination model folder (the step's ``Model`` artifact).
        api: ``kubernetes.client.CustomObjectsApi``.
        run_id: The pipeline run id (names the job and its folder).
        image: The ``dsnet`` image of the replicas.
        namespace: Namespace of the job and of `data_pvc` (the step's own).
        shared_dir: Where `data_pvc` is mounted in this step and in the replicas.
        data_pvc: The ReadWriteMany claim holding `shared_dir`.
        workers: Worker replicas besides the master.
        gpus_per_worker: GPUs (and torchrun processes) per replica.
        env: Environment of the replicas (``MLFLOW_TRACKING_URI``, S3 endpoint).
        env_from_secrets: Secrets whose keys become environment variables (S3 credentials).
        node_selector: Node labels of the GPU pool.
        timeout_s: Give up after this many seconds.
        poll_s: Seconds between status reads.
        log: Progress lines.

    Returns:
        ``{"job", "namespace", "world_size", "run_dir"}``.

    Raises:
        TrainingJobError: The job failed or timed out (staged inputs are removed either way).
        InputError: Bad counts or names (`dsnet.platform.pytorchjob.manifest.pytorchjob_manifest`).

    """
    name = job_name(run_id)
    run_dir = Path(shared_dir) / "runs" / name
    staged = staged_paths(run_dir)
    manifest = pytorchjob_manifest(
        name,
        image,
        training_args(staged),
        namespace=namespace,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        env=env,
        env_from_secrets=env_from_secrets,
        node_selector=node_selector,
        data_pvc=data_pvc,
        data_mount=str(shared_dir),
    )
    stage_inputs(data_dir, split_path, params_path, staged)
    try:
        run_pytorchjob(api, manifest, timeout_s, poll_s, log)
    finally:
        shutil.rmtree(staged["data"], ignore_errors=True)
    if not (staged["model"] / "model.pt").is_file():
        missing = staged["model"] / "model.pt"
        raise TrainingJobError(f"PyTorchJob {name} succeeded but {missing} is missing")
    shutil.copytree(staged["model"], out_dir, dirs_exist_ok=True)
    return {
        "job": name,
        "namespace": namespace,
        "world_size": (1 + workers) * max(gpus_per_worker, 1),
        "run_dir": str(run_dir),
    }
