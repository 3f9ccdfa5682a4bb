"""Should a scheduled retraining run train at all? Only when the data changed, or forced.

The champion (alias ``champion`` of the registered model) carries the DVC hash of the data
it was trained on in its version tag ``data_version``. A retraining run compares the hash
of the data it just fetched with it and ends early, saying why, when they are equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dsnet.lifecycle.registry.client import CHAMPION, alias_version, client, model_name
from dsnet.tracking.runs import tracking_enabled


def retraining_decision(
    data_version: str, params: Mapping[str, Any], force: bool = False
) -> dict[str, Any]:
    """Decide whether to train on data `data_version`.

    Args:
        data_version: DVC hash of the fetched data dir (`dsnet.tracking.lineage.data_version`).
        params: Resolved parameters (``register.model_name``).
        force: Train even when the data did not change (new code, new parameters).

    Returns:
        ``{"retrain": bool, "reason": str, "data_version", "champion_version" (str or
        None), "champion_data_version" (str or None), "model_name"}``.

    Raises:
        InputError: The tracking server is configured but unreachable.

    """
    name = model_name(params)
    decision: dict[str, Any] = {
        "model_name": name,
        "data_version": data_version,
        "champion_version": None,
        "champion_data_version": None,
    }
    champion = alias_version(client(), name, CHAMPION) if tracking_enabled() else None
    if champion is not None:
        decision["champion_version"] = str(champion.version)
        decision["champion_data_version"] = champion.tags.get("data_version")
    champion_data = decision["champion_data_version"]
    if force:
        retrain, reason = True, "forced: training regardless of the data version"
    elif not tracking_enabled():
        retrain, reason = True, "tracking is off (DSNET_TRACKING=off): no champion to compare with"
    elif champion is None:
        retrain, reason = True, f"no {CHAMPION} of '{name}' yet"
    elif champion_data != data_version:
        retrain, reason = (
            True,
            (
                f"data changed: {CHAMPION} v{champion.version} was trained on "
                f"{champion_data or 'unrecorded data'}, the data is now {data_version}"
            ),
        )
    else:
        retrain, reason = (
            False,
            (
                f"data unchanged: {CHAMPION} v{champion.version} was trained on this data "
                f"({data_version}); nothing to do (set force to retrain anyway)"
            ),
        )
    decision.update(retrain=retrain, reason=reason)
    return decision


def decision_markdown(decision: Mapping[str, Any]) -> str:
    """Describe a retraining decision in Markdown (the KFP UI shows it on the step)."""
    verdict = "retrain" if decision["retrain"] else "skip training"
    champion = decision["champion_version"]
    return "\n".join(
        [
            f"# Retraining check: {verdict}",
            "",
            decision["reason"],
            "",
            "| | |",
            "|---|---|",
            f"| registered model | {decision['model_name']} |",
            f"| data version now | `{decision['data_version']}` |",
            f"| champion | {'v' + champion if champion else '—'} |",
            f"| champion's data version | `{decision['champion_data_version'] or '—'}` |",
            "",
        ]
    )
