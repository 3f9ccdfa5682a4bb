"""Kubeflow Training Operator `PyTorchJob` manifests for scale-out `dsnet train`.

One function builds the manifest as plain dicts (:func:`pytorchjob_manifest`); one dumps it
as YAML (:func:`dump_manifest`). The job runs the same ``dsnet`` command line as everywhere
else, launched by ``torchrun --module dsnet ...`` in every replica. The Training Operator
(kubeflow.org/v1, v1.9) injects the rendezvous environment into the container named
``pytorch``: ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``, ``PET_NNODES``, ``PET_NODE_RANK``
and ``PET_NPROC_PER_NODE`` (from ``spec.nprocPerNode``), which torchrun reads as its
defaults, so the command carries no rendezvous flags.

Topology: one ``Master`` replica plus ``workers`` ``Worker`` replicas, each with
``gpus_per_worker`` GPUs and as many torchrun processes; world size
``(1 + workers) * max(gpus_per_worker, 1)``.

Every pod runs as the image's non-root user (UID 10001) under the Kubernetes "restricted"
Pod Security profile: no privilege escalation, all capabilities dropped, read-only root
filesystem (``/tmp`` and ``/dev/shm`` are memory-backed ``emptyDir`` volumes), RuntimeDefault
seccomp, and no service-account token (the trainers never call the Kubernetes API).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from dsnet.core.errors import InputError

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
CONTAINER_NAME = "pytorch"  # the operator injects its environment into this container only
MASTER_PORT = 23456  # the operator's default rendezvous port, named as it expects
MASTER_PORT_NAME = "pytorchjob-port"
RUN_AS_USER = 10001  # the dsnet image's user (infra/docker/Dockerfile)
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION: dict[str, str] = {
    "key": GPU_RESOURCE,
    "operator": "Exists",
    "effect": "NoSchedule",
}
NCCL_ENV: dict[str, str] = {
    "NCCL_DEBUG": "WARN",
    "NCCL_SOCKET_IFNAME": "eth0",  # the pod network interface
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # fail fast instead of hanging on a lost peer
}
TRAINER_LABELS: dict[str, str] = {
    "app.kubernetes.io/name": "dsnet-trainer",
    "app.kubernetes.io/component": "training",
    "app.kubernetes.io/part-of": "dsnet-ops",
    "dsnet.io/role": "trainer",  # NetworkPolicy: trainers may reach each other
    "dsnet.io/s3-client": "true",  # NetworkPolicy: may reach MinIO
    "dsnet.io/mlflow-client": "true",  # NetworkPolicy: may reach MLflow
}

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def pytorchjob_manifest(
    name: str,
    image: str,
    command_args: Sequence[str],
    *,
    namespace: str = "dsnet",
    workers: int = 1,
    gpus_per_worker: int = 1,
    env: Mapping[str, str] | None = None,
    env_from_secrets: Sequence[str] = (),
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    data_pvc: str | None = None,
    data_mount: str = "/data",
    wait_for: Sequence[str] = (),
    service_account: str | None = None,
    cpu: str = "4",
    memory: str = "16Gi",
    shm_size: str = "2Gi",
    backoff_limit: int = 3,
    ttl_seconds_after_finished: int | None = 7 * 24 * 3600,
) -> dict[str, Any]:
    """Build a ``kubeflow.org/v1`` PyTorchJob that runs ``dsnet <command_args>`` under torchrun.

    Args:
        name: Job name (DNS-1035 label, at most 63 characters); also names the pods.
        image: The ``dsnet`` container image (``infra/docker/Dockerfile``).
        command_args: The ``dsnet`` arguments, e.g. ``["train", "/data/synthetic", "--split",
            "/data/split.json", "--out", "/data/runs/r1/models"]``.
        namespace: Namespace of the job.
        workers: ``Worker`` replicas besides the single ``Master`` (0 = master only).
        gpus_per_worker: GPUs of every replica (master included), also the torchrun processes
            per pod; 0 trains on CPU with one process per pod.
        env: Extra environment (e.g. ``MLFLOW_TRACKING_URI``); overrides the NCCL defaults.
        env_from_secrets: Secrets whose keys all become environment variables (S3 and
            MLflow credentials).
        node_selector: Node labels of the GPU pool.
        tolerations: Tolerations of the GPU pool's taints; with GPUs and none given, the
            ``nvidia.com/gpu:NoSchedule`` taint is tolerated.
        data_pvc: PersistentVolumeClaim with the data dir and outputs, mounted at
            `data_mount` (ReadWriteMany when ``workers > 0`` on several nodes).
        data_mount: Mount path of `data_pvc`.
        wait_for: Files every pod waits for before starting (an init container polls them),
            e.g. the split written by a data-preparation job.
        service_account: Service account of the pods (its token is not mounted).
        cpu: CPU request and limit of every replica.
        memory: Memory request and limit of every replica.
        shm_size: Size limit of the memory-backed ``/dev/shm`` (NCCL and DataLoader workers).
        backoff_limit: Retries of the whole job before it is marked failed.
        ttl_seconds_after_finished: Delete the finished job after this long (None = keep).

    Returns:
        The manifest as a dict, ready for :func:`dump_manifest` or the Kubernetes API.

    Raises:
        InputError: A name, count or argument list that the operator would reject.

    """
    _check_name("name", name)
    _check_name("namespace", namespace)
    if not image:
        raise InputError("image", "must not be empty")
    if not command_args:
        raise InputError("command_args", "must name a dsnet command, e.g. train")
    if workers < 0:
        raise InputError("workers", f"must be >= 0, got {workers}")
    if gpus_per_worker < 0:
        raise InputError("gpus_per_worker", f"must be >= 0, got {gpus_per_worker}")
    if data_pvc is None and wait_for:
        raise InputError("wait_for", "needs data_pvc: the files are looked for on the volume")

    template = _pod_template(
        image=image,
        command_args=command_args,
        gpus=gpus_per_worker,
        env={**(NCCL_ENV if gpus_per_worker else {}), **(env or {})},
        env_from_secrets=env_from_secrets,
        node_selector=node_selector,
        tolerations=list(tolerations) or ([GPU_TOLERATION] if gpus_per_worker else []),
        data_pvc=data_pvc,
        data_mount=data_mount,
        wait_for=wait_for,
        service_account=service_account,
        cpu=cpu,
        memory=memory,
        shm_size=shm_size,
    )
    replica_specs: dict[str, Any] = {
        "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template}
    }
    if workers:
        replica_specs["Worker"] = {
            "replicas": workers,
            "restartPolicy": "OnFailure",
            "template": copy.deepcopy(template),
        }
    run_policy: dict[str, Any] = {"cleanPodPolicy": "None", "backoffLimit": backoff_limit}
    if ttl_seconds_after_finished is not None:
        run_policy["ttlSecondsAfterFinished"] = ttl_seconds_after_finished
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": TRAINER_LABELS["app.kubernetes.io/name"],
                "app.kubernetes.io/part-of": TRAINER_LABELS["app.kubernetes.io/part-of"],
            },
        },
        "spec": {
            "nprocPerNode": str(max(gpus_per_worker, 1)),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replica_specs,
        },
    }


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


def _pod_template(
    *,
    image: str,
    command_args: Sequence[str],
    gpus: int,
    env: Mapping[str, str],
    env_from_secrets: Sequence[str],
    node_selector: Mapping[str, str] | None,
    tolerations: list[Mapping[str, Any]],
    data_pvc: str | None,
    data_mount: str,
    wait_for: Sequence[str],
    service_account: str | None,
    cpu: str,
    memory: str,
    shm_size: str,
) -> dict[str, Any]:
    """The pod template shared by the Master and Worker replicas."""
    limits: dict[str, str | int] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits[GPU_RESOURCE] = gpus
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
    ]
    if data_pvc is not None:
        mounts.append({"name": "data", "mountPath": data_mount})
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": data_pvc}})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["torchrun"],
        "args": ["--module", "dsnet", *command_args],
        "ports": [{"name": MASTER_PORT_NAME, "containerPort": MASTER_PORT}],
        "env": [{"name": key, "value": str(value)} for key, value in env.items()],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    if env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": secret}} for secret in env_from_secrets]
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if wait_for:
        spec["initContainers"] = [_wait_container(image, wait_for, data_mount)]
    spec["containers"] = [container]
    spec["volumes"] = volumes
    return {"metadata": {"labels": dict(TRAINER_LABELS)}, "spec": spec}


def _wait_container(image: str, paths: Sequence[str], data_mount: str) -> dict[str, Any]:
    """An init container that polls until every path in `paths` exists."""
    checks = " && ".join(f'[ -e "$WAIT_{i}" ]' for i in range(len(paths)))
    return {
        "name": "wait-for-data",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", f"until {checks}; do echo waiting for data; sleep 10; done"],
        "env": [{"name": f"WAIT_{i}", "value": path} for i, path in enumerate(paths)],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "data", "mountPath": data_mount, "readOnly": True}],
    }


def _container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
