"""Registration: gate a trained model and, if it passes, register it as the ``challenger``.

Registered model ``dsnet`` (``params.register.model_name``), aliases ``challenger`` (the
newest version that passed the gate) and ``champion`` (the promoted one,
`dsnet.lifecycle.registry.promotion`).

:func:`register` gates a trained model on its ``metrics.json`` (thresholds from
``params.register``, the HU baseline, and the current champion on the same hold-out,
`dsnet.lifecycle.registry.gate`), then logs the pyfunc model into the training run and
creates a model version with lineage and metric tags. It always writes a receipt
(``register.json``) listing every criterion; a failing gate creates nothing. Re-running it
for the same checkpoint reuses the existing version (tag ``checkpoint_sha256``); racing
registrations of one checkpoint keep the lowest-numbered version and delete the others,
and ``challenger`` is moved checked-and-set (`dsnet.lifecycle.registry.events`), so no
lock is needed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsnet.core.config import section
from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_json, file_sha256
from dsnet.evaluation.evaluate import evaluate
from dsnet.evaluation.review.evidence import review_paths
from dsnet.inference.load import checkpoint_from_uri, checkpoint_model_config
from dsnet.lifecycle.registry.client import (
    CHALLENGER,
    CHAMPION,
    METRIC_KEYS,
    alias_version,
    client,
    ensure_registered_model,
    model_name,
    version_metrics,
    versions,
)
from dsnet.lifecycle.registry.events import point_alias
from dsnet.lifecycle.registry.gate import (
    GateFailedError,
    description,
    gate,
    gate_artifact,
    gate_passed,
    holdout_id,
    read_metrics,
)
from dsnet.lifecycle.registry.review import REPORT_TAG, attach_review, description_link
from dsnet.tracking.lineage import LINEAGE_KEYS, lineage_tags
from dsnet.tracking.runs import tracking_enabled

# --------------------------------------------------------------------------- gate


# ------------------------------------------------------------------------- registry


# -------------------------------------------------------------------------- register


def register(
    model_path: str | os.PathLike[str],
    metrics_path: str | os.PathLike[str],
    params: Mapping[str, Any],
    out_receipt: str | os.PathLike[str],
    strict: bool = False,
    *,
    data_dir: str | os.PathLike[str],
    split_path: str | os.PathLike[str],
) -> dict[str, Any]:
    """Gate a trained model and, if it passes, register it as the new ``challenger``.

    Args:
        model_path: The dsnet checkpoint (``models/model.pt``); its folder may hold
            ``train_run.json`` (``{"run_id": ...}``) naming the training run.
        metrics_path: The model's ``metrics.json`` from ``dsnet evaluate``.
        params: Resolved parameters (``register`` thresholds; ``data.dir``).
        out_receipt: Where to write the receipt (``register.json``), always written.
        strict: Raise :class:`GateFailedError` when the gate fails (CI); by default a
            failing gate is a normal outcome recorded in the receipt.
        data_dir: The data dir of the hold-out.
        split_path: The split file naming its test patients.

    Returns:
        The receipt: ``gate`` (passed|failed), ``criteria``, ``registered``, ``version``,
        ``aliases``, ``lineage``, ``run_id``, ``model_uri``, ``reason``.

    Raises:
        InputError: Unusable inputs or an unreachable tracking server (nothing registered).
        GateFailedError: `strict` and the gate failed (the receipt is written first).

    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise InputError(model_path, "model checkpoint not found")
    metrics = read_metrics(metrics_path)
    settings = section(params, "register")
    data_dir = Path(data_dir)
    current = lineage_tags(data_dir, params)
    holdout = holdout_id(current["data_version"], split_path)
    train_run = read_train_run(model_path)
    receipt: dict[str, Any] = {
        "model_name": model_name(params),
        "checkpoint_sha256": file_sha256(model_path),
        "holdout": holdout,
        "run_id": train_run,
        "registered": False,
        "version": None,
        "aliases": [],
    }
    if not tracking_enabled():
        criteria = gate(metrics, settings, {"version": None, "note": "tracking off"})
        receipt.update(lineage=current, reason="tracking off (DSNET_TRACKING=off): not registered")
    else:
        mlflow_client = client()
        lineage = run_lineage(mlflow_client, train_run) or current
        champion = champion_baseline(
            mlflow_client, receipt["model_name"], holdout, params, data_dir, split_path
        )
        criteria = gate(metrics, settings, champion)
        receipt["lineage"] = lineage
        if gate_passed(criteria):
            receipt.update(
                register_version(
                    mlflow_client,
                    model_path,
                    metrics,
                    params,
                    criteria,
                    lineage,
                    receipt,
                    review_paths(metrics_path)[0],
                )  # fmt: skip
            )
    passed = gate_passed(criteria)
    receipt["gate"] = "passed" if passed else "failed"
    receipt["criteria"] = criteria
    if not passed:
        failed = [c for c in criteria if c["status"] == "fail"]
        receipt["reason"] = "gate failed: " + "; ".join(_describe(c) for c in failed)
    receipt.setdefault("reason", "gate passed")
    atomic_write_json(out_receipt, receipt)
    if strict and not passed:
        raise GateFailedError(out_receipt, receipt["reason"])
    return receipt


def _describe(c: Mapping[str, Any]) -> str:
    return f"{c['name']} {c['value']:.4f} not {c['op']} {c['threshold']:.4f}"


def read_train_run(model_path: Path) -> str | None:
    """Return the MLflow run id in ``train_run.json`` beside the checkpoint, if any."""
    record = model_path.parent / "train_run.json"
    if not record.is_file():
        return None
    try:
        run_id = json.loads(record.read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        raise InputError(record, "not a JSON object with 'run_id'") from None
    return str(run_id) if run_id else None


def run_lineage(mlflow_client: Any, run_id: str | None) -> dict[str, str] | None:
    """Return the lineage tags recorded on the training run, when all are present."""
    if run_id is None:
        return None
    tags = mlflow_client.get_run(run_id).data.tags
    if not all(key in tags for key in LINEAGE_KEYS):
        return None
    return {key: tags[key] for key in LINEAGE_KEYS}


def champion_baseline(
    mlflow_client: Any,
    name: str,
    holdout: str,
    params: Mapping[str, Any],
    data_dir: Path,
    split_path: str | os.PathLike[str] | None,
) -> dict[str, Any] | None:
    """Get the current champion's metrics on the candidate's hold-out, for the gate.

    Same hold-out (tag ``holdout``): its registered metrics. Otherwise the champion is
    re-evaluated on the current test split with :func:`dsnet.evaluation.evaluate.evaluate`; when
    that is impossible the note says why and the champion criteria are skipped.

    Returns:
        ``None`` (no champion) or ``{"version", "metrics", "note"}``.

    """
    champion = alias_version(mlflow_client, name, CHAMPION)
    if champion is None:
        return None
    if champion.tags.get("holdout") == holdout:
        note = "same hold-out"
        return {"version": champion.version, "metrics": version_metrics(champion), "note": note}
    try:
        metrics = reevaluate(name, champion.version, params, data_dir, split_path)
    except Exception as exc:  # noqa: BLE001 - any failure is reported in the receipt
        why = " ".join(str(exc).split())[:300]
        note = (
            f"champion v{champion.version} is on another hold-out and re-evaluation failed: {why}"
        )
        return {"version": champion.version, "metrics": None, "note": note}
    note = (
        f"champion v{champion.version} re-evaluated on the current hold-out "
        f"(its data_version {champion.tags.get('data_version', '?')})"
    )
    return {"version": champion.version, "metrics": metrics, "note": note}


def reevaluate(
    name: str,
    version: str,
    params: Mapping[str, Any],
    data_dir: Path,
    split_path: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    """Evaluate registered version `version` of `name` on the current test split."""
    checkpoint = checkpoint_from_uri(f"models:/{name}/{version}")
    with tempfile.TemporaryDirectory(prefix="dsnet-reeval-") as scratch:
        return evaluate(
            checkpoint,
            data_dir,
            split_path,
            Path(scratch) / "metrics.json",
            Path(scratch) / "plots",
            dict(params),
        )


def version_tags(
    metrics: Mapping[str, Any],
    lineage: Mapping[str, str],
    model_cfg: Mapping[str, Any],
    receipt: Mapping[str, Any],
    criteria: list[Mapping[str, Any]],
) -> dict[str, str]:
    """Tags of a new model version: lineage, metrics, architecture, gate and identity.

    Every tag is a short scalar a person can read in the MLflow UI; structured data (the
    criteria, the confusion matrix) go to the run's artifact `gate_artifact`.
    """
    tags = {key: str(value) for key, value in lineage.items()}
    for key in METRIC_KEYS:
        if isinstance(metrics.get(key), int | float):
            tags[key] = f"{float(metrics[key]):.6g}"
    for cls, ap in (metrics.get("ap_per_class") or {}).items():
        if isinstance(ap, int | float):  # None: the class is absent from the hold-out
            tags[f"ap.{cls}"] = f"{float(ap):.6g}"
    tags["backbone"] = str(model_cfg.get("backbone", "?"))
    tags["attention"] = str(model_cfg.get("attention", "?"))
    tags["gate"] = "passed"
    failed = [c["name"] for c in criteria if c["status"] == "fail"]
    tags["gate_summary"] = (
        f"{sum(c['status'] == 'pass' for c in criteria)} passed, {len(failed)} failed, "
        f"{sum(c['status'] == 'skipped' for c in criteria)} skipped"
    )
    tags["holdout"] = receipt["holdout"]
    tags["checkpoint_sha256"] = receipt["checkpoint_sha256"]
    if receipt.get("run_id"):
        tags["run_id"] = receipt["run_id"]
    compared = [c for c in criteria if c["name"].startswith("vs_champion_")]
    if compared and all(c["status"] != "skipped" for c in compared):
        tags["gate_champion_note"] = compared[0]["note"]
        passed = all(c["status"] == "pass" for c in compared)
        tags["gate_vs_champion"] = "pass" if passed else "fail"
    return tags


def register_version(
    mlflow_client: Any,
    model_path: Path,
    metrics: Mapping[str, Any],
    params: Mapping[str, Any],
    criteria: list[Mapping[str, Any]],
    lineage: Mapping[str, str],
    receipt: Mapping[str, Any],
    evidence_path: Path | None = None,
) -> dict[str, Any]:
    """Log the pyfunc model and create the version (one version per checkpoint, lock-free).

    The gate's criteria and the confusion matrix go to the run artifact `gate_artifact`;
    the evaluation's review report (`evidence_path`, re-rendered with the criteria,
    `dsnet.lifecycle.registry.review.attach_review`) is logged to the model's run and
    linked from the description.

    Returns:
        Receipt fields: ``registered``, ``version``, ``aliases``, ``model_uri``,
        ``run_id`` and ``reason`` (``already registered`` on a re-run).

    """
    name = receipt["model_name"]
    sha = receipt["checkpoint_sha256"]
    existing = _version_with_checkpoint(mlflow_client, name, sha)
    if existing is not None:
        return _existing(mlflow_client, name, existing)
    tags = version_tags(metrics, lineage, checkpoint_model_config(model_path), receipt, criteria)
    from dsnet.inference.pyfunc import log_pyfunc  # lazy: MLflow warns when it is defined

    info = log_pyfunc(model_path, run_id=receipt["run_id"], params=params)
    tags["run_id"] = info.run_id
    record = {"criteria": criteria, "confusion_matrix": metrics.get("confusion_matrix")}
    mlflow_client.log_dict(info.run_id, record, gate_artifact(sha))
    review = attach_review(mlflow_client, info.run_id, evidence_path, criteria)
    if review is not None:
        tags[REPORT_TAG] = review
    ensure_registered_model(mlflow_client, name)
    version = mlflow_client.create_model_version(
        name,
        source=info.model_uri,
        run_id=info.run_id,
        tags=tags,
        description=description(metrics, criteria) + "\n\n" + description_link(review),
        model_id=info.model_id,
    )
    # A racing registration of the same checkpoint may have created a version too: the
    # lowest-numbered one stays, every other racer deletes its own (no lock needed).
    first = _version_with_checkpoint(mlflow_client, name, sha)
    if first is not None and str(first.version) != str(version.version):
        mlflow_client.delete_model_version(name, str(version.version))
        _point_challenger(mlflow_client, name)
        return _existing(mlflow_client, name, first)
    _point_challenger(mlflow_client, name)
    return {
        "registered": True,
        "version": int(version.version),
        "aliases": _aliases(mlflow_client, name, version.version),
        "model_uri": f"models:/{name}/{version.version}",
        "run_id": info.run_id,
    }


def _version_with_checkpoint(mlflow_client: Any, name: str, sha: str) -> Any | None:
    return next(
        (v for v in versions(mlflow_client, name) if v.tags.get("checkpoint_sha256") == sha), None
    )


def _existing(mlflow_client: Any, name: str, version: Any) -> dict[str, Any]:
    return {
        "registered": True,
        "version": int(version.version),
        "aliases": _aliases(mlflow_client, name, version.version),
        "model_uri": f"models:/{name}/{version.version}",
        "run_id": version.run_id,
        "reason": f"gate passed; already registered as version {version.version} (same checkpoint)",
    }


def _aliases(mlflow_client: Any, name: str, version: str) -> list[str]:
    return sorted(mlflow_client.get_model_version(name, str(version)).aliases)


def _point_challenger(mlflow_client: Any, name: str) -> None:
    """Point ``challenger`` at the newest version that passed the gate (checked-and-set)."""

    def newest_passed() -> str | None:
        passed = [v for v in versions(mlflow_client, name) if v.tags.get("gate") == "passed"]
        return str(passed[-1].version) if passed else None

    point_alias(mlflow_client, name, CHALLENGER, newest_passed)


# ---------------------------------------------------------------- review and promotion
