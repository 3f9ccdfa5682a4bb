"""The quality gate: a model's metrics against thresholds, the HU baseline and the champion."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from dsnet.core.errors import InputError
from dsnet.core.inputs import read_json
from dsnet.data.split import read_split

CHAMPION_METRICS = ("map50", "acc")  # compared with the champion (gate and promotion)
REQUIRED_METRICS = ("map50", "recall", "acc", "hu_baseline_acc")


class GateFailedError(InputError):
    """The model did not pass the gate and ``strict`` was asked for (CLI exit 2)."""


def criterion(
    name: str, value: float | None, threshold: float | None, op: str, note: str = ""
) -> dict[str, Any]:
    """One gate criterion: ``value op threshold`` with its outcome.

    Args:
        name: Criterion name, e.g. ``map50`` or ``beats_hu_baseline``.
        value: The candidate's value; ``None`` when it could not be measured.
        threshold: What the value is compared with; ``None`` when there is nothing to
            compare with (the criterion is then skipped, e.g. no champion yet).
        op: ``>=`` or ``>``.
        note: Why, in words (e.g. where a champion value came from).

    Returns:
        ``{"name", "value", "op", "threshold", "status": pass|fail|skipped, "note"}``.

    """
    if value is None or threshold is None:
        status = "skipped"
    elif op == ">=":
        status = "pass" if value >= threshold else "fail"
    elif op == ">":
        status = "pass" if value > threshold else "fail"
    else:
        raise ValueError(f"unknown comparison {op!r}")
    return {
        "name": name,
        "value": value,
        "op": op,
        "threshold": threshold,
        "status": status,
        "note": note,
    }


def gate(
    metrics: Mapping[str, Any],
    settings: Mapping[str, Any],
    champion: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate the registration criteria of a candidate model.

    Args:
        metrics: The candidate's ``metrics.json`` (``map50``, ``recall``, ``acc``,
            ``hu_baseline_acc``).
        settings: ``params.register`` (``min_map50``, ``min_recall``, ``min_acc``,
            ``beat_hu_baseline``, ``champion_margin``).
        champion: The champion's metrics on the candidate's hold-out as
            ``{"version", "metrics", "note"}``, ``{"version": None, "note": why}`` when
            there is no comparable champion, or ``None`` when there is no champion.

    Returns:
        The criteria (see :func:`criterion`); the gate passes when none has status fail.

    """
    criteria = [
        criterion("map50", metrics["map50"], float(settings["min_map50"]), ">="),
        criterion("recall", metrics["recall"], float(settings["min_recall"]), ">="),
        criterion("acc", metrics["acc"], float(settings["min_acc"]), ">="),
    ]
    if settings.get("beat_hu_baseline", True):
        criteria.append(
            criterion(
                "beats_hu_baseline",
                metrics["acc"],
                metrics["hu_baseline_acc"],
                ">",
                "grade accuracy above the trabecular-HU threshold baseline on the same slices",
            )
        )
    margin = float(settings.get("champion_margin", 0.0))
    for key in CHAMPION_METRICS:
        if champion is None:
            criteria.append(
                criterion(f"vs_champion_{key}", metrics[key], None, ">=", "no champion")
            )
            continue
        reference = (champion.get("metrics") or {}).get(key)
        threshold = None if reference is None else round(float(reference) - margin, 6)
        note = champion.get("note", "")
        if reference is not None:
            note = (
                f"champion v{champion['version']} {key} {reference:.4f} - margin {margin}; {note}"
            )
        criteria.append(criterion(f"vs_champion_{key}", metrics[key], threshold, ">=", note))
    return criteria


def gate_passed(criteria: list[Mapping[str, Any]]) -> bool:
    """Return whether no criterion failed (skipped ones do not block)."""
    return all(c["status"] != "fail" for c in criteria)


def read_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``metrics.json`` and check it has the numbers the gate needs.

    Raises:
        InputError: Missing file, invalid JSON, or a required metric missing or not numeric.

    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "metrics file not found")
    metrics = read_json(path)
    if not isinstance(metrics, dict):
        raise InputError(path, "expected a JSON object of metrics")
    for key in REQUIRED_METRICS:
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(path, f"metric '{key}' missing or not a number")
    return metrics


def holdout_id(data_version: str, split_path: str | os.PathLike[str]) -> str:
    """Identify a hold-out set: the data version plus the sorted test patients of the split.

    Two models are compared on "the same hold-out" only when these ids are equal.

    Raises:
        InputError: The split file is missing or invalid (`dsnet.data.split.read_split`).

    """
    test = sorted(read_split(split_path)["test"])
    blob = json.dumps({"data_version": data_version, "test": test}).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def gate_artifact(checkpoint_sha256: str) -> str:
    """Run artifact holding a registration's criteria and confusion matrix (JSON)."""
    return f"registration/{checkpoint_sha256[:12]}/gate.json"


def registration_record(mlflow_client: Any, version: Any) -> dict[str, Any]:
    """The :func:`gate_artifact` of a version (``{}`` when it has none).

    Args:
        mlflow_client: An ``MlflowClient`` (its tracking store serves the artifact).
        version: The model version (``tags["checkpoint_sha256"]``, ``run_id``).

    Returns:
        ``{"criteria": [...], "confusion_matrix": [[...]] | None}`` or ``{}``.

    """
    path = gate_artifact(version.tags.get("checkpoint_sha256", ""))
    try:
        with tempfile.TemporaryDirectory(prefix="dsnet-gate-") as scratch:
            local = mlflow_client.download_artifacts(version.run_id, path, scratch)
            return json.loads(Path(local).read_text(encoding="utf-8"))
    except (MlflowException, OSError, ValueError):
        return {}


def description(metrics: Mapping[str, Any], criteria: list[Mapping[str, Any]]) -> str:
    """Describe a version in Markdown: its gate as a table of values and thresholds."""
    lines = ["| criterion | value | threshold | result |", "|---|---|---|---|"]
    for c in criteria:
        threshold = "—" if c["threshold"] is None else f"{c['op']} {c['threshold']:.4f}"
        lines.append(f"| {c['name']} | {c['value']:.4f} | {threshold} | {c['status']} |")
    extra = [k for k in ("fps", "patient_acc") if isinstance(metrics.get(k), int | float)]
    if extra:
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {float(metrics[k]):.4f} |" for k in extra]
    return "\n".join(lines)
