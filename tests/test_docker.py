"""Static checks of the `dsnet` image build (infra/docker/Dockerfile, .dockerignore).

No Docker daemon here: the Dockerfile is parsed with dockerfile-parse, its torch-variant
shell logic is run with sh, and the build context is checked against .dockerignore.
"""

from __future__ import annotations

import io
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
TORCH_REQUIREMENTS = REPO / "infra" / "docker" / "torch_requirements.py"
LOCAL_WHEELS = REPO / "infra" / "docker" / "local_wheels.py"


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


LOCK = REPO / "requirements" / "pipeline.lock"


def _lock_lines() -> list[str]:
    """The requirement lines of the image's lock (comments dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in LOCK.read_text().splitlines())
    return [line for line in lines if line]


def test_two_stages_and_the_runtime_runs_dsnet_as_non_root():
    _, build, runtime = _stages()
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


def test_install_steps_follow_the_lock_not_a_dependency_list():
    text = DOCKERFILE.read_text()
    assert "torch==" not in text and "torchvision==" not in text
    _, build, _ = _stages()
    installs = []
    for value in _values(build, "RUN"):
        words = shlex.split(_run_script(value).replace(";", " ; "), posix=True)
        for at, word in enumerate(words):
            if word == "pip" and words[at + 1] == "install":
                args = words[at + 2 :]
                ends = [n for n, w in enumerate(args) if w in {"&&", "||", ";", "|"}]
                installs.append(args[: ends[0]] if ends else args)
    # CPU torch from its index, then the (variant's) lock, then dsnet itself without deps,
    # so nothing but the lock decides a version; the wheel folder only supplies files.
    assert installs == [
        ["--index-url", "$TORCH_INDEX_URL", "-r", "torch.txt"],
        ["--no-index", "--find-links", "/wheels", "--no-deps", "--no-compile", "-r", "local.txt"],
        ["--no-compile", "-r", "variant.lock"],
        ["--no-deps", "--no-compile", "."],
    ]
    assert _values(build, "ARG")[0] == "TORCH_VARIANT=cuda"
    copied = " ".join(_values(build, "COPY"))
    assert "requirements/pipeline.lock" in copied


def test_the_wheel_folder_is_mounted_for_pip_and_never_copied():
    wheels, build, runtime = _stages()
    assert [i["instruction"] for i in wheels] == ["FROM"]
    assert wheels[0]["value"] == "scratch AS wheels"  # empty unless --build-context wheels=DIR
    (lock_install,) = [v for v in _values(build, "RUN") if "-r variant.lock" in v]
    assert lock_install.startswith("--mount=type=cache,target=/root/.cache/pip")
    assert "--mount=type=bind,from=wheels,target=/wheels" in lock_install
    assert "local_wheels.py variant.lock /wheels > local.txt" in lock_install
    copies = _values(build, "COPY") + _values(runtime, "COPY")
    assert not [v for v in copies if v.startswith("--from=wheels") or v.endswith("/wheels")]


def _local_wheels(lock: Path, folder: Path) -> list[str]:
    return subprocess.run(
        [sys.executable, str(LOCAL_WHEELS), str(lock), str(folder)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def test_local_wheels_lists_the_pins_a_wheel_folder_satisfies(tmp_path):
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    lock = tmp_path / "variant.lock"
    lock.write_text(
        "torch==2.14.1\n    # via dsnet\nnvidia-cublas==13.1.1.3\nnumpy==2.4.1\n"
        "six==1.17.0\nopencv-python==4.14.0.94\npillow==11.3.0\nrich==15.0.0\n"
    )
    folder = tmp_path / "wheels"
    folder.mkdir()
    for name in [
        f"torch-2.14.1-{here}-{here}-manylinux_2_28_x86_64.whl",  # fits
        "nvidia_cublas-13.1.1.3-py3-none-manylinux_2_27_x86_64.whl",  # fits (name normalised)
        f"numpy-2.4.0-{here}-{here}-manylinux_2_28_x86_64.whl",  # another version
        "six-1.17.0-py2.py3-none-any.whl",  # pure Python
        "opencv_python-4.14.0.94-cp37-abi3-manylinux_2_28_x86_64.whl",  # stable ABI
        "pillow-11.3.0-cp39-cp39-manylinux_2_28_x86_64.whl",  # another Python
        f"rich-15.0.0-{here}-{here}-macosx_11_0_x86_64.whl",  # another platform
    ]:
        (folder / name).touch()
    if platform.machine() == "x86_64":
        assert _local_wheels(lock, folder) == [
            "nvidia-cublas==13.1.1.3",
            "opencv-python==4.14.0.94",
            "six==1.17.0",
            "torch==2.14.1",
        ]
    assert _local_wheels(lock, tmp_path / "empty") == []


def _variant_branch(variant: str, index_url: str, workdir: Path) -> subprocess.CompletedProcess:
    """Run the build stage's variant selection in `workdir`, laid out like the build's /src."""
    (workdir / "requirements").mkdir(parents=True, exist_ok=True)
    (workdir / "requirements" / "pipeline.lock").write_text(LOCK.read_text())
    (workdir / "infra" / "docker").mkdir(parents=True, exist_ok=True)
    (workdir / "infra" / "docker" / "torch_requirements.py").write_text(
        TORCH_REQUIREMENTS.read_text()
    )
    _, build, _ = _stages()
    (script,) = [_run_script(v) for v in _values(build, "RUN") if "TORCH_VARIANT" in v]
    return subprocess.run(
        ["sh", "-c", script],
        cwd=workdir,
        env={"PATH": "/usr/bin:/bin", "TORCH_VARIANT": variant, "TORCH_INDEX_URL": index_url},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_torch_variant_build_arg_selects_the_wheels(tmp_path):
    cuda = _variant_branch("cuda", "", tmp_path)
    assert cuda.returncode == 0 and "CUDA" in cuda.stdout
    assert (tmp_path / "variant.lock").read_text() == LOCK.read_text()
    cpu_without_index = _variant_branch("cpu", "", tmp_path / "cpu")
    assert cpu_without_index.returncode == 1
    assert "TORCH_INDEX_URL" in cpu_without_index.stderr
    unknown = _variant_branch("rocm", "", tmp_path / "rocm")
    assert unknown.returncode == 1 and "must be cuda or cpu" in unknown.stderr


def _torch_requirements(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TORCH_REQUIREMENTS), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_torch_requirements_are_read_from_the_lock(tmp_path):
    lines = _lock_lines()
    pins = _torch_requirements(str(LOCK)).stdout.split()
    assert pins == [line for line in lines if re.match(r"torch(vision)?==", line)]
    assert len(pins) == 2
    cpu = _torch_requirements("--without-cuda", str(LOCK)).stdout.split()
    dropped = set(lines) - set(cpu)
    assert set(cpu) < set(lines) and pins[0] in cpu
    assert dropped and all(re.match(r"(nvidia-|cuda-|triton==)", line) for line in dropped)
    broken = tmp_path / "broken.lock"
    broken.write_text("numpy==2.0.0\ntorchaudio==2.0\n")
    missing = _torch_requirements(str(broken))
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
