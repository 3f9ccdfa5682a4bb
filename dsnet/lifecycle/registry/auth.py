"""Who is changing the registry: the user the MLflow tracking server authenticated.

On a tracking server (``http(s)://``) running MLflow's basic-auth app, the acting user is
whoever ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` authenticate as; the
server is asked (``GET /api/2.0/mlflow/users/current``), so a self-declared name counts for
nothing. Moving ``champion`` additionally needs MANAGE on the registered model (or an admin
account), checked through the permissions API; MLflow itself lets EDIT move aliases, so this
rule lives here in the promotion path (docs/lifecycle.md).

A local store (``sqlite:///mlflow.db``, a file) has no server to ask: whoever can write the
file can change the registry, and the recorded user is ``DSNET_USER`` or the login name,
marked as not authenticated.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

import requests

from dsnet.core.errors import InputError
from dsnet.tracking.runs import tracking_uri

CURRENT_USER_PATH = "/api/2.0/mlflow/users/current"
PERMISSION_PATH = "/api/3.0/mlflow/users/permissions/get"
REQUEST_TIMEOUT_S = 10.0


class NotAuthorizedError(InputError):
    """The tracking server did not authenticate or authorise the request (CLI exit 2)."""


@dataclass(frozen=True)
class Actor:
    """The user changing the registry.

    Attributes:
        username: The authenticated user name (or the local login on a local store).
        authenticated: Whether a tracking server vouched for it.
        is_admin: Whether the server knows the user as an admin.

    """

    username: str
    authenticated: bool
    is_admin: bool = False


def _server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _credentials() -> tuple[str, str] | None:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    return (user, password) if user and password else None


def _get(uri: str, path: str, params: dict[str, str] | None = None):
    try:
        return requests.get(
            uri.rstrip("/") + path, params=params, auth=_credentials(), timeout=REQUEST_TIMEOUT_S
        )
    except requests.RequestException as exc:
        raise InputError(
            "MLFLOW_TRACKING_URI", f"tracking server {uri} unreachable ({exc})"
        ) from None


def acting_user(uri: str) -> Actor:
    """Return the user the tracking server at `uri` authenticates this process as.

    Args:
        uri: The tracking URI in effect (`dsnet.tracking.tracking_uri`).

    Returns:
        The authenticated user; on a local store the unauthenticated local login.

    Raises:
        NotAuthorizedError: No or wrong credentials for an authenticating server, or a
            server without authentication (promotion needs to know who acts).

    """
    if not _server(uri):
        return Actor(os.environ.get("DSNET_USER") or getpass.getuser(), authenticated=False)
    reply = _get(uri, CURRENT_USER_PATH)
    if reply.status_code == 401:
        if _credentials() is None:
            raise NotAuthorizedError(
                "MLFLOW_TRACKING_USERNAME",
                f"tracking server {uri} requires a login: set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD",
            )
        raise NotAuthorizedError(
            "MLFLOW_TRACKING_PASSWORD",
            f"tracking server {uri} rejected the credentials of user "
            f"'{os.environ['MLFLOW_TRACKING_USERNAME']}' (HTTP 401)",
        )
    if reply.status_code == 404:
        raise NotAuthorizedError(
            "MLFLOW_TRACKING_URI",
            f"tracking server {uri} runs without authentication, so nobody can be recorded as "
            "the promoter; run it with --app-name basic-auth (docs/lifecycle.md)",
        )
    if reply.status_code != 200:
        raise NotAuthorizedError(
            "MLFLOW_TRACKING_URI", f"tracking server {uri} answered HTTP {reply.status_code}"
        )
    user = reply.json()["user"]
    return Actor(str(user["username"]), authenticated=True, is_admin=bool(user["is_admin"]))


def require_manage(uri: str, actor: Actor, model_name: str) -> None:
    """Refuse unless `actor` holds MANAGE on registered model `model_name` (or is an admin).

    Nothing is checked on a local store (no permission model there).

    Raises:
        NotAuthorizedError: The server reports a weaker permission.

    """
    if not actor.authenticated or actor.is_admin:
        return
    params = {"username": actor.username, "resource_type": "registered_model",
              "resource_id": model_name}  # fmt: skip
    reply = _get(uri, PERMISSION_PATH, params)
    if reply.status_code != 200:
        raise NotAuthorizedError(
            model_name,
            f"could not read the permission of '{actor.username}' (HTTP {reply.status_code})",
        )
    permission = str(reply.json().get("permission", "NO_PERMISSIONS"))
    if permission != "MANAGE":
        raise NotAuthorizedError(
            model_name,
            f"user '{actor.username}' has {permission} on registered model '{model_name}'; "
            "moving champion needs MANAGE (docs/lifecycle.md)",
        )


def authorize_champion_change(model_name: str) -> Actor:
    """Authenticate the acting user and check they may move ``champion`` of `model_name`.

    Returns:
        The actor to record as ``promoted_by`` / ``rolled_back_by``.

    Raises:
        NotAuthorizedError: See :func:`acting_user` and :func:`require_manage`.

    """
    uri = tracking_uri()
    actor = acting_user(uri)
    require_manage(uri, actor, model_name)
    return actor
