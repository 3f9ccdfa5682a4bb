"""The review report of a registered version: attached at registration, fetched to review.

- :func:`attach_review` (``dsnet register``): the evaluation's report, re-rendered with the
  gate's criteria, is logged to the version's run (tag ``review_report`` = its URI).
- :func:`review_version` (``dsnet registry review``): without ``--against`` (or when the
  attached report already compares with the requested version) the attached report is
  downloaded from the version's run. Otherwise it is rebuilt: the version is evaluated
  again on the current hold-out (``data.dir`` and the split) against the requested
  version, and the gate's criteria recorded at registration are carried over.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from dsnet.core.config import section
from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_text
from dsnet.evaluation.evaluate import evaluate
from dsnet.evaluation.review.champion import CHAMPION_ALIAS
from dsnet.evaluation.review.evidence import (
    EVIDENCE_FILE,
    REPORT_FILE,
    REVIEW_DIR,
    read_evidence,
    write_review,
)
from dsnet.evaluation.review.report_html import render_report
from dsnet.inference.load import checkpoint_from_uri
from dsnet.lifecycle.registry.client import client as registry_client

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


def _version(client: Any, name: str, ref: str) -> Any:
    try:
        if ref == CHAMPION_ALIAS:
            return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
        return client.get_model_version(name, str(int(ref)))
    except (MlflowException, ValueError):
        raise InputError(f"{name} {ref}", "no such model version or alias") from None


def _attached(client: Any, version: Any, scratch: Path) -> dict[str, Any] | None:
    """Download the evidence attached to `version` (``None`` when there is none)."""
    if not version.tags.get(REPORT_TAG):
        return None
    try:
        local = client.download_artifacts(
            version.run_id, f"{REVIEW_DIR}/{EVIDENCE_FILE}", str(scratch)
        )
    except MlflowException:
        return None
    return read_evidence(local)


def review_version(
    name: str,
    version: int,
    out: str | os.PathLike[str],
    params: Mapping[str, Any],
    against: str | None = None,
    split_path: str | os.PathLike[str] = "data/split.json",
) -> dict[str, Any]:
    """Write the review report of `version` of `name` to `out`.

    Args:
        name: Registered model name.
        version: The version under review.
        out: Destination HTML file (written atomically).
        params: Resolved parameters (``data.dir``, ``evaluate``; for a rebuild).
        against: ``champion`` or a version number to compare with; ``None`` keeps the
            comparison of the attached report.
        split_path: The split whose test patients form the hold-out (for a rebuild).

    Returns:
        ``{"out", "source": "attached"|"rebuilt", "compared_with": version or None}``.

    Raises:
        InputError: Unknown version, or a rebuild without the data or the split.

    """
    client = registry_client()
    target = _version(client, name, str(version))
    reference = None if against is None else _version(client, name, against)
    if reference is not None and str(reference.version) == str(target.version):
        raise InputError("--against", f"v{target.version} cannot be compared with itself")
    with tempfile.TemporaryDirectory(prefix="dsnet-review-") as scratch:
        attached = _attached(client, target, Path(scratch))
        compared = (attached or {}).get("champion") or {}
        if attached is not None and (
            reference is None or str(compared.get("version")) == str(reference.version)
        ):
            evidence, source = attached, "attached"
        else:
            evidence = _rebuild(name, target, reference, params, split_path, Path(scratch))
            evidence["criteria"] = (attached or {}).get("criteria")
            source = "rebuilt"
    evidence["version"] = int(target.version)
    atomic_write_text(out, render_report(evidence))
    champion = evidence.get("champion") or {}
    return {"out": str(out), "source": source, "compared_with": champion.get("version")}


def _rebuild(
    name: str,
    target: Any,
    reference: Any | None,
    params: Mapping[str, Any],
    split_path: str | os.PathLike[str],
    scratch: Path,
) -> dict[str, Any]:
    """Evaluate `target` on the current hold-out against `reference` (or the champion)."""
    data_dir = Path(section(params, "data").get("dir") or "data/synthetic")
    if not data_dir.is_dir():
        raise InputError(data_dir, "data dir not found: a rebuilt review needs the hold-out data")
    checkpoint = checkpoint_from_uri(f"models:/{name}/{target.version}")
    isolated = scratch / "model"
    isolated.mkdir()
    shutil.copy(checkpoint, isolated / "model.pt")  # no train_run.json: nothing is logged
    evaluate(
        isolated / "model.pt",
        data_dir,
        split_path,
        scratch / "metrics.json",
        scratch / "plots",
        params,
        review_against=None if reference is None else str(reference.version),
    )
    return read_evidence(scratch / REVIEW_DIR / EVIDENCE_FILE)
