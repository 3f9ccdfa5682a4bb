"""Kubernetes manifests: kustomize overlays, schemas, security, RBAC, NetworkPolicies.

Everything is rendered offline with ``kubectl kustomize`` from a temporary copy of
``infra/k8s`` in which the committed ``*.env.example`` files stand in for the git-ignored
secret env files; every object is validated against the Kubernetes 1.30 schemas (strict)
and the PyTorchJob against the vendored CRD schema.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from dsnet.errors import InputError
from dsnet.k8s_jobs import dump_manifest, pytorchjob_manifest

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "infra" / "k8s"
K8S_VERSION = "1.30"
NAMESPACE = "dsnet"
PYTORCHJOB_SCHEMA = json.loads((K8S / "schemas" / "pytorchjob-kubeflow.org-v1.json").read_text())
WORKLOADS = ("Deployment", "StatefulSet", "Job", "PyTorchJob")
BASE_KINDS = {
    "Namespace": 1,
    "Secret": 5,
    "ConfigMap": 1,
    "PersistentVolumeClaim": 2,
    "Deployment": 2,
    "StatefulSet": 1,
    "Job": 1,
    "Service": 3,
    "ServiceAccount": 2,
    "Role": 1,
    "RoleBinding": 1,
    "NetworkPolicy": 5,
}


def _render(tree: Path, overlay: str) -> list[dict]:
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


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """Both overlays rendered from a copy of the tree with the example secrets filled in."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.env", "__pycache__"))
    for example in (tree / "base" / "secrets").glob("*.env.example"):
        shutil.copyfile(example, example.with_suffix(""))
    return {overlay: _render(tree, overlay) for overlay in ("local", "gpu")}


def _by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def _one(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _pod_templates(obj: dict) -> list[tuple[str, dict]]:
    """(label, pod template) pairs of a workload object."""
    if obj["kind"] == "PyTorchJob":
        return [
            (f"{obj['metadata']['name']}/{role}", spec["template"])
            for role, spec in obj["spec"]["pytorchReplicaSpecs"].items()
        ]
    if obj["kind"] in WORKLOADS:
        return [(obj["metadata"]["name"], obj["spec"]["template"])]
    return []


def _all_pods(objects: list[dict]) -> list[tuple[str, dict]]:
    return [pair for obj in objects for pair in _pod_templates(obj)]


def _containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def _as_pod_template(name: str, template: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name},
        "template": template,
    }


def _validate_pytorchjob(job: dict) -> None:
    jsonschema.Draft202012Validator(PYTORCHJOB_SCHEMA).validate(job)
    for role, spec in job["spec"]["pytorchReplicaSpecs"].items():
        kubernetes_validate.validate(
            _as_pod_template(f"{job['metadata']['name']}-{role.lower()}", spec["template"]),
            K8S_VERSION,
            strict=True,
        )


# ---- rendering and schemas ---------------------------------------------------------------


def test_overlays_render_the_stack(rendered):
    assert Counter(o["kind"] for o in rendered["local"]) == Counter(BASE_KINDS)
    assert Counter(o["kind"] for o in rendered["gpu"]) == Counter(
        {**BASE_KINDS, "Job": 2, "PyTorchJob": 1}
    )
    for objects in rendered.values():
        for obj in objects:
            if obj["kind"] != "Namespace":
                assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
        names = {o["metadata"]["name"] for o in _by_kind(objects, "Deployment")}
        assert names == {"minio", "mlflow"}


def test_every_object_validates_against_kubernetes_schemas(rendered):
    for objects in rendered.values():
        for obj in objects:
            if obj["kind"] == "PyTorchJob":
                _validate_pytorchjob(obj)
            else:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_strict_kubernetes_validation_rejects_unknown_fields(rendered):
    deployment = copy.deepcopy(_one(rendered["local"], "Deployment", "mlflow"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePolicy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda s: s["pytorchReplicaSpecs"]["Master"].update(replicas=2),
        lambda s: s["pytorchReplicaSpecs"].update(Chief=s["pytorchReplicaSpecs"]["Master"]),
        lambda s: s["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].update(
            name="trainer"
        ),
        lambda s: s["pytorchReplicaSpecs"]["Worker"].update(restartPolicy="Sometimes"),
        lambda s: s.update(elasticPolicy={"nProcPerNode": 2}),
        lambda s: s.pop("pytorchReplicaSpecs"),
        lambda s: s["runPolicy"].update(cleanPodPolicy="Everything"),
        lambda s: s.update(nprocPerNode="many"),
    ],
    ids=[
        "two-masters",
        "unknown-replica-type",
        "no-pytorch-container",
        "bad-restart-policy",
        "elastic-nproc-with-nprocPerNode",
        "no-replica-specs",
        "bad-clean-pod-policy",
        "bad-nproc",
    ],
)
def test_vendored_pytorchjob_schema_rejects_what_the_operator_rejects(rendered, breakage):
    job = copy.deepcopy(_one(rendered["gpu"], "PyTorchJob", "dsnet-train"))
    breakage(job["spec"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(PYTORCHJOB_SCHEMA).validate(job)


def test_vendored_schema_cites_the_pinned_training_operator():
    comment = PYTORCHJOB_SCHEMA["$comment"]
    assert "kubeflow/training-operator v1.9.0" in comment
    assert "kubeflow.org_pytorchjobs.yaml" in comment
    pin = yaml.safe_load(
        (K8S / "platform" / "training-operator" / "kustomization.yaml").read_text()
    )
    assert pin["resources"][0].endswith("?ref=v1.9.0")


def test_platform_components_are_pinned_and_documented():
    docs = (REPO / "docs" / "operations.md").read_text()
    expected = {"kfp-crds": "2.17.0", "kfp": "2.17.0", "training-operator": "v1.9.0"}
    for component, version in expected.items():
        kustomization = yaml.safe_load(
            (K8S / "platform" / component / "kustomization.yaml").read_text()
        )
        (remote,) = kustomization["resources"]
        assert remote.startswith("github.com/kubeflow/")
        assert remote.endswith(f"?ref={version}")
        assert f"infra/k8s/platform/{component}" in docs
        assert version in docs


def test_every_image_is_pinned(rendered):
    for objects in rendered.values():
        for name, pod in _all_pods(objects):
            for container in _containers(pod["spec"]):
                image = container["image"]
                tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
                assert tag and tag != "latest", f"{name}/{container['name']}: {image}"


# ---- security ------------------------------------------------------------------------------


def test_every_container_runs_restricted_with_resources(rendered):
    checked = 0
    for objects in rendered.values():
        for name, pod in _all_pods(objects):
            spec = pod["spec"]
            pod_security = spec["securityContext"]
            assert pod_security["runAsNonRoot"] is True, name
            assert pod_security["runAsUser"] > 0, name
            assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert spec["automountServiceAccountToken"] is False, name
            assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
            assert not any("hostPath" in v for v in spec.get("volumes", [])), name
            for container in _containers(spec):
                where = f"{name}/{container['name']}"
                security = container["securityContext"]
                assert security["runAsNonRoot"] is True, where
                assert security["allowPrivilegeEscalation"] is False, where
                assert security["capabilities"] == {"drop": ["ALL"]}, where
                assert security["readOnlyRootFilesystem"] is True, where
                assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
                assert not security.get("privileged"), where
                resources = container["resources"]
                assert set(resources["requests"]) >= {"cpu", "memory"}, where
                assert set(resources["limits"]) >= {"cpu", "memory"}, where
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                writable = {"/tmp", "/data", "/var/lib/postgresql/data"}
                assert mounts & writable, f"{where}: no writable mount on a read-only root"
                checked += 1
    # local: minio, mc, postgres, mlflow (+ its auth-config init); gpu: those + synth, split,
    # 2 x (wait, pytorch)
    assert checked == 5 + 11


def test_namespace_enforces_restricted_pod_security(rendered):
    for objects in rendered.values():
        (namespace,) = _by_kind(objects, "Namespace")
        assert namespace["metadata"]["name"] == NAMESPACE
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_references_resolve_to_rendered_objects(rendered):
    for objects in rendered.values():
        secrets = {s["metadata"]["name"]: s for s in _by_kind(objects, "Secret")}
        config_maps = {c["metadata"]["name"] for c in _by_kind(objects, "ConfigMap")}
        claims = {p["metadata"]["name"] for p in _by_kind(objects, "PersistentVolumeClaim")}
        accounts = {a["metadata"]["name"] for a in _by_kind(objects, "ServiceAccount")}
        for name, pod in _all_pods(objects):
            spec = pod["spec"]
            assert spec.get("serviceAccountName", "default") in accounts | {"default"}, name
            for volume in spec.get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims, name
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in config_maps, name
            for container in _containers(spec):
                for source in container.get("envFrom", []):
                    assert source["secretRef"]["name"] in secrets, name
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["key"] in secrets[ref["name"]]["data"], f"{name}: {ref}"


def test_secrets_come_only_from_git_ignored_env_files():
    tracked = subprocess.run(
        ["git", "ls-files", "infra"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [path for path in tracked if path.endswith(".env")]
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    for generator in kustomization["secretGenerator"]:
        (env_file,) = generator["envs"]
        real = K8S / "base" / env_file
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", str(real)], cwd=REPO, check=False
        ).returncode
        assert ignored == 0, f"{real} is not git-ignored"
        example = real.with_name(real.name + ".example")
        values = dict(
            line.split("=", 1)
            for line in example.read_text().splitlines()
            if line and not line.startswith("#")
        )
        for key, value in values.items():
            if re.search("PASSWORD|SECRET", key):
                assert value.startswith("CHANGE_ME"), f"{example}: {key} is not a placeholder"


def test_no_plaintext_secrets_in_infra_and_docs():
    tracked = subprocess.run(
        ["git", "ls-files", "infra", "docs/operations.md", ".dockerignore"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    files = [REPO / path for path in tracked] + [
        p for p in K8S.rglob("*") if p.is_file() and p.suffix in {".yaml", ".json", ".example"}
    ]
    patterns = [
        re.compile(r"AKIA[0-9A-Z]{16}"),
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        re.compile(
            r"(?i)(password|secret_access_key|secret)\s*[:=]\s*['\"]?(?!CHANGE_ME)[A-Za-z0-9/+]{12,}"
        ),
    ]
    for path in set(files):
        text = path.read_text(encoding="utf-8", errors="replace")
        for pattern in patterns:
            assert not pattern.search(text), f"{path}: matches {pattern.pattern}"
        if path.suffix == ".yaml":
            kinds = {d.get("kind") for d in yaml.safe_load_all(text) if isinstance(d, dict)}
            assert "Secret" not in kinds, f"{path}: a committed Secret"


# ---- RBAC and NetworkPolicies ----------------------------------------------------------------


def test_rbac_grants_only_pytorchjob_handling(rendered):
    objects = rendered["gpu"]
    assert not _by_kind(objects, "ClusterRole") and not _by_kind(objects, "ClusterRoleBinding")
    (role,) = _by_kind(objects, "Role")
    grants = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert grants == {
        ("kubeflow.org", "pytorchjobs"): {"create", "get", "list", "watch", "delete"},
        ("kubeflow.org", "pytorchjobs/status"): {"get"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "pods/log"): {"get"},
    }
    (binding,) = _by_kind(objects, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert {(s["namespace"], s["name"]) for s in binding["subjects"]} == {
        (NAMESPACE, "dsnet-pipeline"),
        ("kubeflow", "pipeline-runner"),
    }


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "the checker understands matchLabels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_admits(peer: dict, policy_ns: str, src_ns: str, src_labels: dict) -> bool:
    ns_labels = {"kubernetes.io/metadata.name": src_ns}
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], ns_labels):
            return False
    elif src_ns != policy_ns:
        return False
    return _selects(peer.get("podSelector", {}), src_labels)


def _ingress_allowed(policies, src: tuple[str, dict], dst_labels: dict, port: int) -> bool:
    """NetworkPolicy ingress semantics for pods in the dsnet namespace (matchLabels only)."""
    src_ns, src_labels = src
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], dst_labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            peers = rule.get("from", [])
            if ports and port not in ports:
                continue
            if not peers or any(
                _peer_admits(peer, policy["metadata"]["namespace"], src_ns, src_labels)
                for peer in peers
            ):
                return True
    return False


def test_network_policies_open_exactly_the_intended_flows(rendered):
    objects = rendered["gpu"]
    policies = _by_kind(objects, "NetworkPolicy")
    pods = {name: pod["metadata"]["labels"] for name, pod in _all_pods(objects)}
    pod = {
        "minio": pods["minio"],
        "postgres": pods["postgres"],
        "mlflow": pods["mlflow"],
        "minio-setup": pods["minio-setup"],
        "prepare": pods["dsnet-prepare-data"],
        "master": pods["dsnet-train/Master"],
        "worker": pods["dsnet-train/Worker"],
    }
    kfp_step = ("kubeflow", {"pipelines.kubeflow.org/v2_component": "true"})

    def allowed(src: str | tuple, dst: str, port: int) -> bool:
        source = src if isinstance(src, tuple) else (NAMESPACE, pod[src])
        return _ingress_allowed(policies, source, pod[dst], port)

    assert allowed("mlflow", "postgres", 5432)
    assert allowed("mlflow", "minio", 9000)
    assert allowed("minio-setup", "minio", 9000)
    assert allowed("master", "minio", 9000)
    assert allowed("worker", "mlflow", 5000)
    assert allowed("worker", "master", 23456)
    assert allowed("master", "worker", 41000)  # NCCL picks its own ports
    assert allowed(kfp_step, "mlflow", 5000)
    assert allowed(kfp_step, "minio", 9000)

    assert not allowed("master", "postgres", 5432)
    assert not allowed(kfp_step, "postgres", 5432)
    assert not allowed("minio-setup", "postgres", 5432)
    assert not allowed("prepare", "mlflow", 5000)
    assert not allowed("mlflow", "master", 23456)
    assert not allowed("mlflow", "minio", 9001)  # the console stays closed
    assert not allowed(("kubeflow", {"app": "other"}), "mlflow", 5000)
    assert not allowed(("default", pod["mlflow"]), "postgres", 5432)


# ---- the GPU overlay and the PyTorchJob generator ---------------------------------------------


def test_gpu_overlay_trains_on_the_gpu_pool(rendered):
    job = _one(rendered["gpu"], "PyTorchJob", "dsnet-train")
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 1
    assert job["spec"]["nprocPerNode"] == "2"
    for role in ("Master", "Worker"):
        spec = specs[role]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["name"] == "pytorch"
        assert container["image"] == "registry.example.com/dsnet:0.1.0"
        assert container["command"] == ["torchrun"]
        assert container["args"][:4] == ["--module", "dsnet", "train", "/data/synthetic"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["NCCL_SOCKET_IFNAME"] == "eth0"
        assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "dsnet-data"}} in spec[
            "volumes"
        ]
        (wait,) = spec["initContainers"]
        assert {"name": "WAIT_0", "value": "/data/split.json"} in wait["env"]
    prepare = _one(rendered["gpu"], "Job", "dsnet-prepare-data")["spec"]["template"]["spec"]
    assert prepare["initContainers"][0]["args"] == ["synth", "--out", "/data/synthetic"]
    assert prepare["containers"][0]["args"] == [
        "split",
        "/data/synthetic",
        "--out",
        "/data/split.json",
    ]
    assert "nvidia.com/gpu" not in yaml.safe_dump(rendered["local"])


def _storage(objects: list[dict]) -> dict[str, tuple[list[str], str]]:
    sizes = {
        p["metadata"]["name"]: (
            p["spec"]["accessModes"],
            p["spec"]["resources"]["requests"]["storage"],
        )
        for p in _by_kind(objects, "PersistentVolumeClaim")
    }
    (template,) = _one(objects, "StatefulSet", "postgres")["spec"]["volumeClaimTemplates"]
    sizes["postgres"] = (
        template["spec"]["accessModes"],
        template["spec"]["resources"]["requests"]["storage"],
    )
    return sizes


def test_overlays_size_the_volumes(rendered):
    assert _storage(rendered["local"]) == {
        "dsnet-data": (["ReadWriteOnce"], "2Gi"),
        "minio-data": (["ReadWriteOnce"], "5Gi"),
        "postgres": (["ReadWriteOnce"], "1Gi"),
    }
    assert _storage(rendered["gpu"]) == {
        "dsnet-data": (["ReadWriteMany"], "200Gi"),
        "minio-data": (["ReadWriteOnce"], "500Gi"),
        "postgres": (["ReadWriteOnce"], "50Gi"),
    }


def test_mlflow_server_uses_postgres_and_minio(rendered):
    (container,) = _one(rendered["gpu"], "Deployment", "mlflow")["spec"]["template"]["spec"][
        "containers"
    ]
    args = container["args"]
    option = dict(zip(args[1::2], args[2::2], strict=False))
    assert args[0] == "server"
    assert option["--backend-store-uri"].startswith(
        "postgresql://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@postgres:5432/"
    )
    assert option["--artifacts-destination"] == "s3://mlflow"
    assert option["--host"] == "0.0.0.0"
    assert option["--app-name"] == "basic-auth"  # authentication (docs/lifecycle.md)
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/auth/basic_auth.ini"
    assert {"name": "mlflow-auth"} in [ref["secretRef"] for ref in container["envFrom"]]
    pod = _one(rendered["gpu"], "Deployment", "mlflow")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert "/tmp/basic_auth.ini" in init["args"][0] and "PASSWORD" not in str(init.get("env"))
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio:9000"
    # $(VAR) expansion only sees variables defined before use: the credentials come first.
    names = [e["name"] for e in container["env"]]
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(names)
    setup = _one(rendered["gpu"], "Job", "minio-setup")["spec"]["template"]["spec"]["containers"][0]
    script = setup["args"][0]
    assert "mc mb --ignore-existing dsnet/dsnet-data" in script
    assert "mc mb --ignore-existing dsnet/mlflow" in script


def _load_render_script():
    spec = importlib.util.spec_from_file_location(
        "render_training_job", K8S / "render_training_job.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_static_training_job_is_the_generators_output(tmp_path, monkeypatch):
    check = subprocess.run(
        [sys.executable, str(K8S / "render_training_job.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    module = _load_render_script()
    assert (K8S / "overlays" / "gpu" / "pytorchjob-train.yaml").read_text() == module.render()
    stale = tmp_path / "pytorchjob-train.yaml"
    stale.write_text(module.render().replace("replicas: 1", "replicas: 3"))
    monkeypatch.setattr(module, "OUT", stale)
    assert module.main(["--check"]) == 1
    assert module.main([]) == 0 and stale.read_text() == module.render()


def _job(**kwargs) -> dict:
    arguments = {
        "name": "dsnet-train",
        "image": "registry.example.com/dsnet:1",
        "command_args": ["train", "/data/d", "--split", "/data/s.json", "--out", "/data/o"],
    }
    return pytorchjob_manifest(**{**arguments, **kwargs})


def test_generator_scales_out_master_and_workers():
    job = _job(
        workers=3, gpus_per_worker=4, data_pvc="dsnet-data", env_from_secrets=["s3-credentials"]
    )
    _validate_pytorchjob(job)
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert (specs["Master"]["replicas"], specs["Worker"]["replicas"]) == (1, 3)
    assert job["spec"]["nprocPerNode"] == "4"
    master = specs["Master"]["template"]
    assert master == specs["Worker"]["template"] and master is not specs["Worker"]["template"]
    assert "&id" not in dump_manifest(job)  # no YAML anchors between the replicas
    assert yaml.safe_load(dump_manifest(job)) == job
    (container,) = master["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert master["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert container["args"] == [
        "--module",
        "dsnet",
        "train",
        "/data/d",
        "--split",
        "/data/s.json",
        "--out",
        "/data/o",
    ]


def test_generator_master_only_cpu_job():
    job = _job(workers=0, gpus_per_worker=0, env={"OMP_NUM_THREADS": "2"})
    _validate_pytorchjob(job)
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert job["spec"]["nprocPerNode"] == "1"
    spec = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    (container,) = spec["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "tolerations" not in spec and "nodeSelector" not in spec
    assert {e["name"]: e["value"] for e in container["env"]} == {"OMP_NUM_THREADS": "2"}
    assert "/data" not in {m["mountPath"] for m in container["volumeMounts"]}


def test_generator_user_env_and_tolerations_override_defaults():
    taint = {"key": "pool", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
    job = _job(env={"NCCL_DEBUG": "INFO"}, tolerations=[taint], node_selector={"pool": "gpu"})
    spec = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["NCCL_DEBUG"] == "INFO" and env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert spec["tolerations"] == [taint] and spec["nodeSelector"] == {"pool": "gpu"}


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"name": "DSNet_Train"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"namespace": "9ns"}, "namespace"),
        ({"image": ""}, "image"),
        ({"command_args": []}, "command_args"),
        ({"workers": -1}, "workers"),
        ({"gpus_per_worker": -2}, "gpus_per_worker"),
        ({"wait_for": ["/data/split.json"]}, "wait_for"),
    ],
)
def test_generator_rejects_what_the_operator_would(kwargs, argument):
    with pytest.raises(InputError) as caught:
        _job(**kwargs)
    assert caught.value.path == argument
