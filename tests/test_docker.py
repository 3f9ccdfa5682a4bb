"""Static checks of the `dsnet` image build (infra/docker/Dockerfile, .dockerignore).

No Docker daemon here: the Dockerfile is parsed with dockerfile-parse, its torch-variant
shell logic is run with sh, and the build context is checked against .dockerignore.
"""

from __future__ import annotations

import io
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
TORCH_REQUIREMENTS = REPO / "infra" / "docker" / "torch_requirements.py"


def _parser(**build_args: str) -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes()), build_args=build_args)


def _stages() -> list[list[dict]]:
    """The instructions of each build stage (comments dropped)."""
    stages: list[list[dict]] = []
    for instruction in _parser().structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages


def _values(stage: list[dict], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def _run_script(value: str) -> str:
    """A RUN instruction's shell text without its BuildKit ``--mount`` flags."""
    return re.sub(r"^(--mount=\S+\s+)+", "", value.strip())


def _pyproject_torch_pins() -> list[str]:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in dependencies if re.match(r"torch(vision)?\s*==", d)]


def test_two_stages_and_the_runtime_runs_dsnet_as_non_root():
    build, runtime = _stages()
    assert build[0]["value"].endswith("AS build") and runtime[0]["value"].endswith("AS runtime")
    (user,) = _values(runtime, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 10000 and gid.isdigit() and int(gid) >= 10000
    assert runtime[-1]["instruction"] in {"CMD", "ENTRYPOINT"}
    (entrypoint,) = _values(runtime, "ENTRYPOINT")
    assert entrypoint == '["dsnet"]'  # exec form, so signals reach dsnet
    user_index = [i["instruction"] for i in runtime].index("USER")
    assert all(i["instruction"] != "RUN" for i in runtime[user_index:])
    useradd = " ".join(_values(runtime, "RUN"))
    assert f"--uid {uid}" in useradd and f"--gid {gid}" in useradd
    assert any(v.startswith("--from=build /opt/venv") for v in _values(runtime, "COPY"))


def test_oci_labels_come_from_build_args():
    labels = _parser(REVISION="0123abc", SOURCE_URL="https://example.org/dsnet.git").labels
    assert labels["org.opencontainers.image.revision"] == "0123abc"
    assert labels["org.opencontainers.image.source"] == "https://example.org/dsnet.git"
    assert labels["org.opencontainers.image.title"] == "dsnet"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    defaults = _parser().labels
    assert defaults["org.opencontainers.image.revision"] == "unknown"
    assert defaults["io.dsnet.torch-variant"] == "cuda"
    assert _parser(TORCH_VARIANT="cpu").labels["io.dsnet.torch-variant"] == "cpu"


def test_install_steps_are_the_readmes_not_a_dependency_list():
    text = DOCKERFILE.read_text()
    assert "torch==" not in text and "torchvision==" not in text
    build, _ = _stages()
    installs = []
    for value in _values(build, "RUN"):
        words = shlex.split(_run_script(value).replace(";;", " ; "), posix=True)
        for at, word in enumerate(words):
            if word == "pip" and words[at + 1] == "install":
                installs.append(words[at + 2 :])
    targets = [[w for w in args if not w.startswith("-")][0] for args in installs]
    assert targets == ["$TORCH_INDEX_URL", ".[pipeline]"]
    torch_install = installs[0]
    assert torch_install[:3] == ["--index-url", "$TORCH_INDEX_URL", "-r"]
    assert _values(build, "ARG")[0] == "TORCH_VARIANT=cuda"


def _variant_branch(variant: str, index_url: str) -> subprocess.CompletedProcess:
    build, _ = _stages()
    (script,) = [_run_script(v) for v in _values(build, "RUN") if "TORCH_VARIANT" in v]
    return subprocess.run(
        ["sh", "-c", script],
        env={"PATH": "/usr/bin:/bin", "TORCH_VARIANT": variant, "TORCH_INDEX_URL": index_url},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_torch_variant_build_arg_selects_the_wheels():
    cuda = _variant_branch("cuda", "")
    assert cuda.returncode == 0 and "CUDA" in cuda.stdout
    cpu_without_index = _variant_branch("cpu", "")
    assert cpu_without_index.returncode == 1
    assert "TORCH_INDEX_URL" in cpu_without_index.stderr
    unknown = _variant_branch("rocm", "")
    assert unknown.returncode == 1 and "must be cuda or cpu" in unknown.stderr


def test_torch_requirements_are_read_from_pyproject(tmp_path):
    result = subprocess.run(
        [sys.executable, str(TORCH_REQUIREMENTS), str(REPO / "pyproject.toml")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split("\n")[:2] == _pyproject_torch_pins()
    assert len(_pyproject_torch_pins()) == 2
    broken = tmp_path / "pyproject.toml"
    broken.write_text('[project]\nname = "x"\ndependencies = ["numpy", "torchaudio==2.0"]\n')
    missing = subprocess.run(
        [sys.executable, str(TORCH_REQUIREMENTS), str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1 and "torch, torchvision" in missing.stderr


def _build_context(root: Path) -> set[str]:
    """The files `docker build` (docker-py, Docker's own matching) sends from `root`."""
    from docker.api.build import process_dockerfile
    from docker.utils import tar

    lines = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()]
    exclude = [line for line in lines if line and not line.startswith("#")]  # as docker-py
    dockerfile = process_dockerfile(str(DOCKERFILE.relative_to(REPO)), str(root))
    with tar(str(root), exclude=exclude, dockerfile=dockerfile) as archive:
        return {m.name for m in tarfile.open(fileobj=archive).getmembers() if m.isfile()}


SENSITIVE = [
    ".env",
    ".git/config",
    "infra/k8s/base/secrets/s3.env",
    "dsnet/secrets.env",
    "data/synthetic/annotations.json",
    "mlflow.db",
    "mlartifacts/1/model.pt",
    "models/model.pt",
    "tests/test_k8s.py",
    "dsnet/__pycache__/cli.cpython-311.pyc",
    "dsnet/models/stale.pyc",
    "params/.DS_Store",
]


def test_build_context_holds_what_is_copied_and_nothing_else(tmp_path):
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    root = tmp_path / "context"
    for name in [*tracked, *SENSITIVE]:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file() and name in tracked:
            shutil.copyfile(REPO / name, target)
        else:
            target.write_text("secret\n")
    context = _build_context(root)

    sources = []
    for stage in _stages():
        for value in _values(stage, "COPY"):
            if not value.startswith("--from"):
                sources += value.split()[:-1]
    assert sources

    def copied(path: str) -> bool:
        return any(path == s.rstrip("/") or path.startswith(s.rstrip("/") + "/") for s in sources)

    for source in sources:
        wanted = {
            p for p in tracked if copied(p) and (p == source.rstrip("/") or p.startswith(source))
        }
        assert wanted, f"COPY {source}: not in the repository"
        assert wanted <= context, f"COPY {source}: left out {sorted(wanted - context)[:3]}"
    # an allowlist: nothing reaches the builder that the build does not copy (Docker always
    # sends the Dockerfile and .dockerignore), least of all the planted secrets and stores
    extra = {p for p in context if not copied(p)}
    assert extra == {str(DOCKERFILE.relative_to(REPO)), ".dockerignore"}
    assert not context & set(SENSITIVE)
