"""Inbox batches and data repositories for the intake tests (real DICOM, git, DVC).

Batches are synthetic data dirs (`dsnet.synth.generate.synthesize`) with identified headers,
as a hospital would deliver them; `renamed` gives a batch other patient ids so that two
seeds do not collide (the generator numbers patients SYN-0001, SYN-0002, ... per seed).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pydicom

KEY = "intake-test-key-0123456789"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "intake test",
    "GIT_AUTHOR_EMAIL": "intake-test@localhost",
    "GIT_COMMITTER_NAME": "intake test",
    "GIT_COMMITTER_EMAIL": "intake-test@localhost",
}


def renamed(src: Path, dest: Path, prefix: str) -> Path:
    """Copy a synthetic data dir with patient ids ``SYN-n`` renamed to ``<prefix>-n``.

    PatientID and PatientName change in every DICOM header, in annotations.json (ids and
    file names) and in dxa.csv.
    """
    rename = lambda pid: pid.replace("SYN", prefix, 1)  # noqa: E731
    coco = json.loads((src / "annotations.json").read_text())
    for image in coco["images"]:
        old = src / image["file_name"]
        image["patient_id"] = rename(image["patient_id"])
        image["file_name"] = f"dicom/{image['patient_id']}/{old.name}"
        ds = pydicom.dcmread(old)
        ds.PatientID = image["patient_id"]
        ds.PatientName = f"TEST^{image['patient_id']}"
        target = dest / image["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target)
    (dest / "annotations.json").write_text(json.dumps(coco))
    rows = list(csv.reader((src / "dxa.csv").read_text().splitlines()))
    with (dest / "dxa.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(rows[0])
        writer.writerows([rename(r[0]), *r[1:]] for r in rows[1:])
    return dest


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a test identity; return stdout."""
    env = {**os.environ, **GIT_IDENTITY}
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def set_remote(repo: Path, url: str, endpoint: str | None, level: str = "repo") -> None:
    """Configure DVC remote ``storage`` (the default) in the repo or local config file."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo, dvc_repo.config.edit(level) as conf:
        conf["remote"]["storage"] = {"url": url, **({"endpointurl": endpoint} if endpoint else {})}
        conf["core"]["remote"] = "storage"


def data_repo(root: Path, remote_url: str, endpoint: str | None = None) -> Path:
    """A data repository: ``git init`` + ``dvc init`` + default remote ``storage``."""
    from dvc.repo import Repo

    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    Repo.init(str(root)).close()
    set_remote(root, remote_url, endpoint)
    git(root, "add", ".dvc", ".dvcignore")
    git(root, "commit", "-q", "-m", "data repository")
    return root


def dvc_pull(repo: Path) -> None:
    """``dvc pull`` everything the checked-out commit tracks."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        dvc_repo.pull()


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under `folder` (empty if absent)."""
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def repo_state(repo: Path, data_dir: str = "data/curated") -> Mapping[str, object]:
    """What must not change when an intake fails: HEAD, tags, status, the data dir's bytes."""
    return {
        "head": git(repo, "rev-parse", "HEAD"),
        "tags": git(repo, "tag", "--list"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "data": tree_bytes(repo / data_dir),
    }


def copy_batch(src: Path, inbox: Path, name: str) -> Path:
    """Put a batch into a local inbox folder."""
    return Path(shutil.copytree(src, inbox / name))


def upload_batch(s3, src: Path, bucket: str, prefix: str) -> int:
    """Upload a batch folder under ``s3://bucket/prefix/``; return the object count."""
    files = [p for p in sorted(src.rglob("*")) if p.is_file()]
    for path in files:
        s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(src).as_posix()}")
    return len(files)


def keys(s3, bucket: str, prefix: str) -> list[str]:
    """Every object key under a prefix, sorted."""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found += [item["Key"] for item in page.get("Contents", [])]
    return sorted(found)
