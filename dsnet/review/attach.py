"""Attach an evaluation's review report to the model version being registered."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsnet.review.evidence import (
    EVIDENCE_FILE,
    REPORT_FILE,
    REVIEW_DIR,
    read_evidence,
    write_review,
)

REPORT_TAG = "review_report"


def report_uri(run_id: str) -> str:
    """The ``runs:/`` URI of the review report logged to `run_id`."""
    return f"runs:/{run_id}/{REVIEW_DIR}/{REPORT_FILE}"


def attach_review(
    mlflow_client: Any,
    run_id: str,
    evidence_path: str | os.PathLike[str] | None,
    criteria: Sequence[Mapping[str, Any]],
) -> str | None:
    """Re-render the evaluation's review with the gate's criteria and log it to `run_id`.

    Args:
        mlflow_client: The registry/tracking client.
        run_id: The run the model version is created from.
        evidence_path: ``review/evidence.json`` written by ``dsnet evaluate``.
        criteria: The gate's criteria for this registration.

    Returns:
        :func:`report_uri`, or ``None`` when the evaluation left no evidence (an
        evaluation from before the review existed, or metrics written by hand).

    """
    if evidence_path is None or not Path(evidence_path).is_file():
        return None
    evidence = {**read_evidence(evidence_path), "criteria": [dict(c) for c in criteria]}
    with tempfile.TemporaryDirectory(prefix="dsnet-review-") as scratch:
        paths = write_review(evidence, Path(scratch) / EVIDENCE_FILE, Path(scratch) / REPORT_FILE)
        for path in paths:
            mlflow_client.log_artifact(run_id, str(path), REVIEW_DIR)
    return report_uri(run_id)


def description_link(uri: str | None) -> str:
    """The Markdown paragraph of a version description that points to its review report."""
    if uri is None:
        return "No review report (the evaluation wrote no review evidence)."
    return (
        f"**Review report**: `{uri}` (run artifact `{REVIEW_DIR}/{REPORT_FILE}`); "
        "read it with `dsnet registry review <version>` before promoting."
    )
