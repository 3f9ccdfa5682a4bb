"""Intake: turn the inbox's new batches into data versions, one version per batch.

For each waiting batch, in name order (`intake_batch`):

1. fetch it (S3: download to a temporary folder) and read it with the data engineer's
   ingest (`dsnet.ingest.sources.read_source`: every file checked and decoded, accepted or
   rejected with a reason);
2. write the accepted slices de-identified (`write_intake`) and merge them into a staged
   copy of the curated data dir (`dsnet.ingest.intake.merge`: no slice twice, ids kept);
3. carry the patient split forward (`dsnet.data.split.split_patients` with the previous
   ``split.json`` as ``previous``: every patient keeps their side, new patients are
   assigned by the keyed hash of their pseudonym, so test metrics of successive versions
   are measured on a growing superset of the same test patients);
4. swap the staged dir in, ``dvc add``, write the data report, ``dvc push``, commit and
   tag ``data-v<N>`` (`dsnet.ingest.intake.versioning`; any failure puts everything back);
5. move the batch to ``processed/`` (or ``rejected/`` when nothing was usable) with its
   report.

A batch that adds nothing new (all duplicates) makes no version; re-running a batch is a
no-op. The whole call is one MLflow run (step ``intake``) with the counts, the current
data report as metrics and artifacts, and tags ``data_version`` / ``data_tag``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_json
from dsnet.data.split import split_patients, write_split
from dsnet.ingest.intake.data_report import (
    REPORT_JSON,
    box_rows,
    build_report,
    report_files,
    report_metrics,
    write_report,
)
from dsnet.ingest.intake.inbox import (
    PROCESSED,
    REJECTED,
    LocalInbox,
    S3Inbox,
    batch_source,
    open_inbox,
)
from dsnet.ingest.intake.merge import SPLIT_FILE, load_curated, merge_batch
from dsnet.ingest.intake.versioning import DataRepo
from dsnet.ingest.sources import STRUCTURAL_ITEMS, read_source, report_redactor, resolve_key
from dsnet.ingest.write import write_intake
from dsnet.io.redact import Redactor, batch_ref, source_ref
from dsnet.tracking.runs import start_run

BATCH_REPORT_FORMAT = "dsnet-intake-report/1"
BATCH_REPORT = "batch_report.json"
VERSIONED, UNCHANGED = "versioned", "unchanged"


@dataclass(frozen=True)
class BatchResult:
    """What happened to one batch.

    Attributes:
        batch: Its name.
        outcome: ``versioned`` (a new data version), ``unchanged`` (nothing new: all
            duplicates) or ``rejected`` (nothing usable).
        accepted: Slices added to the curated data.
        duplicates: Slices already curated.
        rejected: Files or records rejected (reasons in the report).
        tag: The new version's tag, or None.
        data_version: The new version, or None.
        location: Where the batch and its report are now.
    """

    batch: str
    outcome: str
    accepted: int
    duplicates: int
    rejected: int
    tag: str | None
    data_version: str | None
    location: str


@dataclass
class IntakeResult:
    """The outcome of an intake run.

    Attributes:
        data_version: The curated data's version after the run (None: no version yet).
        tag: Its ``data-v<N>`` tag, or None.
        previous_version: The version before the run.
        batches: One result per handled batch.
        run_id: The MLflow run (None when tracking is off).
    """

    data_version: str | None
    tag: str | None
    previous_version: str | None
    batches: list[BatchResult] = field(default_factory=list)
    run_id: str | None = None

    @property
    def new_versions(self) -> int:
        """Number of data versions this run made."""
        return sum(1 for b in self.batches if b.outcome == VERSIONED)

    def totals(self) -> dict[str, int]:
        """Accepted, duplicate and rejected counts over all batches, and the batch count."""
        return {
            "batches_handled": len(self.batches),
            "new_versions": self.new_versions,
            "accepted": sum(b.accepted for b in self.batches),
            "duplicates": sum(b.duplicates for b in self.batches),
            "rejected": sum(b.rejected for b in self.batches),
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "data_version": self.data_version,
            "tag": self.tag,
            "previous_version": self.previous_version,
            "changed": self.data_version != self.previous_version,
            **self.totals(),
            "batches": [asdict(b) for b in self.batches],
            "run_id": self.run_id,
        }


def intake(
    inbox: str,
    data_repo: str | PathLike[str],
    data_dir: str = "data/curated",
    remote: str | None = None,
    key: str | None = None,
    git_remote: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> IntakeResult:
    """Ingest every waiting batch of the inbox into the curated data dir, versioning each.

    Args:
        inbox: A local folder or ``s3://bucket/prefix`` (`dsnet.ingest.intake.inbox`).
        data_repo: The data repository (git work tree with DVC) holding the data dir.
        data_dir: The curated data dir, relative to `data_repo`.
        remote: DVC remote to push to (None: the repository's default remote).
        key: De-identification key; None reads env ``DSNET_DEID_KEY``.
        git_remote: Git remote to push the commit and tag to before a batch counts as
            done (None: local commits only).
        test_fraction: Params ``split.test_fraction`` (must match an existing split).
        seed: Params ``split.seed`` (must match an existing split).

    Returns:
        The data version after the run, and what happened to each batch.

    Raises:
        InputError: On a bad inbox, key or data repository, or a work tree that differs
            from its last commit.
        VersioningError: When DVC or git fails; the failed batch's changes were undone
            and the batch is still in the inbox (retry).

    """
    key = resolve_key(key)
    repo = DataRepo(data_repo, data_dir)
    box = open_inbox(inbox)
    report_dir = repo.root / "reports" / repo.target.name
    managed = managed_files(repo, report_dir)
    settings = {
        "inbox": box.uri,
        "data_repo": str(repo.root),
        "data_dir": repo.rel(repo.target),
        "remote": remote or "",
        "git_remote": git_remote or "",
    }
    split_settings = {"test_fraction": test_fraction, "seed": seed}
    with repo.lock():
        repo.recover(managed)
        before = repo.check_clean(managed, remote)
        result = IntakeResult(before, repo.version_tag(before), previous_version=before)
        with start_run("intake", params={"intake": settings, "split": split_settings}) as run:
            result.run_id = run.run_id
            for batch in box.batches():
                outcome, report = intake_batch(
                    box, batch, repo, report_dir, key, remote, git_remote, split_settings
                )
                result.batches.append(outcome)
                with tempfile.TemporaryDirectory(prefix="dsnet-intake-") as scratch:
                    name = f"{report['batch']}.json"
                    run.log_artifact(atomic_write_json(Path(scratch) / name, report), "batches")
            result.data_version = repo.head_version()
            result.tag = repo.version_tag(result.data_version)
            run.set_tags(
                {
                    "data_version": result.data_version or "",
                    "data_tag": result.tag or "",
                    "previous_data_version": before or "",
                }
            )
            run.log_metrics(result.totals())
            if (report_dir / REPORT_JSON).is_file():
                current = json.loads((report_dir / REPORT_JSON).read_text(encoding="utf-8"))
                run.log_metrics(report_metrics(current))
                for path in report_files(report_dir):
                    run.log_artifact(path, "data_report")
    return result


def managed_files(repo: DataRepo, report_dir: Path) -> list[Path]:
    """The tracked files intake writes: the ``.dvc`` file, ``.gitignore``, the reports."""
    return [repo.dvc_file, repo.gitignore, *report_files(report_dir), report_dir / BATCH_REPORT]


def intake_batch(
    box: LocalInbox | S3Inbox,
    batch: str,
    repo: DataRepo,
    report_dir: Path,
    key: str,
    remote: str | None,
    git_remote: str | None,
    split_settings: dict[str, Any],
) -> tuple[BatchResult, dict[str, Any]]:
    """Ingest, merge and version one batch, then move it out of the inbox.

    Returns:
        The batch's result and its report (also written next to the moved batch).

    """
    label = batch_ref(batch, key)
    report: dict[str, Any] = {
        "format": BATCH_REPORT_FORMAT,
        "batch": label,
        "inbox": box.uri,
        "accepted": [],
        "duplicates": [],
        "rejected": [],
        "tag": None,
        "data_version": None,
    }
    staging = repo.new_staging()
    try:
        with box.fetch(batch) as fetched:
            redact = Redactor(key, source=fetched.folder, structural=STRUCTURAL_ITEMS)
            report["rejected"] += [
                {"source": source_ref(item, key), "reason": r} for item, r in fetched.unusable
            ]
            try:
                found = read_source(batch_source(fetched.folder), key)
            except InputError as exc:
                source = _relative(exc.path, fetched.folder)
                report["rejected"].append(redact.entry({"source": source, "reason": exc.reason}))
                return _finish(box, batch, REJECTED, report)
            redact = report_redactor(found, key)
            report["source_form"] = found.form
            report["rejected"] += [
                redact.entry({"source": item, "reason": reason}) for item, reason in found.rejected
            ]
            if not found.records:
                return _finish(box, batch, REJECTED, report)
            written = write_intake(found, staging.with_name("batch"), key)
        curated = load_curated(repo.target)
        merged = merge_batch(curated, staging.with_name("batch"), written, staging, label)
        report["accepted"] = [redact.entry(e) for e in merged.added]
        report["duplicates"] = [redact.entry(e) for e in merged.duplicates]
        report["rejected"] += [redact.entry(e) for e in merged.rejected]
        if not merged.added:
            return _finish(box, batch, PROCESSED if merged.duplicates else REJECTED, report)

        split = split_patients(merged.data, previous=curated.split, **split_settings)
        write_split(split, staging / SPLIT_FILE)
        rows = box_rows(merged.data, split, {r["file"]: r["batch"] for r in merged.sources})
        previous = _read_json(report_dir / REPORT_JSON)
        tag = repo.next_tag()
        managed = managed_files(repo, report_dir)
        with repo.swapped_in(staging, managed):
            version = repo.dvc_add()
            report.update(tag=tag, data_version=version)
            data_report = build_report(
                merged.data, split, rows, {"data_version": version, "tag": tag}, previous
            )
            write_report(report_dir, data_report, rows)
            atomic_write_json(report_dir / BATCH_REPORT, _with_summary(report))
            totals = data_report["totals"]
            message = (
                f"intake {label}: {tag} {version}\n\n"
                f"{len(merged.added)} slices added, {len(merged.duplicates)} duplicates, "
                f"{len(report['rejected'])} rejected; now {totals['slices']} slices of "
                f"{totals['patients']} patients"
            )
            repo.publish(managed, message, tag, remote, git_remote)
        return _finish(box, batch, PROCESSED, report)
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)


def _with_summary(report: dict[str, Any]) -> dict[str, Any]:
    summary = {k: len(report[k]) for k in ("accepted", "duplicates", "rejected")}
    return {**report, "summary": summary}


def _finish(
    box: LocalInbox | S3Inbox, batch: str, folder: str, report: dict[str, Any]
) -> tuple[BatchResult, dict[str, Any]]:
    report = _with_summary(report)
    report["outcome"] = folder
    location = box.finish(batch, folder, report)
    outcome = VERSIONED if report["tag"] else (UNCHANGED if folder == PROCESSED else REJECTED)
    result = BatchResult(
        batch=batch,
        outcome=outcome,
        accepted=len(report["accepted"]),
        duplicates=len(report["duplicates"]),
        rejected=len(report["rejected"]),
        tag=report["tag"],
        data_version=report["data_version"],
        location=location,
    )
    return result, report


def _relative(path: str, folder: Path) -> str:
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return path


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
