"""Kubernetes manifests: kustomize overlays, schemas, security, RBAC, NetworkPolicies.

Everything is rendered offline with ``kubectl kustomize`` from a temporary copy of
``infra/k8s`` in which the committed ``*.env.example`` files stand in for the git-ignored
secret env files; every object is validated against the Kubernetes 1.30 schemas (strict)
and the Trainer v2 objects against the vendored CRD schemas. How the compiled pipeline and
the manifests agree (namespaces, references, Pod Security, NetworkPolicies) is
``tests/test_cluster.py``.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
from collections import Counter

import jsonschema
import kubernetes_validate
import pytest
import yaml
from k8s_render import (
    K8S,
    K8S_VERSION,
    NAMESPACE,
    REPO,
    TRAINING_RUNTIME_SCHEMA,
    TRAINJOB_SCHEMA,
    pod_security_violations,
    render_overlays,
    runtime_pod,
)

from dsnet.core.errors import InputError
from dsnet.platform.trainjob import dump_manifest, trainjob_manifest

WORKLOADS = ("Deployment", "StatefulSet", "Job")
BASE_KINDS = {
    "Secret": 4,
    "PersistentVolumeClaim": 2,
    "Deployment": 2,
    "StatefulSet": 1,
    "Service": 3,
    "ServiceAccount": 2,
    "Role": 1,
    "RoleBinding": 1,
    "NetworkPolicy": 5,
    "TrainingRuntime": 1,
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """Both overlays rendered from a copy of the tree with the example secrets filled in."""
    return render_overlays(tmp_path_factory.mktemp("k8s"))


def _by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def _one(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _pod_templates(obj: dict, objects: list[dict]) -> list[tuple[str, dict]]:
    """(label, pod template) pairs of a workload object (a TrainJob: its nodes' pods)."""
    if obj["kind"] == "TrainJob":
        runtime = _one(objects, "TrainingRuntime", obj["spec"]["runtimeRef"]["name"])
        return [(f"{obj['metadata']['name']}/node", runtime_pod(runtime, obj))]
    if obj["kind"] in WORKLOADS:
        return [(obj["metadata"]["name"], obj["spec"]["template"])]
    return []


def _all_pods(objects: list[dict]) -> list[tuple[str, dict]]:
    return [pair for obj in objects for pair in _pod_templates(obj, objects)]


def _containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def _as_pod_template(name: str, template: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name},
        "template": template,
    }


def _validate_trainer_object(obj: dict, objects: list[dict]) -> None:
    """A TrainJob or TrainingRuntime against its vendored schema, its pods as PodTemplates."""
    schema = TRAINJOB_SCHEMA if obj["kind"] == "TrainJob" else TRAINING_RUNTIME_SCHEMA
    jsonschema.Draft202012Validator(schema).validate(obj)
    if obj["kind"] == "TrainJob":
        for name, template in _pod_templates(obj, objects):
            kubernetes_validate.validate(
                _as_pod_template(name.replace("/", "-"), template), K8S_VERSION, strict=True
            )


# ---- rendering and schemas ---------------------------------------------------------------


def test_overlays_render_the_stack(rendered):
    assert Counter(o["kind"] for o in rendered["local"]) == Counter(BASE_KINDS)
    assert Counter(o["kind"] for o in rendered["gpu"]) == Counter(
        {**BASE_KINDS, "Job": 1, "TrainJob": 1}
    )
    for objects in rendered.values():
        for obj in objects:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
        names = {o["metadata"]["name"] for o in _by_kind(objects, "Deployment")}
        assert names == {"dsnet-s3", "mlflow"}


def test_every_object_validates_against_kubernetes_schemas(rendered):
    for objects in rendered.values():
        for obj in objects:
            if obj["kind"] in ("TrainJob", "TrainingRuntime"):
                _validate_trainer_object(obj, objects)
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
        lambda s: s.pop("runtimeRef"),
        lambda s: s["trainer"].update(numNodes="two"),
        lambda s: s["trainer"].update(gpus=2),
        lambda s: s["runtimePatches"][0].pop("manager"),
        lambda s: s["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
            "replicatedJobs"
        ][0]["template"]["spec"]["template"]["spec"].update(hostNetwork=True),
        lambda s: s.update(pytorchReplicaSpecs={}),
    ],
    ids=[
        "no-runtime-ref",
        "non-integer-nodes",
        "unknown-trainer-field",
        "patch-without-manager",
        "patch-field-the-trainer-does-not-allow",
        "v1-pytorchjob-field",
    ],
)
def test_vendored_trainjob_schema_rejects_what_the_api_server_rejects(rendered, breakage):
    job = copy.deepcopy(_one(rendered["gpu"], "TrainJob", "dsnet-train"))
    breakage(job["spec"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(TRAINJOB_SCHEMA).validate(job)


def test_vendored_schemas_cite_the_pinned_trainer():
    readme = (K8S / "schemas" / "README.md").read_text()
    pin = yaml.safe_load((K8S / "platform" / "trainer" / "kustomization.yaml").read_text())
    (remote,) = pin["resources"]
    assert remote.endswith("?ref=v2.3.0") and "v2.3.0" in readme
    for schema in (TRAINJOB_SCHEMA, TRAINING_RUNTIME_SCHEMA):
        assert "kubeflow/trainer v2.3.0" in schema["$comment"]
        assert "658725bdae5c7e3a0854d93ac6ff492e109a22ab" in schema["$comment"]


def test_platform_components_are_pinned_and_documented():
    docs = (REPO / "docs" / "operations.md").read_text()
    expected = {"kfp-crds": "2.17.0", "kfp": "2.17.0", "trainer": "v2.3.0"}
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
            assert pod_security_violations(spec, "restricted") == [], name
            assert spec["securityContext"]["runAsUser"] > 0, name
            assert spec["automountServiceAccountToken"] is False, name
            for container in _containers(spec):
                where = f"{name}/{container['name']}"
                assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
                resources = container["resources"]
                assert set(resources["requests"]) >= {"cpu", "memory"}, where
                assert set(resources["limits"]) >= {"cpu", "memory"}, where
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                writable = {"/tmp", "/data", "/var/lib/postgresql/data"}
                assert mounts & writable, f"{where}: no writable mount on a read-only root"
                checked += 1
    # local: seaweedfs, postgres, mlflow (+ its auth-config init); gpu: those + synth, split,
    # the TrainJob's node
    assert checked == 4 + 7


def test_upstream_like_runtime_without_security_context_is_rejected_by_restricted(rendered):
    """The check catches what Trainer's own torch-distributed runtime ships (no securityContext)."""
    runtime = copy.deepcopy(_one(rendered["gpu"], "TrainingRuntime", "dsnet-torch-distributed"))
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    pod["spec"].pop("securityContext")
    pod["spec"]["containers"][0].pop("securityContext")
    job = _one(rendered["gpu"], "TrainJob", "dsnet-train")
    problems = pod_security_violations(runtime_pod(runtime, job)["spec"], "restricted")
    assert "node: allowPrivilegeEscalation not false" in problems
    assert "node: runAsNonRoot not true" in problems


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


def test_rbac_grants_only_trainjob_handling(rendered):
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
        ("trainer.kubeflow.org", "trainjobs"): {"create", "get", "list", "watch", "delete"},
        ("trainer.kubeflow.org", "trainjobs/status"): {"get"},
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
        (NAMESPACE, "pipeline-runner"),
        (NAMESPACE, "default-editor"),
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
        "s3": pods["dsnet-s3"],
        "postgres": pods["postgres"],
        "mlflow": pods["mlflow"],
        "prepare": pods["dsnet-prepare-data"],
        "node": pods["dsnet-train/node"],
        "kfp": {"app": "ml-pipeline"},  # Kubeflow's own pod in the namespace
    }

    def allowed(src: str | tuple, dst: str, port: int) -> bool:
        source = src if isinstance(src, tuple) else (NAMESPACE, pod[src])
        return _ingress_allowed(policies, source, pod[dst], port)

    assert allowed("mlflow", "postgres", 5432)
    assert allowed("mlflow", "s3", 8333)
    assert allowed("node", "s3", 8333)
    assert allowed("node", "mlflow", 5000)
    assert allowed("node", "node", 29500)  # rendezvous
    assert allowed("node", "node", 41000)  # NCCL picks its own ports
    assert allowed(("istio-system", {}), "kfp", 8888)  # not the stack's policies' business

    assert not allowed("node", "postgres", 5432)
    assert not allowed("prepare", "mlflow", 5000)
    assert not allowed("prepare", "s3", 8333)
    assert not allowed("mlflow", "node", 29500)
    assert not allowed("mlflow", "s3", 9333)  # SeaweedFS master and filer stay closed
    assert not allowed((NAMESPACE, {"app": "kfp-ui"}), "mlflow", 5000)
    assert not allowed(("default", pod["mlflow"]), "postgres", 5432)


# ---- the GPU overlay and the TrainJob generator ---------------------------------------------


def test_gpu_overlay_trains_on_the_gpu_pool(rendered):
    job = _one(rendered["gpu"], "TrainJob", "dsnet-train")
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 2)
    assert trainer["image"] == "dsnet:0.1.0"  # infra/k8s/image
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 2
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
        "name": "dsnet-torch-distributed",
    }
    ((_, template),) = _pod_templates(job, rendered["gpu"])
    spec = template["spec"]
    (container,) = spec["containers"]
    assert container["name"] == "node" and container["image"] == "dsnet:0.1.0"
    command = container["command"] + container["args"]
    assert command[command.index("torchrun") :][:5] == [
        "torchrun", "--module", "dsnet", "train", "/data/synthetic",
    ]  # fmt: skip
    assert "[ -e /data/split.json ]" in command[2]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://dsnet-s3:8333"
    assert env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert "nodeSelector" not in spec  # GPU pods rely on the resource and the toleration
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "dsnet-data"}} in spec["volumes"]
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
        "dsnet-s3-data": (["ReadWriteOnce"], "5Gi"),
        "postgres": (["ReadWriteOnce"], "1Gi"),
    }
    assert _storage(rendered["gpu"]) == {
        "dsnet-data": (["ReadWriteMany"], "200Gi"),
        "dsnet-s3-data": (["ReadWriteOnce"], "500Gi"),
        "postgres": (["ReadWriteOnce"], "50Gi"),
    }


def test_mlflow_server_uses_postgres_and_the_s3_store(rendered):
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
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://dsnet-s3:8333"
    names = [e["name"] for e in container["env"]]
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(names)


def test_s3_store_is_a_maintained_seaweedfs_that_sets_up_buckets_and_user(rendered):
    deployment = _one(rendered["gpu"], "Deployment", "dsnet-s3")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/chrislusf/seaweedfs:4.34"  # KFP 2.17.0's own pin
    assert {"-s3", "-s3.port=8333", "-filer", "-dir=/data"} <= set(container["args"])
    script = container["lifecycle"]["postStart"]["exec"]["command"][2]
    assert "for bucket in dsnet-data mlflow" in script
    assert "s3.configure -user dsnet -access_key $AWS_ACCESS_KEY_ID" in script
    assert "-buckets dsnet-data,mlflow" in script
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    service = _one(rendered["gpu"], "Service", "dsnet-s3")
    assert [p["port"] for p in service["spec"]["ports"]] == [8333]


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
    assert (K8S / "overlays" / "gpu" / "trainjob-train.yaml").read_text() == module.render()
    stale = tmp_path / "trainjob-train.yaml"
    stale.write_text(module.render().replace("numNodes: 2", "numNodes: 3"))
    monkeypatch.setattr(module, "OUT", stale)
    assert module.main(["--check"]) == 1
    assert module.main([]) == 0 and stale.read_text() == module.render()


def _job(**kwargs) -> dict:
    arguments = {
        "name": "dsnet-train",
        "image": "registry.example.com/dsnet:1",
        "command_args": ["train", "/data/d", "--split", "/data/s.json", "--out", "/data/o"],
        "namespace": "kubeflow",
    }
    return trainjob_manifest(**{**arguments, **kwargs})


def _runtime(rendered) -> dict:
    return _one(rendered["gpu"], "TrainingRuntime", "dsnet-torch-distributed")


def test_generator_scales_out_gpu_nodes(rendered):
    job = _job(nodes=4, gpus_per_node=4, node_selector={"pool": "a100"}, image_pull_secrets=["reg"])
    _validate_trainer_object(job, rendered["gpu"])
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (4, 4)
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 4
    assert trainer["command"] + trainer["args"] == [
        "torchrun", "--module", "dsnet", "train", "/data/d", "--split", "/data/s.json",
        "--out", "/data/o",
    ]  # fmt: skip
    assert yaml.safe_load(dump_manifest(job)) == job
    spec = runtime_pod(_runtime(rendered), job)["spec"]
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert spec["nodeSelector"] == {"pool": "a100"}
    assert spec["imagePullSecrets"] == [{"name": "reg"}]
    assert pod_security_violations(spec, "restricted") == []


def test_generator_cpu_job_has_no_gpu_resource_toleration_or_selector(rendered):
    job = _job(
        nodes=2, gpus_per_node=0, node_selector={"pool": "a100"}, env={"OMP_NUM_THREADS": "2"}
    )
    _validate_trainer_object(job, rendered["gpu"])
    assert job["spec"]["trainer"]["numProcPerNode"] == 1
    assert "runtimePatches" not in job["spec"]
    spec = runtime_pod(_runtime(rendered), job)["spec"]
    (container,) = spec["containers"]
    assert not any("gpu" in key for key in container["resources"]["limits"])
    assert "tolerations" not in spec and "nodeSelector" not in spec
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["OMP_NUM_THREADS"] == "2" and "NCCL_DEBUG" not in env


def test_generator_user_env_overrides_nccl_defaults():
    job = _job(env={"NCCL_DEBUG": "INFO"})
    env = {e["name"]: e["value"] for e in job["spec"]["trainer"]["env"]}
    assert env["NCCL_DEBUG"] == "INFO" and env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"name": "DSNet_Train"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"namespace": "9ns"}, "namespace"),
        ({"image": ""}, "image"),
        ({"command_args": []}, "command_args"),
        ({"nodes": 0}, "nodes"),
        ({"gpus_per_node": -2}, "gpus_per_node"),
        ({"gpu_type": ""}, "gpu_type"),
    ],
)
def test_generator_rejects_what_the_api_server_would(kwargs, argument):
    with pytest.raises(InputError) as caught:
        _job(**kwargs)
    assert caught.value.path == argument
