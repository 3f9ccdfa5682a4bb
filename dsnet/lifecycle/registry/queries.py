"""Reading the registry for review: list versions, compare two, the champion history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException

from dsnet.core.errors import InputError
from dsnet.lifecycle.registry.client import (
    METRIC_KEYS,
    aliases_by_version,
    client,
    version_metrics,
    versions,
)
from dsnet.lifecycle.registry.gate import registration_record


def list_versions(name: str) -> list[dict[str, Any]]:
    """Summarise every version of `name` for review, newest first.

    Returns:
        Rows with ``version``, metrics (``map50``, ``recall``, ``acc``, ...),
        ``data_version``, ``aliases``, ``gate``, ``created`` (ISO, UTC), ``promoted_at``.

    """
    mlflow_client = client(must_exist=True)
    check_registered(mlflow_client, name)
    aliases = aliases_by_version(mlflow_client, name)
    rows = []
    for v in reversed(versions(mlflow_client, name)):
        created = datetime.fromtimestamp(v.creation_timestamp / 1000, UTC)
        rows.append(
            {
                "version": int(v.version),
                **version_metrics(v),
                "data_version": v.tags.get("data_version", ""),
                "backbone": v.tags.get("backbone", ""),
                "attention": v.tags.get("attention", ""),
                "aliases": aliases.get(str(v.version), []),
                "gate": v.tags.get("gate", "unknown"),
                "created": created.isoformat(timespec="seconds"),
                "promoted_at": v.tags.get("promoted_at", ""),
            }
        )
    return rows


def check_registered(mlflow_client: Any, name: str) -> None:
    """Raise `InputError` naming ``--name`` and the registered models when `name` is none."""
    if _exists(mlflow_client, name):
        return
    known = sorted(m.name for m in mlflow_client.search_registered_models())
    raise InputError(
        f"--name {name}",
        f"no registered model of that name; registered: {', '.join(known) or 'none'}",
    )


def _exists(mlflow_client: Any, name: str) -> bool:
    return bool(mlflow_client.search_registered_models(f"name = '{name}'"))


def compare(name: str, a: int, b: int) -> dict[str, Any]:
    """Compare two versions side by side.

    Returns:
        ``{"a": row, "b": row, "metrics": [{"name", "a", "b", "delta"}],
        "same_holdout": bool}`` where a row holds the version's tags of interest and its
        ``confusion_matrix`` (list of lists from the registration's gate artifact, or
        ``None``).

    """
    mlflow_client = client()
    rows = {}
    for key, number in (("a", a), ("b", b)):
        v = _get_version(mlflow_client, name, number)
        rows[key] = {
            "version": int(v.version),
            "metrics": version_metrics(v),
            "aliases": sorted(v.aliases),
            "gate": v.tags.get("gate", "unknown"),
            "data_version": v.tags.get("data_version", ""),
            "holdout": v.tags.get("holdout", ""),
            "backbone": v.tags.get("backbone", ""),
            "attention": v.tags.get("attention", ""),
            "confusion_matrix": registration_record(mlflow_client, v).get("confusion_matrix"),
        }
    table = []
    for key in METRIC_KEYS:
        va, vb = rows["a"]["metrics"].get(key), rows["b"]["metrics"].get(key)
        delta = None if va is None or vb is None else vb - va
        table.append({"name": key, "a": va, "b": vb, "delta": delta})
    same = bool(rows["a"]["holdout"]) and rows["a"]["holdout"] == rows["b"]["holdout"]
    return {**rows, "metrics": table, "same_holdout": same}


def _get_version(mlflow_client: Any, name: str, number: int) -> Any:

    try:
        return mlflow_client.get_model_version(name, str(number))
    except MlflowException:
        raise InputError(f"{name} v{number}", "no such model version") from None
