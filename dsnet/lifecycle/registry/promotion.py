"""Promotion and rollback of the ``champion``, with an audit trail.

Each promotion or rollback appends one event to the champion history
(`dsnet.lifecycle.registry.events`: a registered-model tag per event, appended lock-free)
and then moves the alias to the top of the replayed history, checked-and-set. The
versions involved get tags (``promoted_at``, ``promoted_by`` = the user the tracking server
authenticated, ``promotion_reason``, ...); each event records that user too
(`dsnet.lifecycle.registry.auth`: with basic-auth only a user with MANAGE on the model may
move ``champion``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dsnet.core.errors import InputError
from dsnet.lifecycle.registry.auth import Actor, authorize_champion_change
from dsnet.lifecycle.registry.client import (
    CHAMPION,
    _now,
    alias_version,
    client,
    version_metrics,
)
from dsnet.lifecycle.registry.events import append_event, champion_stack, history, point_alias
from dsnet.lifecycle.registry.gate import CHAMPION_METRICS
from dsnet.lifecycle.registry.queries import _get_version


class RefusedError(InputError):
    """A promotion or rollback was refused; the registry is unchanged (CLI exit 2)."""


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
        "authenticated", "reason", "forced", "overridden"}``.

    Raises:
        RefusedError: Problems found and not `force`; nothing changes.
        InputError: Unknown version or empty reason.
        NotAuthorizedError: The tracking server did not authenticate the caller, or the
            caller lacks MANAGE on `name` (`dsnet.lifecycle.registry.auth`); nothing changes.

    """
    if not reason.strip():
        raise InputError("--reason", "a promotion needs a reason")
    mlflow_client = client()
    actor = authorize_champion_change(name)
    candidate = _get_version(mlflow_client, name, version)

    def promotion(events: list[dict[str, Any]]) -> dict[str, Any]:
        stack = champion_stack(events)
        champion = _get_version(mlflow_client, name, int(stack[-1])) if stack else None
        if champion is not None and str(champion.version) == str(candidate.version):
            raise RefusedError(f"{name} v{version}", "is already the champion")
        problems = promotion_problems(candidate, champion, margin)
        if problems and not force:
            raise RefusedError(f"{name} v{version}", "; ".join(problems) + " (use --force)")
        return _event("promote", candidate.version, champion, reason, force, problems, actor)

    event = append_event(mlflow_client, name, promotion)
    _point_champion(mlflow_client, name)
    problems = event["overridden"]
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
    if event["previous"] is not None:
        _tag_version(mlflow_client, name, event["previous"], {"demoted_at": event["at"]})
    return event


def rollback(name: str, reason: str) -> dict[str, Any]:
    """Return ``champion`` to the previous champion recorded in ``champion_history``.

    Returns:
        The history event ``{"action": "rollback", "version" (now champion),
        "previous" (rolled back), "at", "by", "authenticated", "reason"}``.

    Raises:
        RefusedError: No previous champion, or the alias no longer matches the history.
        NotAuthorizedError: As for :func:`promote`.

    """
    if not reason.strip():
        raise InputError("--reason", "a rollback needs a reason")
    mlflow_client = client()
    actor = authorize_champion_change(name)

    def roll_back(events: list[dict[str, Any]]) -> dict[str, Any]:
        stack = champion_stack(events)
        champion = alias_version(mlflow_client, name, CHAMPION)
        if len(stack) < 2:
            raise RefusedError(f"{name}@{CHAMPION}", "no previous champion to roll back to")
        if champion is None or str(champion.version) != stack[-1]:
            current = "none" if champion is None else f"v{champion.version}"
            raise RefusedError(
                f"{name}@{CHAMPION}",
                f"alias points to {current} but the history ends with v{stack[-1]}",
            )
        return _event("rollback", stack[-2], champion, reason, False, [], actor)

    event = append_event(mlflow_client, name, roll_back)
    _point_champion(mlflow_client, name)
    _tag_version(
        mlflow_client,
        name,
        event["previous"],
        {
            "rolled_back_at": event["at"],
            "rolled_back_by": event["by"],
            "rollback_reason": reason,
        },
    )
    _tag_version(mlflow_client, name, event["version"], {"restored_at": event["at"]})
    return event


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


def _point_champion(mlflow_client: Any, name: str) -> None:
    """Move ``champion`` to the top of the replayed history (checked-and-set)."""

    def top() -> str | None:
        stack = champion_stack(history(mlflow_client, name))
        return stack[-1] if stack else None

    point_alias(mlflow_client, name, CHAMPION, top)


def _tag_version(mlflow_client: Any, name: str, version: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, str(version), key, value)
