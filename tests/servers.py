"""Real servers for tests: an S3 API (moto) and an MLflow tracking server, on 127.0.0.1.

Both run as subprocesses on free ports, wait (bounded) until they answer, and are always
shut down when the context exits. Use them as context managers or through the pytest
fixtures ``s3_server`` and ``mlflow_server``::

    with moto_s3(buckets=("dsnet-data",)) as s3, mlflow_tracking_server(tmp, s3) as mlf:
        env = {**os.environ, **s3.env, **mlf.env}   # for subprocesses (dvc, dsnet, ...)

The MLflow server keeps runs and the registry in SQLite and stores artifacts directly in
S3 (``--default-artifact-root s3://mlflow/artifacts --no-serve-artifacts``), so clients
need ``MLFLOW_S3_ENDPOINT_URL`` and AWS credentials, as with MinIO in production.

Creating an MLflow SQLite database runs its schema migrations (seconds); the session
fixture ``mlflow_db_template`` does that once and every store starts as a copy of it
(fixture ``local_mlflow``: the default ``sqlite:///mlflow.db`` store in a fresh working
directory).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"
REGION = "us-east-1"
MLFLOW_BUCKET = "mlflow"
DATA_BUCKET = "dsnet-data"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible endpoint and the environment that points clients at it."""

    url: str
    env: dict[str, str] = field(default_factory=dict)

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint, with the test credentials and region."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )


@dataclass(frozen=True)
class MlflowServer:
    """A running MLflow tracking server and the client environment for it.

    With authentication, `env` holds no credentials (clients are anonymous until they add
    some, e.g. :meth:`login`); `admin` is the bootstrap admin's ``(username, password)``.
    """

    url: str
    artifact_root: str
    env: dict[str, str] = field(default_factory=dict)
    admin: tuple[str, str] | None = None

    def login(self, username: str, password: str) -> dict[str, str]:
        """The client environment authenticated as `username`."""
        return {
            **self.env,
            "MLFLOW_TRACKING_USERNAME": username,
            "MLFLOW_TRACKING_PASSWORD": password,
        }

    def add_user(self, username: str, model_permissions: dict[str, str]) -> dict[str, str]:
        """Create a user (random password) with permissions on registered models.

        Args:
            username: The new user.
            model_permissions: Registered model name -> READ, EDIT or MANAGE.

        Returns:
            The client environment logged in as that user.

        """
        import secrets

        from mlflow.server.auth.client import AuthServiceClient

        if self.admin is None:
            raise ValueError("this server runs without authentication")
        password = secrets.token_urlsafe(18)
        with _environ(self.login(*self.admin)):
            auth = AuthServiceClient(self.url)
            auth.create_user(username, password)
            for model, permission in model_permissions.items():
                auth.grant_user_permission(username, "registered_model", model, permission)
        return self.login(username, password)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block and restore them afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Poll `url` until it answers HTTP, the process dies, or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers, if only with an error status
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"server at {url} not up after {timeout:.0f} s: {_tail(log)}")


@contextlib.contextmanager
def running(cmd: list[str], url: str, log: Path, env: dict[str, str], timeout: float):
    """Start `cmd` in its own session, wait for `url`, and always stop it afterwards."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        wait_until_up(url, proc, timeout, log)
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _tail(log: Path, chars: int = 1500) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def s3_client_env(url: str) -> dict[str, str]:
    """Environment variables that point boto3, DVC's S3 client and MLflow at `url`."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": url,
        "MLFLOW_S3_ENDPOINT_URL": url,
    }


@contextlib.contextmanager
def moto_s3(
    workdir: Path, buckets: tuple[str, ...] = (DATA_BUCKET, MLFLOW_BUCKET), timeout: float = 30
) -> Iterator[S3Server]:
    """Run ``moto_server`` on 127.0.0.1 (free port) with `buckets` created.

    Args:
        workdir: Folder for the server log.
        buckets: Buckets to create once the server answers.
        timeout: Seconds to wait for start-up.

    Yields:
        The endpoint URL and the client environment (credentials, region, endpoint).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = shutil.which("moto_server") or "moto_server"
    cmd = [server, "-H", "127.0.0.1", "-p", str(port)]
    with running(cmd, f"{url}/moto-api/", workdir / "moto.log", dict(os.environ), timeout):
        endpoint = S3Server(url=url, env=s3_client_env(url))
        s3 = endpoint.client()
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        yield endpoint


def migrated_mlflow_db(path: Path) -> Path:
    """Create an empty MLflow SQLite database at `path` with the current schema."""
    from mlflow.store.model_registry.sqlalchemy_store import (
        SqlAlchemyStore as RegistryStore,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{path}"
    SqlAlchemyStore(uri, (path.parent / "mlartifacts").as_uri())
    RegistryStore(uri)
    return path


@contextlib.contextmanager
def mlflow_tracking_server(
    workdir: Path,
    s3: S3Server,
    bucket: str = MLFLOW_BUCKET,
    timeout: float = 90,
    template: Path | None = None,
    auth: bool = False,
) -> Iterator[MlflowServer]:
    """Run ``mlflow server`` on 127.0.0.1 (free port): SQLite backend, artifacts in S3.

    With `auth`, the server runs MLflow's basic-auth app (``--app-name basic-auth``) with
    its user store in `workdir` and a random admin password passed by environment, as the
    Secret does in infra/ (never in a file).

    Args:
        workdir: Folder for the SQLite database and the server log.
        s3: The S3 endpoint that receives artifacts (bucket must exist).
        bucket: Artifact bucket.
        timeout: Seconds to wait for start-up (database migrations take a few seconds).
        template: An already migrated database to start from (see `migrated_mlflow_db`).
        auth: Require authentication (basic-auth app, default permission READ).

    Yields:
        The server URL, its artifact root and the client environment.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root = f"s3://{bucket}/artifacts"
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "mlflow-server.db"
    if template is not None:
        shutil.copyfile(template, database)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{database}",
        "--default-artifact-root",
        root,
        "--no-serve-artifacts",
    ]
    env = {**os.environ, **s3.env, "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "1"}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    admin = None
    if auth:
        import secrets

        admin = ("admin", secrets.token_urlsafe(18))
        config = workdir / "basic_auth.ini"
        config.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{workdir / 'auth.db'}\n"
            f"admin_username = {admin[0]}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        cmd += ["--app-name", "basic-auth"]
        env |= {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        }
    log = workdir / "mlflow-server.log"
    with running(cmd, f"{url}/health", log, env, timeout * (3 if auth else 1)):
        client_env = {**s3.env, "MLFLOW_TRACKING_URI": url}
        yield MlflowServer(url=url, artifact_root=root, env=client_env, admin=admin)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A moto S3 server for the test session, with the ``dsnet-data`` and ``mlflow`` buckets."""
    with moto_s3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite database to copy (created once per session)."""
    return migrated_mlflow_db(tmp_path_factory.mktemp("mlflow-template") / "mlflow.db")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, s3_server, mlflow_db_template) -> Iterator[MlflowServer]:
    """An MLflow tracking server for the test session, artifacts in the moto S3 server."""
    workdir = tmp_path_factory.mktemp("mlflow")
    with mlflow_tracking_server(workdir, s3_server, template=mlflow_db_template) as server:
        yield server


@pytest.fixture()
def local_mlflow(tmp_path, monkeypatch, mlflow_db_template) -> Path:
    """A fresh working directory holding the default store ``sqlite:///mlflow.db``.

    Tracking is on, ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME`` are unset, so
    `dsnet.tracking.runs` uses ``./mlflow.db`` with artifacts under ``./mlartifacts``.
    """
    shutil.copyfile(mlflow_db_template, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DSNET_TRACKING", "on")
    monkeypatch.setenv("DSNET_MODEL_CACHE", str(tmp_path / "model-cache"))
    return tmp_path
