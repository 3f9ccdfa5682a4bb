"""Model registry: the quality gate, registration, and reviewed promotion with rollback.

Registered model ``dsnet`` (``params.register.model_name``), aliases ``challenger`` (the
newest version that passed the gate) and ``champion`` (the promoted one).

- :func:`register` gates a trained model on its ``metrics.json`` (thresholds from
  ``params.register``, the HU baseline, and the current champion on the same hold-out),
  then logs the pyfunc model into the training run and creates a model version with
  lineage and metric tags. It always writes a receipt (``register.json``) listing every
  criterion; a failing gate creates nothing. Re-running it for the same checkpoint reuses
  the existing version (tag ``checkpoint_sha256``).
- :func:`promote` / :func:`rollback` move ``champion`` and leave an audit trail: version
  tags (``promoted_at``, ``promoted_by`` = the user the tracking server authenticated,
  ``promotion_reason``, ...) and the registered
  model tag ``champion_history`` (JSON list of events; replaying it gives the stack of
  champions that rollback pops).

Concurrency: every change of versions or aliases happens under :func:`registry_lock`, a
mutex stored in the registry itself — the registered model ``<name>.lock``, whose
creation is atomic because registered-model names are unique in every MLflow store
(SQLite, Postgres, a tracking server). Racing registrations or promotions from several
processes or hosts therefore serialise, and aliases always match the history. A lock
left by a crashed process expires after ``LOCK_TTL_S`` seconds.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import platform
import random
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dsnet.config import section
from dsnet.errors import InputError
from dsnet.fsutil import atomic_write_json, file_sha256
from dsnet.review.auth import Actor, authorize_champion_change

CHALLENGER = "challenger"
CHAMPION = "champion"
HISTORY_TAG = "champion_history"
METRIC_KEYS = ("map50", "recall", "acc", "fps", "patient_acc", "hu_baseline_acc")
REQUIRED_METRICS = ("map50", "recall", "acc", "hu_baseline_acc")
CHAMPION_METRICS = ("map50", "acc")
LOCK_TTL_S = 120.0
LOCK_WAIT_S = 60.0
DEFAULT_SPLIT = Path("data/split.json")


class GateFailedError(InputError):
    """The model did not pass the gate and ``strict`` was asked for (CLI exit 2)."""


class RefusedError(InputError):
    """A promotion or rollback was refused; the registry is unchanged (CLI exit 2)."""


# --------------------------------------------------------------------------- gate


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
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "metrics file not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable JSON file ({exc})") from None
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
    from dsnet.data.split import read_split

    test = sorted(read_split(split_path)["test"])
    blob = json.dumps({"data_version": data_version, "test": test}).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


# ------------------------------------------------------------------------- registry


def model_name(params: Mapping[str, Any]) -> str:
    """Return the registered model name from ``params.register.model_name`` (``dsnet``)."""
    return str(section(params, "register").get("model_name") or "dsnet")


def client() -> Any:
    """Return an ``MlflowClient`` on the configured tracking/registry URI."""
    import mlflow

    from dsnet.tracking import configure_mlflow

    configure_mlflow()
    return mlflow.MlflowClient()


def ensure_registered_model(mlflow_client: Any, name: str) -> None:
    """Create the registered model `name` unless it exists (safe under races)."""
    from mlflow.exceptions import MlflowException

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


@contextlib.contextmanager
def registry_lock(
    mlflow_client: Any, name: str, wait_s: float = LOCK_WAIT_S, ttl_s: float = LOCK_TTL_S
) -> Iterator[str]:
    """Hold the registry-wide mutex of model `name` (the registered model ``<name>.lock``).

    Acquire = create that registered model (atomic: names are unique); release = delete it.
    A lock older than `ttl_s` (holder crashed) is broken.

    Args:
        mlflow_client: The registry client.
        name: The registered model whose versions and aliases are being changed.
        wait_s: How long to wait for a busy lock.
        ttl_s: Age after which a lock is considered abandoned.

    Yields:
        The owner token written into the lock.

    Raises:
        InputError: The lock stayed busy for `wait_s` seconds.

    """
    from mlflow.exceptions import MlflowException

    lock = f"{name}.lock"
    token = f"{_whoami()}@{platform.node()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            mlflow_client.create_registered_model(
                lock,
                tags={"owner": token, "expires_at": f"{time.time() + ttl_s:.3f}"},
                description=f"Lock held while changing versions or aliases of '{name}'.",
            )
            break
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        _break_if_expired(mlflow_client, lock)
        if time.monotonic() > deadline:
            raise InputError(lock, f"registry busy for {wait_s:.0f} s (lock held)")
        time.sleep(0.1 + random.random() * 0.3)
    try:
        yield token
    finally:
        with contextlib.suppress(MlflowException):
            held = mlflow_client.get_registered_model(lock)
            if held.tags.get("owner") == token:
                mlflow_client.delete_registered_model(lock)


def _break_if_expired(mlflow_client: Any, lock: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        held = mlflow_client.get_registered_model(lock)
        if float(held.tags.get("expires_at", "0")) < time.time():
            mlflow_client.delete_registered_model(lock)


def versions(mlflow_client: Any, name: str) -> list[Any]:
    """Return all versions of registered model `name`, oldest first (empty if none)."""
    found = mlflow_client.search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version))


def alias_version(mlflow_client: Any, name: str, alias: str) -> Any | None:
    """Return the model version that `alias` points to, or ``None``."""
    from mlflow.exceptions import MlflowException

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


# -------------------------------------------------------------------------- register


def register(
    model_path: str | os.PathLike[str],
    metrics_path: str | os.PathLike[str],
    params: Mapping[str, Any],
    out_receipt: str | os.PathLike[str],
    strict: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
    split_path: str | os.PathLike[str] | None = None,
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
        data_dir: The data dir of the hold-out (default ``params.data.dir``).
        split_path: The split file (default ``data/split.json``).

    Returns:
        The receipt: ``gate`` (passed|failed), ``criteria``, ``registered``, ``version``,
        ``aliases``, ``lineage``, ``run_id``, ``model_uri``, ``reason``.

    Raises:
        InputError: Unusable inputs or an unreachable tracking server (nothing registered).
        GateFailedError: `strict` and the gate failed (the receipt is written first).

    """
    from dsnet.review.evidence import review_paths
    from dsnet.tracking import lineage_tags, tracking_enabled

    model_path = Path(model_path)
    if not model_path.is_file():
        raise InputError(model_path, "model checkpoint not found")
    metrics = read_metrics(metrics_path)
    settings = section(params, "register")
    data_dir = Path(data_dir or section(params, "data").get("dir") or "data/synthetic")
    current = lineage_tags(data_dir, params)
    holdout = holdout_id(current["data_version"], split_path or DEFAULT_SPLIT)
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
                    mlflow_client, model_path, metrics, params, criteria, lineage, receipt,
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
    from dsnet.tracking import LINEAGE_KEYS

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
    re-evaluated on the current test split with :func:`dsnet.evaluate.evaluate`; when
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
    from dsnet.evaluate import evaluate
    from dsnet.pyfunc import checkpoint_from_uri

    checkpoint = checkpoint_from_uri(f"models:/{name}/{version}")
    with tempfile.TemporaryDirectory(prefix="dsnet-reeval-") as scratch:
        return evaluate(
            checkpoint,
            data_dir,
            split_path or DEFAULT_SPLIT,
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
    criteria, the confusion matrix) go to the run's artifact :func:`gate_artifact`.
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


def gate_artifact(checkpoint_sha256: str) -> str:
    """Run artifact holding a registration's criteria and confusion matrix (JSON)."""
    return f"registration/{checkpoint_sha256[:12]}/gate.json"


def registration_record(mlflow_client: Any, version: Any) -> dict[str, Any]:
    """The :func:`gate_artifact` of a version (``{}`` when it has none)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    path = gate_artifact(version.tags.get("checkpoint_sha256", ""))
    try:
        return mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{path}")
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
    """Log the pyfunc model (once per checkpoint) and create the version under the lock.

    The evaluation's review report (`evidence_path`, re-rendered with the gate's criteria,
    `dsnet.review.attach`) is logged to the model's run and linked from the description.

    Returns:
        Receipt fields: ``registered``, ``version``, ``aliases``, ``model_uri``,
        ``run_id`` and ``reason`` (``already registered`` on a re-run).

    """
    from dsnet.pyfunc import checkpoint_model_config, log_pyfunc
    from dsnet.review.attach import REPORT_TAG, attach_review, description_link

    name = receipt["model_name"]
    sha = receipt["checkpoint_sha256"]
    existing = _version_with_checkpoint(mlflow_client, name, sha)
    if existing is not None:
        return _existing(mlflow_client, name, existing)
    tags = version_tags(metrics, lineage, checkpoint_model_config(model_path), receipt, criteria)
    info = log_pyfunc(model_path, run_id=receipt["run_id"], params=params)
    tags["run_id"] = info.run_id
    record = {"criteria": criteria, "confusion_matrix": metrics.get("confusion_matrix")}
    mlflow_client.log_dict(info.run_id, record, gate_artifact(sha))
    review = attach_review(mlflow_client, info.run_id, evidence_path, criteria)
    if review is not None:
        tags[REPORT_TAG] = review
    ensure_registered_model(mlflow_client, name)
    with registry_lock(mlflow_client, name):
        existing = _version_with_checkpoint(mlflow_client, name, sha)
        if existing is not None:
            return _existing(mlflow_client, name, existing)
        version = mlflow_client.create_model_version(
            name,
            source=info.model_uri,
            run_id=info.run_id,
            tags=tags,
            description=description(metrics, criteria) + "\n\n" + description_link(review),
            model_id=info.model_id,
        )
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
    """Point ``challenger`` at the newest version that passed the gate (call under the lock)."""
    passed = [v for v in versions(mlflow_client, name) if v.tags.get("gate") == "passed"]
    if passed:
        mlflow_client.set_registered_model_alias(name, CHALLENGER, passed[-1].version)


# ---------------------------------------------------------------- review and promotion


def list_versions(name: str) -> list[dict[str, Any]]:
    """Summarise every version of `name` for review, newest first.

    Returns:
        Rows with ``version``, metrics (``map50``, ``recall``, ``acc``, ...),
        ``data_version``, ``aliases``, ``gate``, ``created`` (ISO, UTC), ``promoted_at``.

    """
    mlflow_client = client()
    aliases = aliases_by_version(mlflow_client, name) if _exists(mlflow_client, name) else {}
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


def _exists(mlflow_client: Any, name: str) -> bool:
    return bool(mlflow_client.search_registered_models(f"name = '{name}'"))


def compare(name: str, a: int, b: int) -> dict[str, Any]:
    """Compare two versions side by side.

    Returns:
        ``{"a": row, "b": row, "metrics": [{"name", "a", "b", "delta"}],
        "same_holdout": bool}`` where a row holds the version's tags of interest and its
        ``confusion_matrix`` (list of lists, or ``None``).

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
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version(name, str(number))
    except MlflowException:
        raise InputError(f"{name} v{number}", "no such model version") from None


def promotion_problems(candidate: Any, champion: Any | None, margin: float) -> list[str]:
    """Why `candidate` should not replace `champion` (empty when it may).

    A candidate must have passed the gate and be at most `margin` worse than the
    champion on ``map50`` and ``acc`` on the same hold-out. On different hold-outs the
    gate's own comparison counts when it was made against this champion (re-evaluated).
    """
    problems = []
    if candidate.tags.get("gate") != "passed":
        problems.append(f"v{candidate.version} did not pass the gate")
    if champion is None:
        return problems
    if candidate.tags.get("holdout") and candidate.tags.get("holdout") == champion.tags.get(
        "holdout"
    ):
        mine, theirs = version_metrics(candidate), version_metrics(champion)
        for key in CHAMPION_METRICS:
            if key in mine and key in theirs and mine[key] < theirs[key] - margin:
                problems.append(
                    f"{key} {mine[key]:.4f} is worse than champion v{champion.version}'s "
                    f"{theirs[key]:.4f} by more than {margin}"
                )
        return problems
    against = f"champion v{champion.version} "
    if candidate.tags.get("gate_vs_champion") != "pass" or not candidate.tags.get(
        "gate_champion_note", ""
    ).startswith(against):
        problems.append(
            f"v{candidate.version} was not compared with champion v{champion.version} on the "
            "same hold-out; re-register it against the current data"
        )
    return problems


def promote(
    name: str, version: int, reason: str, force: bool = False, margin: float = 0.02
) -> dict[str, Any]:
    """Make `version` the ``champion``, with an audit trail.

    Args:
        name: Registered model name.
        version: The version to promote.
        reason: Why (required; recorded).
        force: Promote despite :func:`promotion_problems` (recorded as ``promotion_forced``).
        margin: ``params.register.champion_margin``.

    Returns:
        The history event ``{"action": "promote", "version", "previous", "at", "by",
        "reason", "forced", "overridden"}``.

    Raises:
        RefusedError: Problems found and not `force`; nothing changes.
        InputError: Unknown version or empty reason.
        NotAuthorizedError: The tracking server did not authenticate the caller, or the
            caller lacks MANAGE on `name` (`dsnet.review.auth`); nothing changes.

    """
    if not reason.strip():
        raise InputError("--reason", "a promotion needs a reason")
    mlflow_client = client()
    actor = authorize_champion_change(name)
    with registry_lock(mlflow_client, name):
        candidate = _get_version(mlflow_client, name, version)
        champion = alias_version(mlflow_client, name, CHAMPION)
        if champion is not None and str(champion.version) == str(candidate.version):
            raise RefusedError(f"{name} v{version}", "is already the champion")
        problems = promotion_problems(candidate, champion, margin)
        if problems and not force:
            raise RefusedError(f"{name} v{version}", "; ".join(problems) + " (use --force)")
        event = _event("promote", candidate.version, champion, reason, force, problems, actor)
        mlflow_client.set_registered_model_alias(name, CHAMPION, candidate.version)
        _tag_version(
            mlflow_client,
            name,
            candidate.version,
            {
                "promoted_at": event["at"],
                "promoted_by": event["by"],
                "promoted_by_authenticated": str(event["authenticated"]).lower(),
                "promotion_reason": reason,
                "promotion_forced": str(force and bool(problems)).lower(),
                **({"promotion_overrode": "; ".join(problems)} if force and problems else {}),
            },
        )
        if champion is not None:
            _tag_version(mlflow_client, name, champion.version, {"demoted_at": event["at"]})
        _append_history(mlflow_client, name, event)
    return event


def rollback(name: str, reason: str) -> dict[str, Any]:
    """Return ``champion`` to the previous champion recorded in ``champion_history``.

    Returns:
        The history event ``{"action": "rollback", "version" (now champion),
        "previous" (rolled back), "at", "by", "reason"}``.

    Raises:
        RefusedError: No previous champion, or the alias no longer matches the history.
        NotAuthorizedError: As for :func:`promote`.

    """
    if not reason.strip():
        raise InputError("--reason", "a rollback needs a reason")
    mlflow_client = client()
    actor = authorize_champion_change(name)
    with registry_lock(mlflow_client, name):
        stack = champion_stack(history(mlflow_client, name))
        champion = alias_version(mlflow_client, name, CHAMPION)
        if len(stack) < 2:
            raise RefusedError(f"{name}@{CHAMPION}", "no previous champion to roll back to")
        if champion is None or str(champion.version) != stack[-1]:
            current = "none" if champion is None else f"v{champion.version}"
            raise RefusedError(
                f"{name}@{CHAMPION}",
                f"alias points to {current} but the history ends with v{stack[-1]}",
            )
        target = stack[-2]
        event = _event("rollback", target, champion, reason, False, [], actor)
        mlflow_client.set_registered_model_alias(name, CHAMPION, target)
        _tag_version(
            mlflow_client,
            name,
            champion.version,
            {
                "rolled_back_at": event["at"],
                "rolled_back_by": event["by"],
                "rollback_reason": reason,
            },
        )
        _tag_version(mlflow_client, name, target, {"restored_at": event["at"]})
        _append_history(mlflow_client, name, event)
    return event


def history(mlflow_client: Any, name: str) -> list[dict[str, Any]]:
    """Return the promotion/rollback events of `name`, oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        tags = mlflow_client.get_registered_model(name).tags
    except MlflowException:
        raise InputError(name, "no such registered model") from None
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def champion_stack(events: list[Mapping[str, Any]]) -> list[str]:
    """Replay history events: promote pushes its version, rollback pops; top = champion."""
    stack: list[str] = []
    for event in events:
        if event["action"] == "promote":
            stack.append(str(event["version"]))
        elif event["action"] == "rollback" and stack:
            stack.pop()
    return stack


def _event(
    action: str,
    version: str,
    champion: Any | None,
    reason: str,
    force: bool,
    problems: list[str],
    actor: Actor,
) -> dict[str, Any]:
    return {
        "action": action,
        "version": str(version),
        "previous": None if champion is None else str(champion.version),
        "at": _now(),
        "by": actor.username,
        "authenticated": actor.authenticated,
        "reason": reason,
        "forced": bool(force and problems),
        "overridden": problems if force else [],
    }


def _append_history(mlflow_client: Any, name: str, event: Mapping[str, Any]) -> None:
    events = history(mlflow_client, name) + [dict(event)]
    mlflow_client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(events))


def _tag_version(mlflow_client: Any, name: str, version: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, str(version), key, value)
