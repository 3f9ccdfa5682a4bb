"""Static checks of the `dsnet` image build (infra/docker/Dockerfile, .dockerignore).

No Docker daemon here: the Dockerfile is parsed with dockerfile-parse, its torch-variant
shell logic is run with sh, and the build context is checked against .dockerignore.
"""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
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


def _dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, line.lstrip("!").rstrip("/")))
    return patterns


def _pattern_matches(pattern: str, path: str) -> bool:
    regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
    regex = regex.replace(r"\[", "[").replace(r"\]", "]")
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1))


def _in_context(path: str) -> bool:
    """Docker's rule: the last matching pattern (on the path or a parent) decides."""
    included = True
    for negated, pattern in _dockerignore_patterns():
        if _pattern_matches(pattern, path):
            included = negated
    return included


def test_build_context_holds_what_is_copied_and_nothing_secret():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    sources = []
    for stage in _stages():
        for value in _values(stage, "COPY"):
            if not value.startswith("--from"):
                sources += value.split()[:-1]
    assert sources
    for source in sources:
        matching = [p for p in tracked if p == source.rstrip("/") or p.startswith(source)]
        assert matching, f"COPY {source}: not in the repository"
        assert all(_in_context(p) for p in matching if "__pycache__" not in p), source
    for outside in [
        ".git/config",
        "infra/k8s/base/secrets/s3.env",
        "dsnet/secrets.env",
        "data/synthetic/annotations.json",
        "mlflow.db",
        "mlartifacts/1/model.pt",
        "models/model.pt",
        "tests/test_k8s.py",
        "dsnet/__pycache__/cli.cpython-311.pyc",
    ]:
        assert not _in_context(outside), outside


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*", "a/b.py", True),
        ("dsnet", "dsnet/x/y.py", True),
        ("dsnet", "dsnet2/x.py", False),
        ("**/*.env", "a/b/c.env", True),
        ("**/*.env", "a/b/c.env.example", False),
        ("**/*.py[cod]", "a/b.pyc", True),
        ("infra/docker/torch_requirements.py", "infra/docker/Dockerfile", False),
    ],
)
def test_dockerignore_matcher(pattern, path, expected):
    assert _pattern_matches(pattern, path) is expected
