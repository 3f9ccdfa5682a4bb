"""A throw-away copy of this project (git + DVC) for tests that run ``dvc`` for real.

The copy holds the pipeline files (``dvc.yaml``, ``params.yaml`` with tiny overrides,
``.dvc/config``, ``.dvcignore``) and the ``dsnet`` sources the stages depend on, committed
to a fresh git repository. Stage commands run the installed ``dsnet`` (this work tree).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dsnet.core.config import deep_merge

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
)
GIT_ENV = {
    "GIT_AUTHOR_NAME": "dsnet-test",
    "GIT_AUTHOR_EMAIL": "test@dsnet.invalid",
    "GIT_COMMITTER_NAME": "dsnet-test",
    "GIT_COMMITTER_EMAIL": "test@dsnet.invalid",
}
TINY = {
    "synth": {"patients": 6, "slices_per_vertebra": 1},
    "preprocess": {"spacing_mm": 3.0, "canvas_px": 128},
    "model": {
        "backbone": "mobilenet_v3",
        "attention": "ds",
        "detector": {
            "box_batch_size_per_image": 32,
            "rpn_pre_nms_top_n_train": 100,
            "rpn_post_nms_top_n_train": 50,
            "rpn_pre_nms_top_n_test": 100,
            "rpn_post_nms_top_n_test": 50,
        },
    },
    "train": {
        "epochs": 1,
        "batch_size": 2,
        "workers": 0,
        "warmup_iters": 2,
        "lr_milestones": [],
        "threads": 1,  # two OpenMP threads on a shared 2-core machine run ~30x slower
    },
    "evaluate": {"fps_warmup": 1},
}
"""Tiny parameters: 6 patients x 4 slices, one epoch of a MobileNetV3+DS detector at 128 px."""


def run(
    cmd: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd` (environment = os.environ + GIT_ENV + `env`), capturing text."""
    return subprocess.run(
        cmd,
        cwd=cwd,
        env={**os.environ, **GIT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def checked(
    cmd: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Like `run`, but fail with the command's output when it exits non-zero."""
    result = run(cmd, cwd, env, timeout)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-3000:]}"
        )
    return result


def project_copy(dest: Path, params: Mapping[str, Any] | None = None) -> Path:
    """Copy the pipeline and the dsnet sources to `dest`, merge `params`, commit.

    Args:
        dest: New folder for the repository.
        params: Overrides deep-merged into ``params.yaml`` (e.g. `TINY`).

    Returns:
        `dest`, a git repository with DVC initialised and one commit.
    """
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, target)
    shutil.copytree(
        ROOT / "dsnet", dest / "dsnet", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    merged = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), params or {})
    (dest / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    checked(["git", "init", "-q", "-b", "main"], dest)
    commit(dest, "project copy")
    return dest


def commit(repo: Path, message: str) -> str:
    """Commit everything in `repo` (a test repository) and return the new HEAD."""
    checked(["git", "add", "-A"], repo)
    checked(["git", "commit", "-q", "--allow-empty", "-m", message], repo)
    return checked(["git", "rev-parse", "HEAD"], repo).stdout.strip()


def use_remote(repo: Path, endpoint: str, access_key: str, secret_key: str) -> None:
    """Point the ``storage`` remote at `endpoint` with credentials, in ``.dvc/config.local``."""
    for option, value in (
        ("endpointurl", endpoint),
        ("access_key_id", access_key),
        ("secret_access_key", secret_key),
    ):
        checked(["dvc", "remote", "modify", "--local", "storage", option, value], repo)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }
