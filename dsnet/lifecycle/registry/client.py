"""The registry client and what every registry part shares: names, aliases, version reads."""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from dsnet.core.config import section
from dsnet.tracking.runs import configure_mlflow

CHALLENGER = "challenger"


CHAMPION = "champion"


METRIC_KEYS = ("map50", "recall", "acc", "fps", "patient_acc", "hu_baseline_acc")


def model_name(params: Mapping[str, Any]) -> str:
    """Return the registered model name from ``params.register.model_name`` (``dsnet``)."""
    return str(section(params, "register").get("model_name") or "dsnet")


def client(must_exist: bool = False) -> Any:
    """Return an ``MlflowClient`` on the configured tracking/registry URI.

    Args:
        must_exist: Refuse a SQLite store that does not exist (review commands).

    """
    configure_mlflow(must_exist)
    return mlflow.MlflowClient()


def ensure_registered_model(mlflow_client: Any, name: str) -> None:
    """Create the registered model `name` unless it exists (safe under races)."""
    try:
        mlflow_client.create_registered_model(
            name, description="DSNet vertebral-body detector and WHO grade (dsnet-ops)."
        )
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _whoami() -> str:
    return os.environ.get("DSNET_USER") or getpass.getuser()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions(mlflow_client: Any, name: str) -> list[Any]:
    """Return all versions of registered model `name`, oldest first (empty if none)."""
    found = mlflow_client.search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version))


def alias_version(mlflow_client: Any, name: str, alias: str) -> Any | None:
    """Return the model version that `alias` points to, or ``None``."""
    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def aliases_by_version(mlflow_client: Any, name: str) -> dict[str, list[str]]:
    """Map version number -> sorted aliases (version search results do not carry them)."""
    found: dict[str, list[str]] = {}
    for alias, number in mlflow_client.get_registered_model(name).aliases.items():
        found.setdefault(str(number), []).append(alias)
    return {number: sorted(aliases) for number, aliases in found.items()}


def version_metrics(version: Any) -> dict[str, float]:
    """Return the metric tags of a model version as floats (missing ones left out)."""
    found = {}
    for key in METRIC_KEYS:
        with contextlib.suppress(KeyError, ValueError):
            found[key] = float(version.tags[key])
    return found
