"""Lineage and provenance tags of a run: code, data and parameter versions, where it ran.

``git_sha`` of the working tree (or ``DSNET_GIT_SHA`` in the image), ``data_version`` = the
DVC hash of the data dir, ``params_hash`` of the parameters that shape the model, and the
KFP run id and pipeline version when a pipeline step runs.

May import: dsnet.core
"""

from __future__ import annotations

import getpass
import os
import platform
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dvc.ignore import DvcIgnoreFilter
from dvc_data.hashfile.build import build
from dvc_data.hashfile.db.local import LocalHashFileDB
from dvc_objects.fs.local import LocalFileSystem

from dsnet import __version__
from dsnet.core.config import params_hash
from dsnet.core.errors import InputError

LINEAGE_KEYS = ("git_sha", "data_version", "params_hash")
# Parameter sections that do not change the trained model (gate thresholds) are left out
# of the lineage hash, so re-gating with other thresholds keeps the same params_hash.
NON_MODEL_SECTIONS = frozenset({"register"})


PIPELINE_TAG_ENV = {
    "DSNET_KFP_RUN_ID": "kfp.run_id",
    "DSNET_PIPELINE_VERSION": "kfp.pipeline_version",
}


def pipeline_tags() -> dict[str, str]:
    """The KFP run id and pipeline version from the environment, as tags (none outside KFP)."""
    return {tag: os.environ[env] for env, tag in PIPELINE_TAG_ENV.items() if os.environ.get(env)}


def system_tags(step: str) -> dict[str, str]:
    """Tags describing where a run ran: step, user, host, Python, platform, KFP run."""
    return {
        "dsnet.step": step,
        "dsnet.version": __version__,
        "mlflow.user": getpass.getuser(),
        "mlflow.runName": step,
        "mlflow.source.type": "LOCAL",
        "mlflow.source.git.commit": git_sha(),
        "host": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        **pipeline_tags(),
    }


def lineage_tags(data_dir: str | os.PathLike[str], params: Mapping[str, Any]) -> dict[str, str]:
    """Lineage of a model: code, data and parameter versions.

    Args:
        data_dir: The data dir the model was trained/evaluated on.
        params: The resolved parameters.

    Returns:
        ``{"git_sha": HEAD commit or "unknown", "data_version": DVC hash of data_dir
        ("<md5>.dir"), "params_hash": 16-hex hash of every section but register}``.

    """
    model_sections = [name for name in params if name not in NON_MODEL_SECTIONS]
    return {
        "git_sha": git_sha(),
        "data_version": data_version(data_dir),
        "params_hash": params_hash(params, model_sections),
    }


def git_sha(cwd: str | os.PathLike[str] | None = None) -> str:
    """Return the commit checked out in `cwd`'s git work tree.

    Outside a work tree (e.g. in the container image, which has no git) the commit comes
    from env ``DSNET_GIT_SHA`` (the image's build revision); ``unknown`` when neither is set.
    """
    fallback = os.environ.get("DSNET_GIT_SHA") or "unknown"
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return fallback
    return result.stdout.strip() if result.returncode == 0 else fallback


def data_version(data_dir: str | os.PathLike[str]) -> str:
    """Hash a data dir exactly as ``dvc add``/``dvc repro`` do.

    DVC identifies a directory by the md5 of its ``.dir`` manifest (the sorted list of
    relative paths and file md5s), written ``<md5>.dir`` in ``dvc.lock`` / ``*.dvc``.
    This builds the same tree object with dvc-data (honouring ``.dvcignore`` of the
    enclosing DVC repo), so the tag matches ``dvc.lock`` whether or not DVC ran the step.

    Raises:
        InputError: `data_dir` is not a folder.

    """
    path = Path(data_dir).resolve()
    if not path.is_dir():
        raise InputError(data_dir, "data dir not found")
    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory(prefix="dsnet-dvc-hash-") as scratch:
        odb = LocalHashFileDB(fs, scratch)
        _, _, obj = build(odb, str(path), fs, "md5", ignore=_dvcignore(path), dry_run=True)
    return obj.hash_info.value


def _dvcignore(path: Path) -> Any:
    """Return the ``.dvcignore`` filter of the DVC repo enclosing `path`, or ``None``."""
    root = next((p for p in (path, *path.parents) if (p / ".dvc").is_dir()), None)
    if root is None or not (root / ".dvcignore").is_file():
        return None

    return DvcIgnoreFilter(LocalFileSystem(), str(root))
