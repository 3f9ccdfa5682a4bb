"""A child process of the registry concurrency test (spawned, so it has its own MLflow client)."""

from __future__ import annotations

import os
from typing import Any

from dsnet.lifecycle.registry.client import client
from dsnet.lifecycle.registry.events import append_event, champion_stack


def append_after_barrier(cwd: str, barrier: Any, version: str, results: Any) -> None:
    """Append a promotion of `version`; the first attempt waits at `barrier` after reading.

    Both children read the same history before either claims a slot, so they are forced
    to race for the same slot (not by chance).
    """
    os.chdir(cwd)
    reads: list[int] = []

    def promotion(events: list[dict[str, Any]]) -> dict[str, Any]:
        reads.append(len(events))
        if len(reads) == 1:
            barrier.wait(timeout=120)
        stack = champion_stack(events)
        return {"action": "promote", "version": version, "previous": stack[-1] if stack else None}

    event = append_event(client(), "dsnet", promotion)
    results.put((version, reads, event["seq"]))
