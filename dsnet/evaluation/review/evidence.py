"""The evidence behind a review report, built from one evaluation's per-slice results.

:func:`build_evidence` gathers, as one JSON document (images as base64 PNG):

- ``card``: the model card (`dsnet.evaluation.review.card`);
- ``metrics``: ``metrics.json`` as written, and ``intervals``: every scalar metric with its
  patient-level bootstrap 95 % interval (`dsnet.evaluation.review.bootstrap`);
- ``champion``: the current champion on the same slices (its metrics, paired differences
  with intervals, the boxes where the two disagree, its confusion matrix), or ``null``;
- ``plots``: PR curves, confusion matrix and loss curve of the evaluation;
- ``gallery`` / ``errors_total``: the worst ``review.gallery_max`` errors drawn;
- ``patients``: the per-patient table (`dsnet.evaluation.review.patients`).

The document is written beside ``metrics.json`` as ``review/evidence.json`` together with
its rendering ``review/report.html``; registration re-renders it with the gate's criteria.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_json, atomic_write_text
from dsnet.core.inputs import read_json
from dsnet.evaluation.plots import write_confusion
from dsnet.evaluation.review.bootstrap import bootstrap
from dsnet.evaluation.review.card import model_card
from dsnet.evaluation.review.champion import ChampionRun
from dsnet.evaluation.review.comparison import disagreements
from dsnet.evaluation.review.gallery import gallery
from dsnet.evaluation.review.patients import patient_table
from dsnet.evaluation.review.report_html import render_report
from dsnet.evaluation.scoring import SliceResult, compute_metrics, json_safe

REVIEW_DIR = "review"
EVIDENCE_FILE = "evidence.json"
REPORT_FILE = "report.html"
DEFAULTS = {"bootstrap_draws": 100, "seed": 0, "gallery_max": 16}


def review_settings(cfg: Mapping[str, Any]) -> dict[str, int]:
    """The ``evaluate.review`` parameters with their defaults, checked.

    Raises:
        InputError: A value that is not a non-negative integer.

    """
    settings = {**DEFAULTS, **(cfg.get("review") or {})}
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(
                f"params evaluate.review.{key}", f"expected an integer >= 0, got {value!r}"
            )
    return settings


def review_paths(metrics_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(evidence.json, report.html)`` of the evaluation that wrote `metrics_path`."""
    folder = Path(metrics_path).parent / REVIEW_DIR
    return folder / EVIDENCE_FILE, folder / REPORT_FILE


def png_base64(path: str | os.PathLike[str] | None) -> str | None:
    """A PNG file as base64 text (``None`` when there is no such file)."""
    if path is None or not Path(path).is_file():
        return None
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def build_evidence(
    *,
    checkpoint: Mapping[str, Any],
    checkpoint_sha256: str,
    data: Any,
    data_dir: str | os.PathLike[str],
    data_version: str,
    results: Sequence[SliceResult],
    truth: Mapping[str, int],
    metrics: Mapping[str, Any],
    cfg: Mapping[str, Any],
    plots_dir: str | os.PathLike[str],
    champion: ChampionRun | None,
) -> dict[str, Any]:
    """Gather the evidence of one evaluation (see the module docstring).

    Args:
        checkpoint: The evaluated checkpoint (``model``, ``preprocess``, ``meta``).
        checkpoint_sha256: Its file hash.
        data: The `DataDir` of the hold-out.
        data_dir: Its path.
        data_version: Its DVC hash.
        results: The evaluated slices.
        truth: Patient id -> DXA diagnosis.
        metrics: The ``metrics.json`` content written by the evaluation.
        cfg: The ``evaluate`` parameters (``review`` sub-section: `DEFAULTS`).
        plots_dir: Folder holding the evaluation's PNG plots.
        champion: The champion's results on the same slices, or ``None``.

    Returns:
        The JSON-safe evidence document.

    """
    settings = review_settings(cfg)
    names = {int(c["id"]): str(c["name"]) for c in data.categories}
    decision = float(cfg.get("decision_threshold", 0.5))
    intervals = bootstrap(
        results,
        data.categories,
        truth,
        cfg,
        settings["bootstrap_draws"],
        settings["seed"],
        reference=None if champion is None else champion.results,
    )
    drawn, total = gallery(
        results, data, names, cfg, checkpoint["preprocess"]["windows"][0], settings["gallery_max"]
    )
    plots_dir = Path(plots_dir)
    evidence = {
        "schema": 1,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoint_sha256": checkpoint_sha256,
        "card": model_card(checkpoint, data_dir, data_version, len(truth), len(results)),
        "metrics": dict(metrics),
        "intervals": intervals,
        "bootstrap": {
            "draws": settings["bootstrap_draws"],
            "seed": settings["seed"],
            "patients": len(truth),
            "level": "patient",
        },  # fmt: skip
        "champion": None,
        "plots": {
            "pr_curves": png_base64(plots_dir / "pr_curves.png"),
            "confusion_matrix": png_base64(plots_dir / "confusion_matrix.png"),
            "train_loss": png_base64(plots_dir / "train_loss.png"),
        },
        "gallery": drawn,
        "errors_total": total,
        "gallery_max": settings["gallery_max"],
        "patients": patient_table(
            results, truth, names, decision, cfg.get("hu_thresholds", (162, 128))
        ),
        "criteria": None,
    }
    if champion is not None:
        evidence["champion"] = champion_section(
            champion, results, data.categories, truth, cfg, names
        )
    return json_safe(evidence)


def champion_section(
    champion: ChampionRun,
    results: Sequence[SliceResult],
    categories: Sequence[Mapping[str, Any]],
    truth: Mapping[str, int],
    cfg: Mapping[str, Any],
    names: Mapping[int, str],
) -> dict[str, Any]:
    """The champion's metrics, confusion matrix and disagreements on the same slices.

    The paired differences with intervals are in the evidence's ``intervals`` (keys
    ``reference*`` and ``diff*``); this section holds what is not a scalar.

    Args:
        champion: The champion's results.
        results: The challenger's results on the same slices.
        categories: COCO categories.
        truth: Patient id -> DXA diagnosis.
        cfg: The ``evaluate`` parameters.
        names: Class id -> name.

    Returns:
        ``version``, ``checkpoint_sha256``, ``confusion_matrix`` (as in metrics.json),
        ``confusion_png`` (base64) and ``disagreements`` (`dsnet.evaluation.review.comparison`).

    """
    metrics, _, counts = compute_metrics(champion.results, categories, truth, cfg)
    with tempfile.TemporaryDirectory(prefix="dsnet-champion-plots-") as scratch:
        write_confusion(counts.confusion, counts.class_ids, names, scratch)
        matrix_png = png_base64(Path(scratch) / "confusion_matrix.png")
    return {
        "version": champion.version,
        "checkpoint_sha256": champion.checkpoint_sha256,
        "confusion_matrix": metrics["confusion_matrix"],
        "confusion_png": matrix_png,
        "disagreements": disagreements(
            results,
            champion.results,
            names,
            float(cfg.get("decision_threshold", 0.5)),
            float(cfg.get("iou_threshold", 0.5)),
        ),
    }


def write_review(
    evidence: Mapping[str, Any],
    evidence_path: str | os.PathLike[str],
    report_path: str | os.PathLike[str],
) -> tuple[Path, Path]:
    """Write the evidence JSON and its HTML rendering (each atomically).

    Returns:
        ``(evidence_path, report_path)``.

    """
    atomic_write_json(evidence_path, evidence)
    atomic_write_text(report_path, render_report(evidence))
    return Path(evidence_path), Path(report_path)


def read_evidence(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an ``evidence.json``.

    Raises:
        InputError: Missing, unreadable or not an evidence document.

    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "review evidence not found (written by dsnet evaluate)")
    evidence = read_json(path)
    if not isinstance(evidence, dict) or evidence.get("schema") != 1:
        raise InputError(path, "not a review evidence document (schema 1)")
    return evidence
