"""Run the compiled pipeline on this machine with ``kfp.local`` (``dsnet pipeline local``).

The compiled YAML is loaded as a component (``kfp.components.load_component_from_file``)
and called under ``kfp.local.init(SubprocessRunner(use_venv=False))``: every step runs as
a Python subprocess of this environment, in the current working directory, with this
process's environment (MLflow and S3 settings, credentials). What ``kfp.local`` leaves
out: the Kubernetes platform spec (GPU node selector, toleration, secrets, volumes, pod
labels) and the container resources (CPU, memory, accelerator) are ignored, and the
images are not pulled; caching is off. Everything else, the DAG with its conditions,
artifacts and metadata, runs as on a cluster.

Outputs land under ``<out>/<pipeline-name>-<timestamp>/<task>/``; each task's output
parameters are read back from its ``executor_output.json``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsnet.core.config import DEFAULT_PARAMS
from dsnet.core.errors import DsnetError
from dsnet.tracking.runs import tracking_uri

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class LocalRunError(DsnetError):
    """A task of a local pipeline run failed."""


@dataclass(frozen=True)
class LocalRun:
    """A finished local run.

    Attributes:
        root: The run's folder.
        tasks: Task name (``register``, ``check-data-changed-2``, ...) -> its outputs,
            ``{"parameters": {name: value}, "artifacts": {name: metadata}}``, for the
            tasks that ran.

    """

    root: Path
    tasks: dict[str, dict[str, Any]]

    def outputs(self, component: str) -> dict[str, Any] | None:
        """Outputs of the task that ran `component` (KFP suffixes ``-2``, ...), or None."""
        pattern = re.compile(rf"{re.escape(component)}(-\d+)*")
        for name in sorted(self.tasks):
            if pattern.fullmatch(name):
                return self.tasks[name]
        return None


def task_outputs(run_root: Path) -> dict[str, dict[str, Any]]:
    """Read every task's outputs under a run folder (``executor_output.json``).

    Returns:
        Task name -> ``{"parameters": {name: value}, "artifacts": {name: metadata}}``.

    """
    tasks = {}
    for path in sorted(run_root.rglob("executor_output.json")):
        output = json.loads(path.read_text(encoding="utf-8"))
        artifacts = {
            name: dict(listed["artifacts"][0].get("metadata") or {})
            for name, listed in (output.get("artifacts") or {}).items()
            if listed.get("artifacts")
        }
        tasks[path.parent.name] = {
            "parameters": dict(output.get("parameterValues") or {}),
            "artifacts": artifacts,
        }
    return tasks


def run_local(
    package: str | os.PathLike[str], arguments: Mapping[str, Any], out_dir: str | os.PathLike[str]
) -> LocalRun:
    """Run the compiled pipeline with ``kfp.local`` and return what its tasks output.

    Args:
        package: The compiled pipeline YAML.
        arguments: Pipeline arguments (`dsnet.platform.arguments.pipeline_arguments`).
        out_dir: The local pipeline root (artifacts and logs of every run).

    Returns:
        The :class:`LocalRun`.

    Raises:
        LocalRunError: A task failed (named in the message; its log is on stdout).

    """
    from kfp import components, local  # lazy: kfp is the optional [pipeline] extra

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    before = {p for p in out_dir.iterdir() if p.is_dir()}
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(out_dir),
        workspace_root=str(out_dir / ".workspace"),
        raise_on_error=True,
    )
    pipeline = components.load_component_from_file(str(package))
    with warnings.catch_warnings():
        # "non-Python base image" and "settings ... ignored locally": documented above.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            pipeline(**dict(arguments))
        except RuntimeError as exc:
            message = " ".join(ANSI_ESCAPE.sub("", str(exc)).split())
            raise LocalRunError(f"{message} (the task's log is above)") from None
    created = sorted(
        (p for p in out_dir.iterdir() if p.is_dir() and p not in before and p.name[0] != "."),
        key=lambda p: p.stat().st_mtime,
    )
    root = created[-1]
    return LocalRun(root=root, tasks=task_outputs(root))


def local_defaults() -> dict[str, str]:
    """Arguments that point a local run at this machine's parameters and services.

    ``params_file``: ``./params.yaml`` (absolute); ``mlflow_tracking_uri``: the tracking
    URI in effect (``MLFLOW_TRACKING_URI`` or the local SQLite store);
    ``s3_endpoint_url``: ``MLFLOW_S3_ENDPOINT_URL`` or empty.
    """
    return {
        "params_file": str(DEFAULT_PARAMS.resolve()),
        "mlflow_tracking_uri": tracking_uri(),
        "s3_endpoint_url": os.environ.get("MLFLOW_S3_ENDPOINT_URL", ""),
    }
