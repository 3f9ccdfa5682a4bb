"""MLflow run tracking: the one module that opens MLflow runs for the pipeline steps.

A step wraps its work in :func:`start_run` and logs through the returned tracker::

    with start_run(step="train", params=params, tags=lineage_tags(data_dir, params)) as run:
        run.log_metrics({"loss": 0.7}, step=epoch)
        run.log_artifact("plots/train_loss.csv", "plots")
        run.run_id

Where the runs go:

- ``MLFLOW_TRACKING_URI`` names the store; unset, it is ``sqlite:///mlflow.db`` in the
  working directory with artifacts under ``./mlartifacts`` (no server needed).
- With a tracking server (``http://...``) the server's artifact root decides where
  artifacts go (S3 with ``MLFLOW_S3_ENDPOINT_URL``: MinIO in production, moto in tests).
  The server is probed first, with a short timeout, so an unreachable server fails in
  seconds with one line instead of retrying for minutes.
- ``MLFLOW_EXPERIMENT_NAME`` picks the experiment (default ``dsnet``).
- ``DSNET_TRACKING=off`` turns tracking off: :func:`start_run` yields a tracker whose
  methods do nothing and whose ``run_id`` is ``None``.

Lineage (:func:`lineage_tags`): ``git_sha`` of the working tree, ``data_version`` = the
DVC hash of the data dir and ``params_hash`` of the parameters that shape the model.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import mlflow
import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from dsnet.core.errors import InputError
from dsnet.tracking import inputs
from dsnet.tracking.lineage import system_tags
from dsnet.tracking.system_metrics import start_monitor, stop_monitor

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlartifacts"
DEFAULT_EXPERIMENT = "dsnet"
PROBE_TIMEOUT_S = 5.0
TRACKING_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
"""URI schemes of tracking stores MLflow supports (``+driver`` suffixes allowed)."""


def tracking_enabled() -> bool:
    """Whether runs are tracked (``DSNET_TRACKING`` is not ``off``/``0``/``false``)."""
    return os.environ.get("DSNET_TRACKING", "on").strip().lower() not in {"off", "0", "false"}


def tracking_uri() -> str:
    """Return the tracking URI in effect: ``MLFLOW_TRACKING_URI`` or the SQLite default.

    The default ``sqlite:///mlflow.db`` is made absolute (in the working directory), so a
    process that changes directory keeps using the same store.

    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri == DEFAULT_TRACKING_URI:
        uri = f"sqlite:///{Path('mlflow.db').resolve()}"
    return uri


def check_tracking_uri(uri: str, must_exist: bool = False) -> None:
    """Refuse a tracking URI MLflow cannot use, or that would silently make a new store.

    Args:
        uri: The tracking URI.
        must_exist: For review commands: a SQLite store must exist already (otherwise an
            empty one would be created and reported as "no models").

    Raises:
        InputError: Naming ``MLFLOW_TRACKING_URI``: an unsupported scheme, a SQLite store
            in a folder that does not exist, or (`must_exist`) a missing SQLite store.

    """
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme and scheme not in TRACKING_SCHEMES:
        raise InputError(
            "MLFLOW_TRACKING_URI",
            f"unsupported scheme {scheme}:// in {uri}; use one of "
            f"{', '.join(s + '://' for s in TRACKING_SCHEMES)} or a folder",
        )
    if scheme == "sqlite":
        store = Path(uri.split("://", 1)[1][1:] or ":memory:")
        if not store.parent.is_dir():
            raise InputError(
                "MLFLOW_TRACKING_URI",
                f"the folder {store.parent} of the SQLite store does not exist",
            )
        if must_exist and not store.is_file():
            raise InputError("MLFLOW_TRACKING_URI", f"no tracking store at {store}")


def configure_mlflow(must_exist: bool = False) -> str:
    """Point MLflow at :func:`tracking_uri`, bounding HTTP retries; return the URI.

    Args:
        must_exist: Refuse a SQLite store that does not exist yet (review commands).

    Raises:
        InputError: A bad tracking URI (`check_tracking_uri`), or the tracking server does
            not answer its health check.

    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri()
    check_tracking_uri(uri, must_exist)
    if uri.startswith(("http://", "https://")):
        probe_server(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def probe_server(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Check that the MLflow server at `uri` answers ``GET /health`` within `timeout`.

    Raises:
        InputError: Naming ``MLFLOW_TRACKING_URI`` and the connection problem.

    """
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as reply:
            if reply.status != 200:
                raise InputError("MLFLOW_TRACKING_URI", f"{uri} answered HTTP {reply.status}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(
            "MLFLOW_TRACKING_URI", f"tracking server {uri} unreachable ({reason})"
        ) from None


def ensure_experiment(name: str | None = None) -> str:
    """Return the id of experiment `name` (default ``MLFLOW_EXPERIMENT_NAME`` or ``dsnet``).

    A new experiment on a local store gets its artifacts under ``./mlartifacts``; on a
    server it uses the server's artifact root. An S3 artifact root needs credentials,
    which are checked here so a missing key fails with one clear line.
    """
    client = mlflow.MlflowClient()
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if not tracking_uri().startswith(("http://", "https://", "databricks")):
            location = (Path.cwd() / DEFAULT_ARTIFACT_DIR).resolve().as_uri()
        try:
            experiment_id = client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created by a concurrent process in the meantime
            experiment_id = client.get_experiment_by_name(name).experiment_id
        experiment = client.get_experiment(experiment_id)
    ensure_artifact_credentials(experiment.artifact_location)
    return experiment.experiment_id


def ensure_artifact_credentials(artifact_uri: str) -> None:
    """Fail clearly when artifacts go to S3 but no AWS credentials are configured.

    Raises:
        InputError: Naming ``AWS_ACCESS_KEY_ID`` when boto3 finds no credentials.

    """
    if not str(artifact_uri).startswith("s3://"):
        return

    if boto3.session.Session().get_credentials() is None:
        raise InputError(
            "AWS_ACCESS_KEY_ID",
            f"no S3 credentials for the artifact store {artifact_uri}; set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY (and MLFLOW_S3_ENDPOINT_URL for MinIO)",
        )


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys: ``{"train": {"lr": 0.01}}`` → ``train.lr``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Keep the finite numbers of `metrics` (nested mappings flattened), as floats.

    Lists (confusion matrices, curves) and strings are left out: they belong in artifacts.
    """
    kept = {}
    for key, value in flatten(metrics).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            kept[key] = float(value)
    return kept


class NullTracker:
    """The tracker used when tracking is off: every method does nothing."""

    run_id: str | None = None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Do nothing."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Do nothing."""

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Do nothing."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Do nothing."""

    def log_table(self, rows: list[Mapping[str, Any]], artifact_file: str) -> None:
        """Do nothing."""

    def log_dataset(
        self,
        data_dir: str | os.PathLike[str],
        digest: str,
        context: str,
        synthetic: bool | None = None,
    ) -> None:
        """Do nothing."""


class RunTracker:
    """Logs to one MLflow run through ``MlflowClient`` (no global active-run state).

    Args:
        run_id: The MLflow run to log to.

    """

    def __init__(self, run_id: str) -> None:

        self.run_id: str | None = run_id
        self._client = mlflow.MlflowClient()

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log the finite numeric values of `metrics` (nested keys dotted) at `step`."""
        values = numeric_metrics(metrics)
        if not values:
            return
        stamp = _now_ms()
        batch = [Metric(k, v, stamp, step or 0) for k, v in values.items()]
        self._client.log_batch(self.run_id, metrics=batch)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log `params` flattened to dotted keys (values as strings)."""
        flat = flatten(params)
        batch = [Param(k, _param_value(v)) for k, v in sorted(flat.items())]
        for start in range(0, len(batch), 100):  # MLflow accepts 100 params per batch
            self._client.log_batch(self.run_id, params=batch[start : start + 100])

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's files, to the run's artifacts under `artifact_path`."""
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path or path.name)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set string tags on the run."""
        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_table(self, rows: list[Mapping[str, Any]], artifact_file: str) -> None:
        """Log `rows` as an MLflow table (`dsnet.tracking.inputs.log_table`)."""
        inputs.log_table(self._client, self.run_id, rows, artifact_file)

    def log_dataset(
        self,
        data_dir: str | os.PathLike[str],
        digest: str,
        context: str,
        synthetic: bool | None = None,
    ) -> None:
        """Record the data dir as a run input (`dsnet.tracking.inputs.log_dataset`)."""
        inputs.log_dataset(self._client, self.run_id, data_dir, digest, context, synthetic)


@contextlib.contextmanager
def start_run(
    step: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    system_metrics: bool = False,
) -> Iterator[RunTracker | NullTracker]:
    """Open an MLflow run for one pipeline step and close it with the step's outcome.

    The run gets `params` (flattened, plus the resolved config as ``config/params.yaml``),
    `tags` (e.g. :func:`lineage_tags`) and system tags (``dsnet.step``, host, Python).
    It ends ``FINISHED``, or ``FAILED`` when the block raises.

    Args:
        step: Pipeline step name (``train``, ``evaluate``, ...), also the run name.
        params: Resolved parameters of the step.
        tags: Extra run tags.
        run_id: Resume this existing run instead of creating one (params are not re-logged).
        system_metrics: Sample CPU/GPU/memory/disk/network usage into the run's
            ``system/*`` metrics while the block runs (`dsnet.tracking.system_metrics`).

    Yields:
        A :class:`RunTracker`, or a :class:`NullTracker` when ``DSNET_TRACKING=off``.

    """
    if not tracking_enabled():
        yield NullTracker()
        return

    configure_mlflow()
    client = mlflow.MlflowClient()
    if run_id is None:
        run = client.create_run(
            ensure_experiment(), run_name=step, tags={**system_tags(step), **(tags or {})}
        )
        tracker = RunTracker(run.info.run_id)
        if params:
            tracker.log_params(params)
            _log_config(tracker, params)
    else:
        client.update_run(run_id, status="RUNNING")
        tracker = RunTracker(run_id)
        if tags:
            tracker.set_tags(tags)
    monitor = start_monitor(tracker.run_id) if system_metrics else None
    try:
        yield tracker
    except BaseException:
        stop_monitor(monitor)
        client.set_terminated(tracker.run_id, status="FAILED")
        raise
    stop_monitor(monitor)
    client.set_terminated(tracker.run_id, status="FINISHED")


# Where a pipeline run came from: env variable -> MLflow tag (set by the pipeline's steps,
# `dsnet.platform.services.use_services`, and passed on to TrainJob nodes).
def _log_config(tracker: RunTracker, params: Mapping[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="dsnet-config-") as scratch:
        config = Path(scratch) / "params.yaml"
        config.write_text(yaml.safe_dump(dict(params), sort_keys=False), encoding="utf-8")
        tracker.log_artifact(config, "config")


def _param_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text[:6000]


def _now_ms() -> int:

    return int(time.time() * 1000)
