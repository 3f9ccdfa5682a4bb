"""A data dir from a DVC data repository at a Git revision (the pipeline's ``fetch_data``).

The same thing as ``dvc get URL PATH --rev REV``: the Git repository is cloned at the
revision and the data is read from its DVC remote (S3; credentials from the
``AWS_*`` environment). The result is checked against the data contract before it is
handed on, and identified by its DVC hash (``data_version``, the value in the data repo's
``.dvc``/``dvc.lock`` files) and the commit it came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dvc.api import DVCFileSystem
from dvc.exceptions import DvcException
from scmrepo.exceptions import SCMError

from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_dir
from dsnet.data.contract import load_data_dir
from dsnet.tracking.lineage import data_version


def fetch_dvc_data(
    url: str,
    revision: str,
    path: str,
    out_dir: str | os.PathLike[str],
    endpoint_url: str = "",
) -> dict[str, Any]:
    """Download the data dir `path` of DVC repository `url` at `revision` into `out_dir`.

    Args:
        url: Git URL or local path of the data repository.
        revision: Branch, tag or commit; empty for the default branch.
        path: The data dir inside the repository, e.g. ``data/synthetic``.
        out_dir: Destination folder (replaced as a whole, atomically).
        endpoint_url: S3 endpoint of the DVC remote; empty keeps the repository's
            remote configuration.

    Returns:
        ``{"data_version", "commit", "url", "revision", "path", "patients", "images"}``.

    Raises:
        InputError: The repository, revision or path cannot be read, or the data does not
            follow the data contract.

    """
    source = f"{url}@{revision or 'default branch'}"
    remote_config = {"endpointurl": endpoint_url} if endpoint_url else None
    out_dir = Path(out_dir)
    try:
        fs = DVCFileSystem(url, rev=revision or None, remote_config=remote_config)
        if not fs.isdir(path):
            raise InputError(f"{source}:{path}", "no such data dir in the repository")
        commit = fs.repo.get_rev()
        with atomic_dir(out_dir) as tmp:
            fs.get(path.rstrip("/") + "/", str(tmp), recursive=True)
    except (DvcException, SCMError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(source, f"cannot fetch {path}: {reason}") from None
    data = load_data_dir(out_dir)
    return {
        "data_version": data_version(out_dir),
        "commit": commit,
        "url": url,
        "revision": revision,
        "path": path,
        "patients": len(data.patients()),
        "images": len(data.images),
    }
