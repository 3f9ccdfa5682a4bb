"""Smoke test of a built `dsnet` image, run on its root file system as the image's user.

Nothing starts a container here (``podman run`` cannot set rlimits on this kind of host), so
the image runs the way Kubernetes runs it, without the runtime: ``podman image mount`` gives
its files; a private read-only bind of them is the root (``readOnlyRootFilesystem``), an
empty folder is bound at ``/tmp`` (the emptyDir), ``/dev`` and ``/proc`` are bound in, and
each command runs there with ``chroot --userspec=<the image's USER>``, the image's
environment and its working directory. Build the image, then::

    infra/docker/build.sh --tag localhost/dsnet:dev ...
    DSNET_TEST_IMAGE=localhost/dsnet:dev python -m pytest -m slow tests/test_image.py

Needs root and podman; without ``DSNET_TEST_IMAGE`` the tests are skipped.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipeline" / "dsnet_pipeline.yaml"
IMAGE = os.environ.get("DSNET_TEST_IMAGE", "")
IMAGE_USER = "10001:10001"
NOT_IN_IMAGE = ("proc", "dev", "tmp")  # bound in from the host by the fixture

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not IMAGE, reason="DSNET_TEST_IMAGE names no built dsnet image"),
]


@dataclass
class Image:
    """A mounted image: its read-only root, the host folder at its /tmp, its config."""

    root: Path
    tmp: Path
    config: dict

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run `command` in the image as its user, in its environment and working directory."""
        passwd = (self.root / "etc" / "passwd").read_text().splitlines()
        uid = self.config["User"].split(":")[0]
        home = next(line.split(":")[5] for line in passwd if line.split(":")[2] == uid)
        result = subprocess.run(
            [
                "chroot", f"--userspec={self.config['User']}", str(self.root),
                "/usr/bin/env", "-i", f"--chdir={self.config['WorkingDir']}",
                *self.config["Env"], f"HOME={home}", *command,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(command)[:200]} exited {result.returncode}:\n{result.stderr}")
        return result


def _host(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Iterator[Image]:
    if os.geteuid() != 0 or shutil.which("podman") is None:
        pytest.fail(f"DSNET_TEST_IMAGE={IMAGE}: checking an image needs root and podman")
    (info,) = json.loads(_host("podman", "image", "inspect", IMAGE))
    mounted = _host("podman", "image", "mount", IMAGE).strip()
    root = tmp_path_factory.mktemp("image-root")
    tmp = tmp_path_factory.mktemp("image-tmp")
    tmp.chmod(0o1777)
    done: list[Path] = []
    try:
        _host("mount", "--bind", mounted, str(root))
        done.append(root)
        _host("mount", "--make-private", str(root))  # nothing below reaches podman's mount
        _host("mount", "-o", "remount,bind,ro", str(root))
        for source, target in [(str(tmp), "tmp"), ("/dev", "dev")]:
            _host("mount", "--bind", source, str(root / target))
            done.append(root / target)
        _host("mount", "-t", "proc", "proc", str(root / "proc"))
        done.append(root / "proc")
        yield Image(root, tmp, info["Config"])
    finally:
        for target in reversed(done):
            subprocess.run(["umount", str(target)], check=False)
        subprocess.run(["podman", "image", "unmount", IMAGE], capture_output=True, check=False)


def test_the_image_runs_as_an_unprivileged_user_on_a_read_only_root(image):
    assert image.config["User"] == IMAGE_USER
    assert image.config["Entrypoint"] == ["dsnet"]
    assert image.run("id", "-u").stdout.split() == ["10001"]
    assert "dsnet:x:10001:10001:" in (image.root / "etc" / "passwd").read_text()
    # Only /tmp and output paths take writes: the rest fails even where the user owns it.
    home = image.run("touch", "/home/dsnet/probe", check=False)
    assert home.returncode != 0 and "Read-only file system" in home.stderr
    image.run("touch", "/tmp/probe")


def test_the_cli_starts(image):
    shown = image.run("dsnet", "--help").stdout
    assert "Usage" in shown
    assert all(command in shown for command in ("synth", "split", "train", "intake"))


def _is_component(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Name) and target.id == "dsnet_component"


def component_imports() -> list[tuple[str, str, list[str]]]:
    """``(component, module, names)`` for every import in a KFP component's function body.

    The body is what the component runs in the image (KFP embeds its source), so these are
    the imports that must resolve there.
    """
    found = []
    for path in sorted((REPO / "components").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and any(map(_is_component, node.decorator_list)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import):
                        found += [(node.name, alias.name, []) for alias in inner.names]
                    elif isinstance(inner, ast.ImportFrom) and inner.module:
                        names = [alias.name for alias in inner.names]
                        found.append((node.name, inner.module, names))
    return found


RESOLVE = """
import importlib, json, sys
failed = []
for component, module, names in json.loads(sys.argv[1]):
    try:
        loaded = importlib.import_module(module)
        for name in names:
            if not hasattr(loaded, name):
                importlib.import_module(f"{module}.{name}")
    except Exception as error:
        failed.append(f"{component}: {module} {names}: {type(error).__name__}: {error}")
print(json.dumps(failed))
"""


def test_every_component_body_import_resolves(image):
    imports = component_imports()
    components = {component for component, _, _ in imports}
    assert len(components) == len(list((REPO / "components").glob("*.py"))) - 1  # __init__
    assert any(module.startswith("dsnet") for _, module, _ in imports)
    shown = image.run("python", "-c", RESOLVE, json.dumps(imports)).stdout
    assert json.loads(shown.splitlines()[-1]) == []


RUNNERS = {"run", "Popen", "call", "check_call", "check_output"}


def _program(node: ast.expr, lists: dict[str, ast.expr]) -> str | None:
    """The program named first in a command list literal (or a name bound to one)."""
    if isinstance(node, ast.Name):
        node = lists.get(node.id, node)
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        first = node.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def external_programs() -> dict[str, list[str]]:
    """``{program: [file:line, ...]}`` for every program the library starts or looks up.

    Found in the source: ``subprocess.<run|Popen|call|check_*>`` with a command list (or a
    variable assigned one) and ``shutil.which`` with a literal name.
    """
    programs: dict[str, list[str]] = {}
    for path in sorted((REPO / "dsnet").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lists = {
            target.id: node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
                continue
            program = None
            if func.value.id == "subprocess" and func.attr in RUNNERS:
                program = _program(node.args[0], lists)
            elif func.value.id == "shutil" and func.attr == "which":
                arg = node.args[0]
                program = arg.value if isinstance(arg, ast.Constant) else None
            if program:
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                programs.setdefault(program, []).append(where)
    return programs


def test_every_program_the_library_calls_is_in_the_image(image):
    programs = external_programs()
    # dvc: the CLI of dvc.yaml's pipeline and of the data versioning; sh, mktemp, python3:
    # what the compiled KFP command runs before the component.
    wanted = {**programs, "dvc": ["dvc.yaml"], "sh": ["kfp"], "mktemp": ["kfp"], "python3": ["kfp"]}
    script = 'for p; do command -v "$p" > /dev/null || echo "$p"; done'
    missing = image.run("sh", "-c", script, "sh", *wanted).stdout.split()
    assert not missing, "not in the image: " + "; ".join(
        f"{name} (called at {', '.join(wanted[name])})" for name in missing
    )
    assert image.run("dvc", "--version").stdout.strip()


def _pipeline() -> dict:
    return next(yaml.safe_load_all(PIPELINE.read_text(encoding="utf-8")))


def _artifact(name: str, definition: dict, uri: str) -> dict:
    return {"name": name, "type": definition["artifactType"], "uri": uri, "metadata": {}}


def pipeline_defaults(task: str) -> dict:
    """The parameter values the compiled pipeline's top-level `task` gets by default."""
    spec = _pipeline()
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    inputs = spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"]
    return {
        name: defaults[source["componentInputParameter"]]["defaultValue"]
        for name, source in inputs.items()
    }


def run_component(
    image: Image, component: str, out: str, artifacts: dict[str, str], parameters: dict
) -> dict:
    """Run `component` of the compiled pipeline in `image` the way KFP's launcher does.

    The container's command and arguments come from the compiled pipeline YAML; ``{{$}}``
    becomes the executor input (also left in ``<out>/executor_input.json``): `artifacts`
    maps input names to paths in the image, `parameters` gives the parameter values, and
    each output artifact goes to ``<out>/<name>``.

    Returns:
        The executor output the component wrote (``<out>/executor_output.json``).
    """
    spec = _pipeline()
    definition = spec["components"][f"comp-{component}"]
    container = spec["deploymentSpec"]["executors"][definition["executorLabel"]]["container"]
    inputs = definition.get("inputDefinitions", {}).get("artifacts", {})
    outputs = definition.get("outputDefinitions", {}).get("artifacts", {})
    executor_input = {
        "inputs": {
            "parameterValues": parameters,
            "artifacts": {
                name: {"artifacts": [_artifact(name, inputs[name], path)]}
                for name, path in artifacts.items()
            },
        },
        "outputs": {
            "artifacts": {
                name: {"artifacts": [_artifact(name, output, f"{out}/{name}")]}
                for name, output in outputs.items()
            },
            "outputFile": f"{out}/executor_output.json",
        },
    }
    image.run("mkdir", "-p", out)  # as the image's user, like the launcher's output folder
    host_out = image.tmp / out.removeprefix("/tmp/")
    (host_out / "executor_input.json").write_text(json.dumps(executor_input))
    args = [
        (host_out / "executor_input.json").read_text() if arg == "{{$}}" else arg
        for arg in container["args"]
    ]
    image.run(*container["command"], *args)
    return json.loads((host_out / "executor_output.json").read_text())


def test_synth_split_and_kfp_components_run_in_the_image(image):
    image.run("dsnet", "synth", "--out", "/tmp/chain/data", "--patients", "2")
    image.run("dsnet", "split", "/tmp/chain/data", "--out", "/tmp/chain/split.json")
    cli_split = json.loads((image.tmp / "chain" / "split.json").read_text())
    assert sorted(cli_split["train"] + cli_split["test"]) == ["SYN-0001", "SYN-0002"]

    resolved = run_component(
        image,
        "resolve-params",
        "/tmp/chain/resolve-params",
        {},
        pipeline_defaults("resolve-params"),
    )
    params = "/tmp/chain/resolve-params/params"
    assert yaml.safe_load((image.tmp / params.removeprefix("/tmp/")).read_text())["split"]
    assert resolved["artifacts"]["params"]["artifacts"][0]["metadata"]["params_hash"]

    output = run_component(
        image, "split", "/tmp/chain/split", {"data": "/tmp/chain/data", "params": params}, {}
    )
    component_split = json.loads((image.tmp / "chain" / "split" / "patient_split").read_text())
    assert component_split == cli_split  # the same step, the same parameters, the same split
    metadata = output["artifacts"]["patient_split"]["artifacts"][0]["metadata"]
    assert (metadata["train_patients"], metadata["test_patients"]) == (1, 1)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SECRET_NAMES = {".netrc", ".git-credentials", ".pypirc", "id_rsa", "id_ed25519", "credentials"}


def test_the_image_holds_no_secrets_tests_or_git(image):
    ours = {path.name: _sha256(path) for path in (REPO / "tests").rglob("*.py")}
    found = []
    for folder, dirs, files in os.walk(image.root):
        here = Path(folder)
        if here == image.root:
            dirs[:] = [d for d in dirs if d not in NOT_IN_IMAGE]
        found += [str(here / d) for d in dirs if d == ".git"]
        for name in files:
            path = here / name
            secret = name == ".git" or name in SECRET_NAMES or name.endswith(".env")
            if secret or (name in ours and path.is_file() and _sha256(path) == ours[name]):
                found.append(str(path))
    assert found == []
    project = image.root / "opt" / "dsnet"
    shipped = sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())
    assert shipped == ["params.yaml"] + sorted(
        p.relative_to(REPO).as_posix() for p in (REPO / "params").glob("*.yaml")
    )
    names = [entry.split("=", 1)[0] for entry in image.config["Env"]]
    assert not [n for n in names if any(w in n for w in ("KEY", "SECRET", "TOKEN", "PASSWORD"))]
