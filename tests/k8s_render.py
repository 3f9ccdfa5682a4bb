"""Helpers of the Kubernetes tests: render the overlays, build the pods the cluster would run.

- :func:`render_overlays` renders ``infra/k8s/overlays/*`` with ``kubectl kustomize`` from a
  copy of the tree in which the ``*.env.example`` files stand in for the secrets,
  optionally with another namespace (a multi-user Kubeflow profile).
- :func:`runtime_pod` is the pod template the Trainer v2 controller (v2.3.0, torch plugin)
  makes from a TrainingRuntime and a TrainJob: the trainer's image, command, args, env and
  resources go into container ``node``, which also gets the ``PET_*`` variables and port
  29500; the TrainJob's runtime patch adds node selector, tolerations and pull secrets.
- :func:`step_pod` is the pod the KFP 2.17 driver makes for one executor of the compiled
  pipeline (``backend/src/v2/driver``: resources from the executor, secrets as env, PVC
  and emptyDir volumes, node selector and tolerations, pod labels), for given values of
  the run-time placement.
- :func:`pod_security_violations` checks a pod spec against the Pod Security Standards
  ``baseline`` or ``restricted`` (the rules that pod specs like these can break).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "infra" / "k8s"
K8S_VERSION = "1.30"
NAMESPACE = "kubeflow"  # both overlays: standalone KFP runs its steps there
PROFILE_NAMESPACE = "kubeflow-user-example-com"  # a multi-user Kubeflow profile
SCHEMAS = K8S / "schemas"
TRAINER_PORT = 29500
PET_ENV = (
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
)


def strict(schema: Any) -> Any:
    """A structural CRD schema that rejects unknown fields, as ``kubectl apply`` (Strict) does.

    The API server prunes fields its schema does not name (with a warning); strict field
    validation turns that into an error. Objects with ``properties`` and neither
    ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` get
    ``additionalProperties: false``.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {
        key: (
            {name: strict(sub) for name, sub in value.items()}
            if key == "properties"
            else strict(value)
        )
        for key, value in schema.items()
    }
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


def _schema(name: str) -> dict:
    path = SCHEMAS / f"{name}-trainer.kubeflow.org-v1alpha1.json"
    return strict(json.loads(path.read_text()))


TRAINJOB_SCHEMA = _schema("trainjob")
TRAINING_RUNTIME_SCHEMA = _schema("trainingruntime")


def render(tree: Path, overlay: str) -> list[dict]:
    """``kubectl kustomize`` of one overlay of `tree`, as a list of objects."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl must be on PATH to render the kustomize overlays"
    result = subprocess.run(
        [kubectl, "kustomize", str(tree / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_overlays(scratch: Path, namespace: str | None = None) -> dict[str, list[dict]]:
    """Both overlays, with example secrets and (optionally) `namespace` as the overlay's."""
    tree = scratch / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.env", "__pycache__"))
    for example in (tree / "base" / "secrets").glob("*.env.example"):
        shutil.copyfile(example, example.with_suffix(""))
    overlays = ("local", "gpu")
    if namespace is not None:
        for overlay in overlays:
            path = tree / "overlays" / overlay / "kustomization.yaml"
            text = path.read_text()
            assert f"namespace: {NAMESPACE}\n" in text
            path.write_text(text.replace(f"namespace: {NAMESPACE}\n", f"namespace: {namespace}\n"))
    return {overlay: render(tree, overlay) for overlay in overlays}


def runtime_pod(runtime: dict, trainjob: dict) -> dict:
    """The pod template of a TrainJob's nodes on `runtime` (Trainer v2.3.0 semantics)."""
    (job,) = [
        j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == "node"
    ]
    pod = copy.deepcopy(job["template"]["spec"]["template"])
    spec = pod["spec"]
    (node,) = [c for c in spec["containers"] if c["name"] == "node"]
    trainer = trainjob["spec"]["trainer"]
    node["image"] = trainer["image"]
    for key in ("command", "args"):
        if key in trainer:
            node[key] = list(trainer[key])
    env = {e["name"]: e for e in node.get("env", [])}
    env.update({e["name"]: e for e in trainer.get("env", [])})
    env.update({name: {"name": name, "value": "set-by-trainer"} for name in PET_ENV})
    node["env"] = list(env.values())
    node["ports"] = [{"containerPort": TRAINER_PORT}]
    if "resourcesPerNode" in trainer:
        node["resources"] = copy.deepcopy(trainer["resourcesPerNode"])
    for patch in trainjob["spec"].get("runtimePatches", []):
        for patched in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if patched["name"] != "node":
                continue
            extra = patched["template"]["spec"]["template"]
            pod.setdefault("metadata", {}).setdefault("labels", {}).update(
                extra.get("metadata", {}).get("labels", {})
            )
            for key, value in extra.get("spec", {}).items():
                if key in ("volumes", "tolerations", "imagePullSecrets"):
                    spec[key] = spec.get(key, []) + copy.deepcopy(value)
                else:
                    spec[key] = copy.deepcopy(value)
    return pod


def executors(compiled: Path) -> tuple[dict, dict]:
    """(pipeline spec, Kubernetes platform config per executor) of a compiled pipeline."""
    spec, platform = yaml.safe_load_all(compiled.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def step_pod(spec: dict, platform: dict, executor: str, placement: dict | None = None) -> dict:
    """The pod template of one executor as the KFP 2.17 driver builds it.

    Args:
        spec: The compiled pipeline spec.
        platform: Kubernetes config per executor (:func:`executors`).
        executor: Executor label, e.g. ``exec-train``.
        placement: Values of the ``placement`` step's outputs
            (`dsnet.platform.placement.pod_placement` plus ``eval_gpus``), which the driver
            substitutes for the ``pipelinechannel--placement-*`` inputs.
    """
    container_spec = spec["deploymentSpec"]["executors"][executor]["container"]

    def resolve(text: Any) -> Any:
        channel = re.fullmatch(
            r"\{\{\$\.inputs\.parameters\['pipelinechannel--placement(?:-\d+)?-(\w+)'\]\}\}", text
        )
        return placement[channel.group(1)] if channel else text

    resources: dict[str, dict] = {"requests": {}, "limits": {}}
    found = container_spec.get("resources", {})
    for field, (kind, name) in {
        "resourceCpuRequest": ("requests", "cpu"),
        "resourceCpuLimit": ("limits", "cpu"),
        "resourceMemoryRequest": ("requests", "memory"),
        "resourceMemoryLimit": ("limits", "memory"),
    }.items():
        if field in found:
            resources[kind][name] = resolve(found[field])
    accelerator = found.get("accelerator")
    if accelerator:  # driver.go: no accelerator when the type resolves to ""
        kind, count = resolve(accelerator["resourceType"]), resolve(accelerator["resourceCount"])
        if kind and count:
            resources["limits"][kind] = count
    k8s = platform.get(executor, {})
    env = [{"name": "KFP_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    for secret in k8s.get("secretAsEnv", []):
        for key in secret["keyToEnv"]:
            ref = {"name": secret["secretName"], "key": key["secretKey"]}
            if secret.get("optional"):
                ref["optional"] = True
            env.append({"name": key["envVar"], "valueFrom": {"secretKeyRef": ref}})
    for field in k8s.get("fieldPathAsEnv", []):
        env.append(
            {"name": field["name"], "valueFrom": {"fieldRef": {"fieldPath": field["fieldPath"]}}}
        )
    volumes, mounts = [], []
    for claim in k8s.get("pvcMount", []):
        name = claim.get("constant") or claim["pvcNameParameter"]["runtimeValue"]["constant"]
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": name}})
        mounts.append({"name": name, "mountPath": claim["mountPath"]})
    for empty in k8s.get("emptyDirMounts", []):
        source = {k: empty[k] for k in ("medium",) if k in empty}
        if "sizeLimit" in empty:
            source["sizeLimit"] = empty["sizeLimit"]
        volumes.append({"name": empty["volumeName"], "emptyDir": source})
        mounts.append({"name": empty["volumeName"], "mountPath": empty["mountPath"]})
    pod_spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": container_spec["image"],
                "command": container_spec["command"],
                "env": env,
                "resources": {k: v for k, v in resources.items() if v},
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
        "restartPolicy": "Never",
    }
    selector = k8s.get("nodeSelector", {})
    if "labels" in selector:
        pod_spec["nodeSelector"] = dict(selector["labels"])
    elif "nodeSelectorJson" in selector and placement is not None and placement["node_selector"]:
        pod_spec["nodeSelector"] = dict(placement["node_selector"])
    tolerations = []
    for toleration in k8s.get("tolerations", []):
        if "tolerationJson" in toleration:
            tolerations += placement["tolerations"] if placement is not None else []
        else:
            tolerations.append(toleration)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    pulls = [s.get("secretName") for s in k8s.get("imagePullSecret", [])]
    if pulls:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in pulls]
    labels = {"pipelines.kubeflow.org/v2_component": "true"}
    labels.update(k8s.get("podMetadata", {}).get("labels", {}))
    return {"metadata": {"labels": labels}, "spec": pod_spec}


BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def pod_security_violations(spec: dict, level: str) -> list[str]:
    """Rules of Pod Security Standard `level` (baseline|restricted) that pod `spec` breaks."""
    assert level in ("privileged", "baseline", "restricted"), level
    if level == "privileged":
        return []
    found = []
    containers = spec.get("initContainers", []) + spec["containers"]
    pod_security = spec.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            found.append(f"{key}")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            found.append(f"volume {volume['name']}: hostPath")
        if level == "restricted" and not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds)} not allowed")
    if pod_security.get("seccompProfile", {}).get("type") == "Unconfined":
        found.append("pod seccomp Unconfined")
    for container in containers:
        where = container["name"]
        security = container.get("securityContext", {})
        if security.get("privileged"):
            found.append(f"{where}: privileged")
        added = set(security.get("capabilities", {}).get("add", []))
        if not added <= BASELINE_CAPABILITIES:
            found.append(f"{where}: adds {sorted(added - BASELINE_CAPABILITIES)}")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            found.append(f"{where}: hostPort")
        if security.get("seccompProfile", {}).get("type") == "Unconfined":
            found.append(f"{where}: seccomp Unconfined")
        if level != "restricted":
            continue
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation not false")
        if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
            found.append(f"{where}: runAsNonRoot not true")
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            found.append(f"{where}: runAsUser 0")
        seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccomp not RuntimeDefault/Localhost")
        capabilities = security.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{where}: capabilities not dropped (ALL)")
        if not set(capabilities.get("add", [])) <= {"NET_BIND_SERVICE"}:
            found.append(f"{where}: adds capabilities beyond NET_BIND_SERVICE")
    return found
