"""dvc.yaml: stages, precise deps/params/outs, the real-data path and the S3 remote (moto)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import yaml
from project_copy import ROOT, checked, commit, project_copy, run, tree_bytes, use_remote
from servers import ACCESS_KEY, SECRET_KEY

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
# the step function behind each stage: its import closure is the stage's code
STEP_MODULES = {
    "synth": "dsnet.synth.generate",
    "split": "dsnet.data.split",
    "train": "dsnet.training.train",
    "evaluate": "dsnet.evaluation.evaluate",
    "register": "dsnet.lifecycle.registry.register",
}
# imported by a step but without influence on its outputs (documented in dvc.yaml)
NOT_DEPS = {
    "train": {
        "dsnet/tracking/runs.py",
        "dsnet/tracking/lineage.py",
        "dsnet/tracking/inputs.py",
        "dsnet/tracking/system_metrics.py",
        "dsnet/inference/pyfunc.py",
        "dsnet/inference/overlays.py",
    },
    "evaluate": {
        "dsnet/tracking/runs.py",
        "dsnet/tracking/lineage.py",
        "dsnet/tracking/inputs.py",
        "dsnet/tracking/system_metrics.py",
        "dsnet/inference/pyfunc.py",
    },
    "register": {"dsnet/inference/overlays.py"},
}


def module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported_dsnet_modules(path: Path) -> set[str]:
    """Every ``dsnet...`` module named by an import statement in `path` (any scope)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dsnet")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            module = node.module
            if module.startswith("dsnet"):
                found |= {module, *(f"{module}.{a.name}" for a in node.names)}
    return found


def import_closure(module: str) -> set[str]:
    """Source files (repo-relative) reachable from `module` through dsnet imports."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        todo += sorted(imported_dsnet_modules(path))
    return {str(module_file(m).relative_to(ROOT)) for m in seen}


def code_deps(stage: dict) -> set[str]:
    return {d for d in stage["deps"] if d.startswith("dsnet/")}


def test_stages_are_dsnet_steps_in_order_reading_only_their_params():
    assert list(STAGES) == ["synth", "split", "train", "evaluate", "register"]
    for name, stage in STAGES.items():
        assert stage["cmd"].split()[:2] == ["dsnet", name]
    assert {name: stage["params"] for name, stage in STAGES.items()} == {
        "synth": ["synth"],
        "split": ["split"],
        "train": ["preprocess", "model", "train"],
        "evaluate": ["evaluate", "register.model_name"],
        "register": ["data.dir", "register", "evaluate.decision_threshold"],
    }
    # the data dir is selected by params (data.dir), not hard-wired after synth
    for name in ("split", "train", "evaluate", "register"):
        assert "${data.dir}" in STAGES[name]["deps"]


@pytest.mark.parametrize("stage", list(STEP_MODULES))
def test_code_deps_are_exactly_the_modules_the_step_imports(stage):
    expected = import_closure(STEP_MODULES[stage]) - NOT_DEPS.get(stage, set())
    assert code_deps(STAGES[stage]) == expected


def test_metrics_plots_and_outputs_are_declared_for_dvc():
    evaluate, register, train = STAGES["evaluate"], STAGES["register"], STAGES["train"]
    assert evaluate["metrics"] == [{"metrics.json": {"cache": False}}]
    assert register["metrics"] == [{"register.json": {"cache": False}}]
    assert train["plots"] == [{"plots/train_loss.csv": {"cache": False, "x": "epoch"}}]
    assert "models/model.pt" in train["outs"]
    assert STAGES["synth"]["outs"] == ["data/synthetic"]
    plots = {next(iter(p)): p[next(iter(p))] for p in DVC_YAML["plots"] if isinstance(p, dict)}
    assert plots["Confusion matrix"]["template"] == "confusion"
    assert plots["Precision-recall (IoU 0.5)"]["x"] == "recall"
    assert plots["Training loss"]["y"] == {"plots/train_loss.csv": "loss"}


def test_dvc_builds_the_stage_graph_from_the_templated_pipeline():
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        graph = repo.index.graph
        stages = {s.addressing: s for s in graph.nodes}
        edges = {(a.addressing, b.addressing) for a, b in graph.edges}
    # networkx edges point from a stage to the stage it depends on
    assert {("split", "synth"), ("train", "split"), ("evaluate", "train")} <= edges
    assert ("register", "evaluate") in edges
    assert [d.def_path for d in stages["split"].deps][0] == "data/synthetic"


@pytest.fixture()
def ingested_project(tmp_path):
    """A project copy whose data dir is a tiny real-style set: synth -> ingest -> dvc add."""
    repo = project_copy(tmp_path / "repo", {"data": {"dir": "data/real"}})
    source = tmp_path / "hospital"
    checked([sys.executable, "-m", "dsnet", "synth", "--out", str(source), "--patients", "4"], repo)
    checked([sys.executable, "-m", "dsnet", "ingest", str(source), "--out", "data/real",
             "--key", "test-key-0123456789"], repo)  # fmt: skip
    checked(["dvc", "add", "-q", "data/real"], repo)
    commit(repo, "real data set under DVC")
    return repo


def test_a_real_data_set_flows_through_the_pipeline_and_the_s3_remote(
    ingested_project, tmp_path, s3_server
):
    repo = ingested_project
    real_md5 = yaml.safe_load((repo / "data" / "real.dvc").read_text())["outs"][0]["md5"]
    # `dvc repro register` would run split -> train -> evaluate -> register on data/real;
    # its data stage is split, which must read data/real and never need synth.
    checked(["dvc", "repro", "split"], repo)
    assert not (repo / "data" / "synthetic").exists()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert "synth" not in lock
    split_deps = {d["path"]: d.get("md5") for d in lock["split"]["deps"]}
    assert split_deps["data/real"] == real_md5
    split = json.loads((repo / "data" / "split.json").read_text())
    annotations = json.loads((repo / "data" / "real" / "annotations.json").read_text())
    patients = {image["patient_id"] for image in annotations["images"]}
    assert set(split["train"]) | set(split["test"]) == patients
    assert len(patients) == 4
    commit(repo, "split of the real data")

    use_remote(repo, s3_server.url, ACCESS_KEY, SECRET_KEY)
    pushed = checked(["dvc", "push"], repo, env=s3_server.env)
    assert "pushed" in pushed.stdout + pushed.stderr

    clone = tmp_path / "clone"
    checked(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "data" / "real").exists()
    use_remote(clone, s3_server.url, ACCESS_KEY, SECRET_KEY)
    checked(["dvc", "pull", "data/real.dvc"], clone, env=s3_server.env)
    assert tree_bytes(clone / "data" / "real") == tree_bytes(repo / "data" / "real")
    status = checked(["dvc", "status", "--json", "data/real.dvc", "split"], clone)
    assert json.loads(status.stdout) == {}


def test_the_committed_config_names_the_remote_without_secrets():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "url = s3://dsnet-data/dvcstore" in config
    assert "remote = storage" in config
    for secret in ("access_key_id", "secret_access_key", "endpointurl"):
        assert secret not in config
    assert "/config.local" in (ROOT / ".dvc" / ".gitignore").read_text().split()


def test_push_without_s3_credentials_fails_clearly(tmp_path):
    repo = project_copy(tmp_path / "repo")
    (repo / "notes.txt").write_text("tracked by DVC")
    checked(["dvc", "add", "-q", "notes.txt"], repo)
    env = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    pushed = run(["dvc", "push"], repo, env=env, timeout=120)
    assert pushed.returncode != 0
    assert "Unable to locate credentials" in pushed.stdout + pushed.stderr
