"""The pipeline's ``version_data`` step: intake into a data repository given by its URL.

A pipeline pod has no work tree of the data repository, so the step clones the data
branch into a temporary folder, points the clone's DVC remote at the cluster's S3
endpoint (``.dvc/config.local``, as ``dvc remote modify --local`` does), runs `intake`
with ``git_remote="origin"`` (each version's commit and tag are pushed back before its
batch counts as done), and returns the commit the pipeline then fetches and trains on.

Push access to the data repository comes from the pod's environment, e.g. a Secret
providing ``GIT_CONFIG_COUNT=1``, ``GIT_CONFIG_KEY_0=http.extraHeader``,
``GIT_CONFIG_VALUE_0=Authorization: Bearer <token>`` (git reads these variables).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from dvc.repo import Repo

from dsnet.core.errors import InputError
from dsnet.ingest.intake.run import IntakeResult, intake


def clone_data_repo(url: str, branch: str, dest: Path, remote: str | None, endpoint: str) -> Path:
    """Clone `branch` of the data repository into `dest`; set the DVC remote's endpoint.

    Args:
        url: Git URL (or path) of the data repository.
        branch: The data branch (empty: the repository's default branch).
        dest: New folder for the clone.
        remote: DVC remote whose endpoint to set (None: the default remote).
        endpoint: S3 endpoint URL (empty: keep the repository's setting).

    Raises:
        InputError: When the repository or branch cannot be cloned.

    """
    args = ["git", "clone", "--quiet", *(["--branch", branch] if branch else []), url, str(dest)]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(
            url, f"cannot clone {branch or 'the default branch'}: {done.stderr.strip()}"
        )
    if endpoint:
        with Repo(str(dest)) as repo:
            name = remote or repo.config["core"].get("remote")
            if not name:
                raise InputError(url, "the data repository has no default DVC remote")
            with repo.config.edit("local") as conf:
                conf["remote"][name] = {"endpointurl": endpoint}
    return dest


def version_data_repo(
    inbox: str,
    url: str,
    branch: str,
    data_dir: str,
    remote: str | None = None,
    endpoint: str = "",
    key: str | None = None,
    **split_settings: Any,
) -> tuple[IntakeResult, str]:
    """Run the intake on a fresh clone of the data repository and push the new versions.

    Args:
        inbox: The inbox (``s3://bucket/prefix`` in a cluster).
        url: Git URL of the data repository.
        branch: Its data branch.
        data_dir: The curated data dir inside it.
        remote: DVC remote (None: the default).
        endpoint: S3 endpoint of the DVC remote (empty: the repository's setting).
        key: De-identification key (None: env ``DSNET_DEID_KEY``).
        split_settings: ``test_fraction`` and ``seed`` (params section ``split``).

    Returns:
        The intake's result and the commit that holds the current data version.

    """
    with tempfile.TemporaryDirectory(prefix="dsnet-data-repo-") as scratch:
        clone = clone_data_repo(url, branch, Path(scratch) / "repo", remote, endpoint)
        result = intake(
            inbox, clone, data_dir, remote=remote, key=key, git_remote="origin", **split_settings
        )
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
        ).stdout.strip()
    return result, commit


def intake_markdown(result: IntakeResult, commit: str) -> str:
    """Describe an intake run in Markdown (the KFP UI shows it on the step)."""
    if result.batches:
        verdict = (
            f"{result.new_versions} new data version(s)" if result.new_versions else "no new data"
        )
    else:
        verdict = "inbox empty: the data is unchanged"
    lines = [
        f"# Data intake: {verdict}",
        "",
        f"- data version: `{result.data_version}` ({result.tag or 'untagged'}, commit `{commit}`)",
        f"- before: `{result.previous_version}`",
        "",
    ]
    if result.batches:
        lines += [
            "| batch | outcome | accepted | duplicates | rejected | tag |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {b.batch} | {b.outcome} | {b.accepted} | {b.duplicates} | {b.rejected} | "
            f"{b.tag or ''} |"
            for b in result.batches
        ]
    return "\n".join(lines) + "\n"
