"""The compiled pipeline and the rendered manifests agree on a real Kubeflow cluster.

From ``pipeline/dsnet_pipeline.yaml`` and ``kubectl kustomize`` output alone (no cluster):

- every PVC, Secret, ConfigMap and ServiceAccount a step or TrainJob pod references exists
  in the namespace where that pod runs, for each overlay, also rendered into a multi-user
  profile namespace;
- every pod the pipeline or a TrainJob creates satisfies the namespace's Pod Security level
  (``baseline``, as Kubeflow Pipelines 2.17.0 labels namespace ``kubeflow``), and the
  stack's own pods and the TrainJob's (runtime containers included) pass ``restricted``;
- the NetworkPolicies admit each client pod to exactly the services it needs;
- a CPU-only run (``gpu_count = 0``) has no GPU resource, node selector or toleration;
- the external programs the components and the library run are installed in the image.

Pods of steps are built as the KFP 2.17 driver builds them (`k8s_render.step_pod`), TrainJob
pods as the Trainer v2.3.0 controller does (`k8s_render.runtime_pod`).
"""

from __future__ import annotations

import ast
import importlib.metadata
import io
import re
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from k8s_render import (
    NAMESPACE,
    PROFILE_NAMESPACE,
    REPO,
    executors,
    pod_security_violations,
    render_overlays,
    runtime_pod,
    step_pod,
)
from packaging.requirements import Requirement

from dsnet.platform.placement import pod_placement
from dsnet.platform.trainjob import trainjob_manifest

PACKAGE = REPO / "pipeline" / "dsnet_pipeline.yaml"
# Kubeflow Pipelines 2.17.0, manifests/kustomize/cluster-scoped-resources/namespace.yaml:
# enforce baseline, warn restricted. A multi-user profile namespace is at least as strict
# for the pods here (they pass restricted where the stack defines them).
RUN_NAMESPACE_LEVEL = "baseline"
KUBEFLOW_ACCOUNTS = {"pipeline-runner", "default-editor"}  # the KFP steps' accounts


@pytest.fixture(scope="module", params=[NAMESPACE, PROFILE_NAMESPACE])
def rendered(request, tmp_path_factory) -> dict[str, list[dict]]:
    namespace = None if request.param == NAMESPACE else request.param
    return render_overlays(tmp_path_factory.mktemp("k8s"), namespace)


@pytest.fixture(scope="module")
def compiled() -> tuple[dict, dict]:
    return executors(PACKAGE)


def _placement(gpu_count: int, selector: dict | None = None) -> dict:
    placed = pod_placement(gpu_count, "nvidia.com/gpu", selector)
    return {**placed, "eval_gpus": str(min(gpu_count, 1))}


def _step_pods(compiled, gpu_count: int = 1) -> dict[str, dict]:
    spec, platform = compiled
    return {
        label: step_pod(spec, platform, label, _placement(gpu_count))
        for label in spec["deploymentSpec"]["executors"]
    }


def _trainjob_pods(objects: list[dict]) -> list[tuple[str, dict]]:
    """The TrainJob pods: the overlay's example and what train_distributed creates."""
    (runtime,) = [o for o in objects if o["kind"] == "TrainingRuntime"]
    jobs = [o for o in objects if o["kind"] == "TrainJob"]
    jobs += [
        trainjob_manifest("dsnet-train-x", "dsnet:0.1.0", ["train", "/data/d"], gpus_per_node=g)
        for g in (0, 2)
    ]
    assert runtime["metadata"]["name"] == jobs[0]["spec"]["runtimeRef"]["name"]
    return [(job["metadata"]["name"], runtime_pod(runtime, job)) for job in jobs]


def _names(objects: list[dict], kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in objects if o["kind"] == kind}


def _namespaces(objects: list[dict]) -> set[str]:
    return {o["metadata"]["namespace"] for o in objects}


# ---- references ------------------------------------------------------------------------


def _references(pod: dict) -> dict[str, set[str]]:
    """Secrets, ConfigMaps, claims and service accounts a pod needs (optional ones left out)."""
    spec = pod["spec"]
    found: dict[str, set[str]] = {"Secret": set(), "ConfigMap": set(), "PVC": set(), "SA": set()}
    if "serviceAccountName" in spec:
        found["SA"].add(spec["serviceAccountName"])
    for volume in spec.get("volumes", []):
        if "persistentVolumeClaim" in volume:
            found["PVC"].add(volume["persistentVolumeClaim"]["claimName"])
        if "configMap" in volume:
            found["ConfigMap"].add(volume["configMap"]["name"])
        if "secret" in volume:
            found["Secret"].add(volume["secret"]["secretName"])
    for container in spec.get("initContainers", []) + spec["containers"]:
        for source in container.get("envFrom", []):
            for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                if key in source and not source[key].get("optional"):
                    found[kind].add(source[key]["name"])
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                found["Secret"].add(ref["name"])
    return found


EXTERNAL_SECRETS = {"dsnet-deid-key"}  # rendered too; named to show the intake step needs it


def test_every_reference_of_steps_and_trainjobs_exists_where_the_pod_runs(rendered, compiled):
    for overlay, objects in rendered.items():
        (namespace,) = _namespaces(objects)
        have = {
            "Secret": _names(objects, "Secret"),
            "ConfigMap": _names(objects, "ConfigMap"),
            "PVC": _names(objects, "PersistentVolumeClaim"),
            "SA": _names(objects, "ServiceAccount"),
        }
        pods = [(f"step {label}", pod) for label, pod in _step_pods(compiled).items()]
        pods += [(f"trainjob {name}", pod) for name, pod in _trainjob_pods(objects)]
        for name, pod in pods:
            for kind, needed in _references(pod).items():
                missing = needed - have[kind]
                assert not missing, f"{overlay} ({namespace}): {name} needs {kind} {missing}"
        # the steps run as Kubeflow's account of this namespace, bound to the TrainJob Role
        (binding,) = [o for o in objects if o["kind"] == "RoleBinding"]
        bound = {(s["namespace"], s["name"]) for s in binding["subjects"]}
        assert {(namespace, account) for account in KUBEFLOW_ACCOUNTS} <= bound


def test_the_pipeline_reaches_services_by_namespace_relative_names(compiled):
    spec, _ = compiled
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["mlflow_tracking_uri"]["defaultValue"] == "http://mlflow:5000"
    assert inputs["s3_endpoint_url"]["defaultValue"] == "http://dsnet-s3:8333"


def test_services_the_pipeline_names_are_rendered(rendered, compiled):
    spec, _ = compiled
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    for objects in rendered.values():
        services = {
            (o["metadata"]["name"], p["port"])
            for o in objects
            if o["kind"] == "Service"
            for p in o["spec"]["ports"]
        }
        for parameter in ("mlflow_tracking_uri", "s3_endpoint_url"):
            host, port = re.match(
                r"http://([^:/]+):(\d+)$", inputs[parameter]["defaultValue"]
            ).groups()
            assert (host, int(port)) in services, parameter


# ---- Pod Security ------------------------------------------------------------------------


@pytest.mark.parametrize("gpu_count", [0, 2])
def test_every_pod_the_pipeline_creates_meets_the_namespace_level(compiled, gpu_count):
    for label, pod in _step_pods(compiled, gpu_count).items():
        assert pod_security_violations(pod["spec"], RUN_NAMESPACE_LEVEL) == [], label


def test_every_trainjob_pod_meets_restricted_including_runtime_containers(rendered):
    for objects in rendered.values():
        for name, pod in _trainjob_pods(objects):
            assert pod_security_violations(pod["spec"], "restricted") == [], name
            assert pod_security_violations(pod["spec"], RUN_NAMESPACE_LEVEL) == [], name
            (runtime,) = [o for o in objects if o["kind"] == "TrainingRuntime"]
            jobs = runtime["spec"]["template"]["spec"]["replicatedJobs"]
            assert [j["name"] for j in jobs] == ["node"]  # no initializer jobs to inject


# ---- NetworkPolicies -------------------------------------------------------------------------


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "the checker understands matchLabels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _reachable(policies: list[dict], objects: list[dict], src_ns: str, labels: dict) -> set[str]:
    """Services (name) whose every port a pod with `labels` in `src_ns` may reach."""
    pods = {}
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            pods[obj["metadata"]["name"]] = obj["spec"]["template"]["metadata"]["labels"]
    reached = set()
    for service in (o for o in objects if o["kind"] == "Service"):
        target = next(
            (p for p in pods.values() if _selects({"matchLabels": service["spec"]["selector"]}, p)),
            None,
        )
        assert target is not None, service["metadata"]["name"]
        ports = [p["port"] for p in service["spec"]["ports"]]
        selecting = [p for p in policies if _selects(p["spec"]["podSelector"], target)]
        admitted = all(
            not selecting
            or any(
                (not rule.get("ports") or port in {q["port"] for q in rule["ports"]})
                and any(
                    (
                        "namespaceSelector" in peer
                        and _selects(
                            peer["namespaceSelector"], {"kubernetes.io/metadata.name": src_ns}
                        )
                    )
                    or (
                        "namespaceSelector" not in peer
                        and src_ns == policy["metadata"]["namespace"]
                    )
                    and _selects(peer.get("podSelector", {}), labels)
                    for peer in rule.get("from", [{}])
                )
                for policy in selecting
                for rule in policy["spec"].get("ingress", [])
            )
            for port in ports
        )
        if admitted:
            reached.add(service["metadata"]["name"])
    return reached


# Steps that take the service addresses only to hand them to the pods they create.
FORWARDING = {"exec-train-distributed"}  # its TrainJob's nodes talk to MLflow and S3


def _needs(spec: dict, label: str) -> set[str]:
    """The services a step needs: from the parameters its component takes."""
    if re.sub(r"-\d+$", "", label) in FORWARDING:
        return set()
    component = next(c for c in spec["components"].values() if c.get("executorLabel") == label)
    inputs = set(component.get("inputDefinitions", {}).get("parameters", {}))
    needs = set()
    if "mlflow_tracking_uri" in inputs:
        needs.add("mlflow")
    if {"s3_endpoint_url", "repo_url"} & inputs:
        needs.add("dsnet-s3")
    return needs


def test_network_policies_admit_each_client_to_exactly_what_it_needs(rendered, compiled):
    spec, _ = compiled
    for objects in rendered.values():
        (namespace,) = _namespaces(objects)
        policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        for label, pod in _step_pods(compiled).items():
            reached = _reachable(policies, objects, namespace, pod["metadata"]["labels"])
            assert reached == _needs(spec, label), label
        for name, pod in _trainjob_pods(objects):
            reached = _reachable(policies, objects, namespace, pod["metadata"]["labels"])
            assert reached == {"mlflow", "dsnet-s3"}, name
        reached = _reachable(policies, objects, "other", {"dsnet.io/mlflow-client": "true"})
        assert reached == set(), "a client in another namespace"


# ---- placement -----------------------------------------------------------------------------


def test_a_cpu_only_run_has_no_gpu_resource_selector_or_toleration(compiled):
    for label, pod in _step_pods(compiled, gpu_count=0).items():
        spec = pod["spec"]
        limits = spec["containers"][0]["resources"].get("limits", {})
        assert not [key for key in limits if "gpu" in key], label
        assert "nodeSelector" not in spec and "tolerations" not in spec, label
    train = _step_pods(compiled, gpu_count=0)["exec-train"]["spec"]["containers"][0]
    assert train["resources"] == {
        "requests": {"cpu": "1", "memory": "4G"},
        "limits": {"cpu": "4", "memory": "8G"},
    }


def test_a_gpu_run_relies_on_the_resource_and_the_toleration(compiled):
    spec, platform = compiled
    pods = {
        label: step_pod(spec, platform, label, _placement(2, {"pool": "a100"}))
        for label in ("exec-train", "exec-evaluate")
    }
    for label, count in (("exec-train", "2"), ("exec-evaluate", "1")):
        pod = pods[label]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == count
        assert pod["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        assert pod["nodeSelector"] == {"pool": "a100"}
    gpu_free = step_pod(spec, platform, "exec-train", _placement(2))["spec"]
    assert "nodeSelector" not in gpu_free  # labels are optional


# ---- programs in the image --------------------------------------------------------------------

SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def _programs_called(paths: list[Path]) -> set[str]:
    """First elements of every subprocess call's argv, and every shutil.which() name."""
    found = set()
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        lists = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        lists[target.id] = node.value
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else None
            if (
                owner_name == "os"
                and node.func.attr in ("system", "popen")
                or (owner_name == "os" and node.func.attr.startswith("exec"))
            ):
                raise AssertionError(f"{path}:{node.lineno}: use subprocess with an argv list")
            if owner_name == "shutil" and node.func.attr == "which":
                (name,) = node.args
                found.add(name.value)
            if owner_name != "subprocess" or node.func.attr not in SUBPROCESS_CALLS:
                continue
            argv = node.args[0]
            if isinstance(argv, ast.Name):
                argv = lists.get(argv.id, argv)
            assert isinstance(argv, ast.List | ast.Tuple) and isinstance(
                argv.elts[0], ast.Constant
            ), f"{path}:{node.lineno}: the program is not a literal"
            found.add(argv.elts[0].value)
    return found


def _image_programs() -> set[str]:
    """Programs of the runtime image: base image, its apt packages, the venv's scripts."""
    parser = DockerfileParser(
        fileobj=io.BytesIO((REPO / "infra" / "docker" / "Dockerfile").read_bytes())
    )
    stages = [i for i, step in enumerate(parser.structure) if step["instruction"] == "FROM"]
    runtime = parser.structure[stages[-1] :]
    packages = set()
    for step in (i for i in runtime if i["instruction"] == "RUN"):
        for command in step["value"].split("&&"):
            words = command.split()
            if words[:2] == ["apt-get", "install"]:
                packages |= {w for w in words[2:] if not w.startswith("-")}
    provides = {"git": {"git"}, "openssh-client": {"ssh"}, "ca-certificates": set()}
    programs = {"sh", "bash", "python", "python3"}  # python:3.11-slim-bookworm
    for package in packages:
        programs |= provides[package]
    # dsnet's own scripts, and those of the closure of dsnet[pipeline]'s requirements (the
    # venv `pip install ".[pipeline]"` builds), read from pyproject.toml
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    programs |= set(project.get("scripts", {}))
    seen: set[str] = set()
    todo = list(project["dependencies"]) + list(project["optional-dependencies"]["pipeline"])
    while todo:
        requirement = Requirement(todo.pop())
        name = requirement.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        programs |= {e.name for e in dist.entry_points if e.group == "console_scripts"}
        for sub in dist.requires or []:
            parsed = Requirement(sub)
            markers = [{"extra": e} for e in requirement.extras] or [{"extra": ""}]
            if parsed.marker is None or any(parsed.marker.evaluate(m) for m in markers):
                todo.append(sub)
    return programs


def test_programs_the_code_runs_are_in_the_image(rendered):
    sources = sorted((REPO / "dsnet").rglob("*.py")) + sorted((REPO / "components").glob("*.py"))
    called = _programs_called(sources)
    assert "git" in called  # data intake; the scan sees it
    for objects in rendered.values():
        for _, pod in _trainjob_pods(objects):
            called.add(pod["spec"]["containers"][0]["command"][0])
    image = _image_programs()
    assert {"torchrun", "dsnet", "dvc"} <= image
    assert called <= image, f"not in the image: {sorted(called - image)}"
