"""The review part of ``dsnet evaluate``: champion run, evidence and report files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsnet.core.config import section
from dsnet.core.fsutil import file_sha256
from dsnet.evaluation.review.champion import run_champion
from dsnet.evaluation.review.evidence import build_evidence, review_paths, write_review
from dsnet.evaluation.scoring import SliceResult
from dsnet.tracking.lineage import data_version


def review_evaluation(
    *,
    model_path: Path,
    checkpoint: Mapping[str, Any],
    data: Any,
    data_dir: str | os.PathLike[str],
    images: Sequence[dict[str, Any]],
    results: Sequence[SliceResult],
    truth: Mapping[str, int],
    metrics: Mapping[str, Any],
    params: Mapping[str, Any],
    plots_dir: Path,
    metrics_path: Path,
    device: Any,
    against: str | None = None,
) -> dict[str, Any]:
    """Build the review of an evaluation and write ``review/evidence.json`` + ``report.html``.

    The registry's current champion (``register.model_name``), when there is one and it is
    another checkpoint, is run once on the same slices for the side-by-side section.

    Args:
        model_path: The evaluated checkpoint file.
        checkpoint: Its loaded content.
        data: The `DataDir` of the hold-out.
        data_dir: Its path.
        images: The hold-out slices' COCO records, in evaluation order.
        results: The evaluated slices (same order).
        truth: Patient id -> DXA diagnosis.
        metrics: The ``metrics.json`` content.
        params: The resolved parameters (``evaluate``, ``register.model_name``).
        plots_dir: The evaluation's plots folder.
        metrics_path: Where ``metrics.json`` was written; the review goes beside it.
        device: torch device (for the champion run).
        against: Compare with this version number instead of the current champion.

    Returns:
        The evidence document written.

    """
    cfg = section(params, "evaluate")
    name = str(section(params, "register").get("model_name") or "dsnet")
    sha = file_sha256(model_path)
    champion = run_champion(name, sha, data, images, cfg, device, against)
    evidence = build_evidence(
        checkpoint=checkpoint,
        checkpoint_sha256=sha,
        data=data,
        data_dir=data_dir,
        data_version=data_version(data_dir),
        results=results,
        truth=truth,
        metrics=metrics,
        cfg=cfg,
        plots_dir=plots_dir,
        champion=champion,
    )
    write_review(evidence, *review_paths(metrics_path))
    return evidence
