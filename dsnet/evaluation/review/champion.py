"""The current champion, run once on the challenger's hold-out slices.

The evaluation compares the model under review with the registry's ``champion`` on the
*same* slices: the champion's checkpoint is fetched from the registry and run over the
hold-out once (no bootstrap re-runs: the intervals resample these per-slice results).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from dsnet.evaluation.scoring import SliceResult, run_test_set
from dsnet.inference.detect import DEFAULT_DECISION_THRESHOLD
from dsnet.inference.load import checkpoint_from_uri, load_detector
from dsnet.tracking.runs import configure_mlflow, tracking_enabled

CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class ChampionRun:
    """The champion's results on the hold-out.

    Attributes:
        version: Its registry version number.
        checkpoint_sha256: Its checkpoint hash (tag of the version).
        results: One `SliceResult` per hold-out slice, in the challenger's order.

    """

    version: str
    checkpoint_sha256: str
    results: list[SliceResult]


def current_champion(name: str, version: str | None = None) -> Any | None:
    """The model version behind ``<name>@champion`` in the configured registry, or ``None``.

    Args:
        name: The registered model.
        version: Compare with this version number instead of the champion.

    Returns:
        The model version; ``None`` also when tracking is off or the registered model (or
        the alias) does not exist.

    """
    if not tracking_enabled():
        return None
    configure_mlflow()
    client = mlflow.MlflowClient()
    try:
        if version is not None:
            return client.get_model_version(name, str(version))
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None


def run_champion(
    name: str,
    own_sha256: str,
    data: Any,
    images: Sequence[dict[str, Any]],
    cfg: Mapping[str, Any],
    device: Any,
    against: str | None = None,
) -> ChampionRun | None:
    """Run the current champion on the hold-out slices, unless it is the model itself.

    Args:
        name: The registered model (``register.model_name``).
        own_sha256: SHA-256 of the checkpoint under review (no comparison with itself).
        data: The `DataDir`.
        images: The hold-out slices' COCO records, in evaluation order.
        cfg: The ``evaluate`` parameters.
        device: torch device.
        against: A version number to compare with instead of the champion.

    Returns:
        The champion's results, or ``None`` without a champion (or when it is this model).

    """
    version = current_champion(name, against)
    if version is None or version.tags.get("checkpoint_sha256") == own_sha256:
        return None
    checkpoint = checkpoint_from_uri(f"models:/{name}/{version.version}")
    decision = float(cfg.get("decision_threshold", DEFAULT_DECISION_THRESHOLD))
    kept = min(float(cfg.get("score_threshold", 0.05)), decision)
    model, ckpt = load_detector(checkpoint, device, kept, cfg.get("channels_last", False))
    results = run_test_set(
        model,
        data,
        images,
        ckpt["preprocess"],
        device,
        warmup=0,
        decision_threshold=decision,
        iou_threshold=float(cfg.get("iou_threshold", 0.5)),
    )
    return ChampionRun(str(version.version), version.tags.get("checkpoint_sha256", ""), results)
