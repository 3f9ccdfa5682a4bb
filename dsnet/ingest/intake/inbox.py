"""The inbox: where new batches of studies arrive, and where they go once handled.

An inbox is a local folder or an S3 prefix; every direct sub-folder is one *batch*::

    <inbox>/<batch>/...               waiting (an ingest source: docs/data.md)
    <inbox>/processed/<batch>/...     handled: something was accepted or already present
    <inbox>/rejected/<batch>/...      handled: nothing was usable
    .../<batch>/intake_report.json    what happened to every file, and why

``processed`` and ``rejected`` are reserved names, names starting with ``.`` or ``_`` are
skipped (uploads in progress can use them). Batches are handled in name order. A batch is
moved as a whole, rejected files included, so every file stays available next to the
report that gives its reason. A handled batch whose name is taken already gets the first
free ``<batch>-<n>`` (n >= 2).

S3 inboxes (``s3://bucket/prefix``) use boto3 with the usual credentials; the endpoint
is ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` or ``MLFLOW_S3_ENDPOINT_URL`` (MinIO, moto).
S3 has no rename: a batch is moved by copying every object, writing the report, then
deleting the originals, so an interrupted move leaves the batch in the inbox (a retry
handles it again and finds nothing new).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_json

PROCESSED = "processed"
REJECTED = "rejected"
OUTCOMES = (PROCESSED, REJECTED)
REPORT_NAME = "intake_report.json"
_DELETE_CHUNK = 1000  # S3 DeleteObjects takes at most 1000 keys


@dataclass
class FetchedBatch:
    """A batch as a local folder.

    Attributes:
        name: The batch name.
        folder: Local folder holding the batch's files.
        unusable: (item, reason) for objects that could not be fetched safely.
    """

    name: str
    folder: Path
    unusable: list[tuple[str, str]] = field(default_factory=list)


def batch_source(folder: Path) -> Path:
    """The ingest source of a batch: the folder itself (a data dir) or its one CSV of boxes.

    Raises:
        InputError: When the folder has neither ``annotations.json`` nor exactly one
            ``.csv`` at its top.

    """
    if (folder / "annotations.json").is_file():
        return folder
    tables = sorted(folder.glob("*.csv"))
    if len(tables) == 1:
        return tables[0]
    found = ", ".join(t.name for t in tables) or "nothing"
    raise InputError(
        folder.name,
        "a batch holds a data dir (annotations.json) or one CSV of boxes at its top; "
        f"found {found}",
    )


def is_batch_name(name: str) -> bool:
    """Whether a sub-folder name of the inbox is a batch waiting to be handled."""
    return bool(name) and name not in OUTCOMES and not name.startswith((".", "_"))


def open_inbox(uri: str) -> LocalInbox | S3Inbox:
    """Open an inbox from a folder path, ``file://`` URI or ``s3://bucket/prefix`` URI.

    Raises:
        InputError: On a missing local folder or an S3 URI without a bucket.

    """
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise InputError(uri, "an S3 inbox needs a bucket: s3://bucket/prefix")
        return S3Inbox(uri, bucket, prefix.strip("/"))
    root = Path(uri.removeprefix("file://"))
    if root.exists() and not root.is_dir():
        raise InputError(uri, "is a file; the inbox is a folder of batch folders")
    if not root.is_dir():
        raise InputError(uri, "inbox folder not found")
    return LocalInbox(root)


class LocalInbox:
    """An inbox in a local folder.

    Args:
        root: The inbox folder.

    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def batches(self) -> list[str]:
        """Names of the waiting batches, sorted."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_batch_name(p.name))

    @contextlib.contextmanager
    def fetch(self, batch: str) -> Iterator[FetchedBatch]:
        """Yield the batch in place (nothing is copied)."""
        yield FetchedBatch(batch, self.root / batch)

    def finish(self, batch: str, outcome: str, report: Mapping[str, Any]) -> str:
        """Move a batch to ``processed/`` or ``rejected/`` and write its report there.

        Returns:
            The batch's new location.

        """
        parent = self.root / outcome
        parent.mkdir(exist_ok=True)
        dest = parent / free_name(batch, lambda name: (parent / name).exists())
        os.replace(self.root / batch, dest)
        atomic_write_json(dest / REPORT_NAME, dict(report))
        return str(dest)


class S3Inbox:
    """An inbox under an S3 prefix.

    Args:
        uri: The inbox URI (``s3://bucket/prefix``).
        bucket: Its bucket.
        prefix: Its key prefix without slashes at either end ("" for the bucket root).

    """

    def __init__(self, uri: str, bucket: str, prefix: str) -> None:

        self.uri, self.bucket = uri.rstrip("/"), bucket
        self.prefix = f"{prefix}/" if prefix else ""
        endpoint = (
            os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        )
        self._s3 = boto3.client("s3", endpoint_url=endpoint or None)

    def _keys(self, prefix: str) -> Iterator[str]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"]

    def batches(self) -> list[str]:
        """Names of the waiting batches, sorted.

        Raises:
            InputError: When the bucket cannot be listed (missing, no access, no endpoint).

        """
        names = set()
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
        )
        try:
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    names.add(common["Prefix"][len(self.prefix) :].rstrip("/"))
        except (BotoCoreError, ClientError) as exc:
            raise InputError(self.uri, f"cannot list the inbox: {exc}") from None
        return sorted(name for name in names if is_batch_name(name))

    @contextlib.contextmanager
    def fetch(self, batch: str) -> Iterator[FetchedBatch]:
        """Download a batch into a temporary folder (deleted afterwards) and yield it.

        Object keys that would leave the folder (``..``, absolute) are not downloaded
        and are listed in `FetchedBatch.unusable`.
        """
        start = f"{self.prefix}{batch}/"
        with tempfile.TemporaryDirectory(prefix=f"dsnet-inbox-{batch}-") as scratch:
            fetched = FetchedBatch(batch, Path(scratch))
            for key in self._keys(start):
                rel = PurePosixPath(key[len(start) :])
                if key.endswith("/"):  # a "folder" marker object
                    continue
                if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                    fetched.unusable.append((key, "object key leaves the batch folder"))
                    continue
                dest = fetched.folder.joinpath(*rel.parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                self._s3.download_file(self.bucket, key, str(dest))
            yield fetched

    def finish(self, batch: str, outcome: str, report: Mapping[str, Any]) -> str:
        """Move a batch to ``processed/`` or ``rejected/`` and write its report there.

        Returns:
            The batch's new location (``s3://...``).

        """
        start = f"{self.prefix}{batch}/"
        parent = f"{self.prefix}{outcome}/"
        name = free_name(batch, lambda n: any(True for _ in self._keys(f"{parent}{n}/")))
        dest = f"{parent}{name}/"
        keys = list(self._keys(start))
        for key in keys:
            self._s3.copy_object(
                Bucket=self.bucket,
                Key=dest + key[len(start) :],
                CopySource={"Bucket": self.bucket, "Key": key},
            )
        body = json.dumps(dict(report), indent=2, sort_keys=True).encode("utf-8") + b"\n"
        self._s3.put_object(Bucket=self.bucket, Key=dest + REPORT_NAME, Body=body)
        for first in range(0, len(keys), _DELETE_CHUNK):
            chunk = keys[first : first + _DELETE_CHUNK]
            self._s3.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
        return f"s3://{self.bucket}/{dest}"


def free_name(batch: str, taken: Callable[[str], bool]) -> str:
    """`batch`, or the first ``<batch>-<n>`` (n >= 2) for which ``taken(name)`` is false."""
    name, n = batch, 1
    while taken(name):
        n += 1
        name = f"{batch}-{n}"
    return name
