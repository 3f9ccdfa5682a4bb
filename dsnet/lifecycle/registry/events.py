"""The champion history, appended without a lock: one registered-model tag per event.

Every promotion or rollback is an *event* stored as its own tag on the registered model,
``champion_event.<seq>`` (JSON), with ``seq`` = 0, 1, 2, ... Replaying the events gives
the stack of champions (`champion_stack`); the ``champion`` alias follows the top.

Appending event ``seq = N`` (`append_event`) claims the slot first: the writer reads
the N committed events, sets its own claim tag ``champion_claim.<N>.<id>``, then
reads the tags again. It commits (writes ``champion_event.<N>``, removes its claim) only
when no other claim for N and no committed event N are there; otherwise it removes its
claim, waits a random moment and starts over from the new history. Each writer sets its
claim *before* it looks, so of two writers racing for N the later one to look always
sees the other's claim: at most one commits N (both may step back and retry). Tag writes
of distinct keys are independent in every MLflow store, so nothing is lost and no lock
object is needed.

Aliases are moved checked-and-set (`point_alias`): set, read back what they should be,
set again until the two agree, so the last writer always leaves the alias matching the
state it read after its own change.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from mlflow.exceptions import MlflowException

from dsnet.core.errors import InputError
from dsnet.lifecycle.registry.client import _whoami

EVENT_PREFIX = "champion_event."
CLAIM_PREFIX = "champion_claim."
LEGACY_HISTORY_TAG = "champion_history"  # one JSON list (before per-event tags)
WAIT_S = 60.0


def _seq(key: str, prefix: str) -> int:
    return int(key[len(prefix) :].split(".", 1)[0])


def history(mlflow_client: Any, name: str) -> list[dict[str, Any]]:
    """Return the promotion/rollback events of `name`, oldest first."""
    try:
        tags = mlflow_client.get_registered_model(name).tags
    except MlflowException:
        raise InputError(name, "no such registered model") from None
    return events_in(tags)


def events_in(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    """The committed events among a registered model's tags, ordered by ``seq``."""
    legacy = json.loads(tags.get(LEGACY_HISTORY_TAG, "[]"))
    committed = sorted(
        (_seq(key, EVENT_PREFIX), value)
        for key, value in tags.items()
        if key.startswith(EVENT_PREFIX)
    )
    return legacy + [json.loads(value) for _, value in committed]


def champion_stack(events: list[Mapping[str, Any]]) -> list[str]:
    """Replay history events: promote pushes its version, rollback pops; top = champion."""
    stack: list[str] = []
    for event in events:
        if event["action"] == "promote":
            stack.append(str(event["version"]))
        elif event["action"] == "rollback" and stack:
            stack.pop()
    return stack


def writer_token() -> str:
    """Who is writing, for people reading a claim tag: user, host and process."""
    return f"{_whoami()}@{platform.node()}:{os.getpid()}"


def append_event(
    mlflow_client: Any,
    name: str,
    make_event: Callable[[list[dict[str, Any]]], dict[str, Any]],
    wait_s: float = WAIT_S,
) -> dict[str, Any]:
    """Append the event `make_event` builds from the current history, as slot ``len(history)``.

    Args:
        mlflow_client: The registry client.
        name: Registered model name.
        make_event: Called with the committed events each attempt; returns the event to
            append, or raises (e.g. ``RefusedError``) to append nothing.
        wait_s: How long to keep retrying while other writers win the slot.

    Returns:
        The committed event, with its ``seq``.

    Raises:
        InputError: Other writers kept winning for `wait_s` seconds.

    """
    deadline = time.monotonic() + wait_s
    token, writer = uuid.uuid4().hex, writer_token()  # key-safe id; who, for people
    while True:
        events = history(mlflow_client, name)
        seq = len(events)
        event = {**make_event(events), "seq": seq}
        claim = f"{CLAIM_PREFIX}{seq:06d}.{token}"
        mlflow_client.set_registered_model_tag(name, claim, writer)
        tags = mlflow_client.get_registered_model(name).tags
        rivals = [
            key
            for key in tags
            if key != claim
            and (key.startswith(CLAIM_PREFIX) or key.startswith(EVENT_PREFIX))
            and _seq(key, CLAIM_PREFIX if key.startswith(CLAIM_PREFIX) else EVENT_PREFIX) == seq
        ]
        if not rivals:
            mlflow_client.set_registered_model_tag(
                name, f"{EVENT_PREFIX}{seq:06d}", json.dumps(event)
            )
        mlflow_client.delete_registered_model_tag(name, claim)
        if not rivals:
            return event
        if time.monotonic() > deadline:
            raise InputError(
                name, f"registry busy: history slot {seq} contended for {wait_s:.0f} s"
            )
        time.sleep(0.05 + random.random() * 0.3)


def point_alias(
    mlflow_client: Any, name: str, alias: str, target: Callable[[], str | None]
) -> str | None:
    """Move `alias` to the version `target()` names, checked-and-set until stable.

    Returns:
        The version the alias points to (``None``: `target` named none; alias removed).

    """
    while True:
        version = target()
        if version is None:
            with contextlib.suppress(MlflowException):
                mlflow_client.delete_registered_model_alias(name, alias)
        else:
            mlflow_client.set_registered_model_alias(name, alias, version)
        if target() == version:
            return version
