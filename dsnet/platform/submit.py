"""Submit the compiled pipeline to a Kubeflow Pipelines API server: one run, or a schedule.

Authentication: a bearer token from ``--token`` or the environment variable
``KF_PIPELINES_TOKEN`` (e.g. ``kubectl create token pipeline-runner -n kubeflow``, or an
OIDC token in front of a Kubeflow installation), passed to ``kfp.Client`` as
``existing_token``. Without a token the client goes unauthenticated (port-forwarded
standalone installation).

A scheduled retraining is a KFP recurring run: cron trigger, at most one run at a time
(``max_concurrency=1``) and no catch-up of missed slots (``no_catchup=True``); every run
first checks whether the data changed since the champion was trained (`dsnet.platform
.retraining`) and ends early when it did not.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kfp_server_api.exceptions import ApiException
from urllib3.exceptions import HTTPError

from dsnet.core.errors import InputError
from dsnet.platform.arguments import kfp_cron

TOKEN_ENV = "KF_PIPELINES_TOKEN"
HEALTHZ = "/apis/v2beta1/healthz"
PROBE_TIMEOUT_S = 10.0
DEFAULT_EXPERIMENT = "dsnet"
DEFAULT_SCHEDULE = "dsnet-retraining"


def probe(host: str, token: str | None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Check in one request that `host` answers the KFP health endpoint and lets us in.

    ``kfp.Client`` retries its own health check five times, five seconds apart; this
    fails fast with one line instead.

    Raises:
        InputError: Naming `host`: unreachable, or answering with an error status.

    """
    request = urllib.request.Request(f"{host.rstrip('/')}{HEALTHZ}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        hint = f"; set {TOKEN_ENV} or --token" if exc.code in (401, 403) else ""
        raise InputError(host, f"KFP API answered {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(host, f"KFP API unreachable ({reason})") from None


def connect(host: str, namespace: str | None = None, token: str | None = None) -> Any:
    """Return a ``kfp.Client`` for the API server at `host` (probed first).

    Args:
        host: KFP API endpoint, e.g. ``http://localhost:8080`` (port-forwarded
            ``ml-pipeline-ui``) or ``https://kubeflow.example.org/pipeline``.
        namespace: User namespace of a multi-user installation (None: standalone).
        token: Bearer token; default ``$KF_PIPELINES_TOKEN``.

    Raises:
        InputError: The server is unreachable or refuses the token (:func:`probe`).

    """
    import kfp  # lazy: kfp is the optional [pipeline] extra

    token = token or os.environ.get(TOKEN_ENV) or None
    probe(host, token)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "works with KFP >= 2.0.0-beta.2"
        return kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token)


@contextlib.contextmanager
def api_errors(host: str) -> Iterator[None]:
    """Turn "server unreachable" and "not allowed" replies into one-line input errors.

    Covers the calls after :func:`probe` (a token without rights on the namespace, the
    server going away mid-way).
    """
    try:
        yield
    except ApiException as exc:
        if exc.status in (401, 403, 404):
            hint = f"; set {TOKEN_ENV}" if exc.status in (401, 403) else ""
            raise InputError(host, f"KFP API answered {exc.status} {exc.reason}{hint}") from None
        raise
    except HTTPError as exc:
        raise InputError(host, f"KFP API unreachable ({type(exc).__name__})") from None


@contextlib.contextmanager
def caching_set(package: str | os.PathLike[str], enabled: bool | None) -> Iterator[Path]:
    """Yield the package, or a temporary copy with every task's caching set to `enabled`.

    ``kfp.Client(enable_caching=...)`` only reaches the tasks of the root DAG; this pipeline
    keeps its steps in nested DAGs (conditions, the retraining sub-pipeline), so the
    override is applied here to the tasks of every DAG.
    """
    package = Path(package)
    if enabled is None:
        yield package
        return
    spec, *rest = yaml.safe_load_all(package.read_text(encoding="utf-8"))
    for component in [spec["root"], *spec.get("components", {}).values()]:
        for task in component.get("dag", {}).get("tasks", {}).values():
            task["cachingOptions"] = {"enableCache": enabled}
    with tempfile.TemporaryDirectory(prefix="dsnet-pipeline-") as scratch:
        copy = Path(scratch) / package.name
        copy.write_text(yaml.safe_dump_all([spec, *rest], sort_keys=False), encoding="utf-8")
        yield copy


def default_run_name(prefix: str = "dsnet") -> str:
    """A run name with the UTC time, e.g. ``dsnet 2025-01-31T03:00:00Z``."""
    return f"{prefix} {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def submit_run(
    host: str,
    package: str | os.PathLike[str],
    arguments: Mapping[str, Any],
    *,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
    enable_caching: bool | None = None,
    token: str | None = None,
) -> dict[str, str]:
    """Start one run of the compiled pipeline.

    Args:
        host: KFP API endpoint.
        package: The compiled pipeline YAML.
        arguments: Pipeline arguments (`dsnet.platform.arguments.pipeline_arguments`).
        experiment: Experiment name (created when missing).
        run_name: Run name (default: ``dsnet <UTC time>``).
        namespace: User namespace (multi-user Kubeflow).
        service_account: Kubernetes service account of the run's pods (needs the
            TrainJob role for ``distributed=true``, see ``infra/k8s/base/rbac``).
        enable_caching: Set every task's caching (None: as compiled), see `caching_set`.
        token: Bearer token (default ``$KF_PIPELINES_TOKEN``).

    Returns:
        ``{"run_id", "url"}``.

    """
    client = connect(host, namespace, token)
    with api_errors(host), caching_set(package, enable_caching) as submitted:
        result = client.create_run_from_pipeline_package(
            str(submitted),
            arguments=dict(arguments),
            run_name=run_name or default_run_name(),
            experiment_name=experiment,
            namespace=namespace,
            service_account=service_account,
        )
    return {"run_id": result.run_id, "url": f"{host.rstrip('/')}/#/runs/details/{result.run_id}"}


def schedule_retraining(
    host: str,
    package: str | os.PathLike[str],
    cron: str,
    arguments: Mapping[str, Any],
    *,
    name: str = DEFAULT_SCHEDULE,
    experiment: str = DEFAULT_EXPERIMENT,
    namespace: str | None = None,
    service_account: str | None = None,
    enable_caching: bool | None = None,
    token: str | None = None,
) -> dict[str, str]:
    """Create a recurring run of the compiled pipeline (scheduled retraining).

    Args:
        host: KFP API endpoint.
        package: The compiled pipeline YAML.
        cron: Cron expression, 5 fields (``"0 3 * * 0"``: Sundays 03:00) or KFP's 6.
        arguments: Pipeline arguments of every run.
        name: Name of the recurring run.
        experiment: Experiment name (created when missing).
        namespace: User namespace (multi-user Kubeflow).
        service_account: Service account of the runs' pods.
        enable_caching: Set every task's caching (None: as compiled), see `caching_set`.
        token: Bearer token (default ``$KF_PIPELINES_TOKEN``).

    Returns:
        ``{"recurring_run_id", "cron", "url"}``.

    """
    schedule = kfp_cron(cron)
    client = connect(host, namespace, token)
    with api_errors(host), caching_set(package, enable_caching) as submitted:
        found = client.create_experiment(experiment, namespace=namespace)
        recurring = client.create_recurring_run(
            found.experiment_id,
            job_name=name,
            cron_expression=schedule,
            max_concurrency=1,
            no_catchup=True,
            params=dict(arguments),
            pipeline_package_path=str(submitted),
            service_account=service_account,
        )
    run_id = recurring.recurring_run_id
    return {
        "recurring_run_id": run_id,
        "cron": schedule,
        "url": f"{host.rstrip('/')}/#/recurringrun/details/{run_id}",
    }
