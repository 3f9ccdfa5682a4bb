"""Version the curated data dir: DVC (add, push, pull) and git (commit, tag, push).

The *data repository* is a git work tree with DVC initialised; the curated data dir
lives inside it, tracked by ``<data-dir>.dvc``. A data version is the DVC hash of the
data dir (``<md5>.dir``, the value `dsnet.tracking.lineage.data_version` computes), recorded in
one commit tagged ``data-v<N>``.

Tools. DVC runs in process through its Python API, ``dvc.repo.Repo.add / push / pull``
(the calls behind ``dvc add | push | pull``; no CLI start-up per step). Git runs through
the ``git`` command line; the commit and its annotated tag are made with plumbing
(``read-tree``/``write-tree`` on a temporary index, ``commit-tree``, ``mktag``) and land
in one ``git update-ref --stdin`` transaction: both refs move, or neither.

Order for a new version (`DataRepo.swapped_in` + `DataRepo.publish`):

1. The staged data dir is swapped in; the old one is kept aside in
   ``.dvc/tmp/intake/previous`` and a marker records the version HEAD had.
2. ``dvc add`` writes the new ``.dvc`` file and caches the files.
3. ``dvc push`` uploads them to the remote.
4. One transaction creates the commit (``.dvc`` file, ``.gitignore``, report files) and
   the tag.
5. Optionally ``git push --atomic`` to the data repository's upstream; if it is refused,
   the local refs move back.
6. The old data dir is deleted.

A failure in 2-5 puts everything back: the data dir, the tracked files (from HEAD), the
refs. The DVC cache and the remote may keep objects of the failed version; they are
content-addressed and referenced by no commit, a retry reuses them and ``dvc gc``
removes them. A run killed in 1-5 leaves the marker; the next run's `DataRepo.recover`
rolls back when HEAD still has the old version, or just tidies up when the commit was
made.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path

import yaml
from dvc.repo import Repo

from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_json
from dsnet.ingest.intake.gitrepo import TAG_PREFIX, GitWorkTree, VersioningError
from dsnet.tracking.lineage import data_version

WORK_DIR = ".dvc/tmp/intake"


class DataRepo(GitWorkTree):
    """The data repository holding one curated data dir.

    Args:
        root: Top of the git work tree (DVC initialised).
        data_dir: The curated data dir, relative to `root` (e.g. ``data/curated``).

    Raises:
        InputError: When `root` is not the top of a git work tree with ``.dvc/``, or
            `data_dir` is not a folder path inside it.

    """

    def __init__(self, root: str | PathLike[str], data_dir: str | PathLike[str]) -> None:
        self.root = Path(root).resolve()
        if not (self.root / ".dvc").is_dir():
            raise InputError(root, "not a DVC repository (git init && dvc init)")
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=self.root, capture_output=True, text=True
        )
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != self.root:
            raise InputError(root, "not the top folder of a git work tree")
        self.target = (self.root / data_dir).resolve()
        if self.root not in self.target.parents or self.root / ".dvc" in self.target.parents:
            raise InputError(data_dir, f"the data dir must lie inside {self.root}")
        self.dvc_file = self.target.with_name(f"{self.target.name}.dvc")
        self.gitignore = self.target.parent / ".gitignore"
        self.work = self.root / WORK_DIR
        self.previous = self.work / "previous"
        self.marker = self.work / "swap.json"
        self._env: dict[str, str] | None = None

    # -- git -------------------------------------------------------------------------

    def head_version(self) -> str | None:
        """The data version HEAD records for the data dir, or None."""
        blob = self.head_blob(self.dvc_file)
        return recorded_version(blob.decode("utf-8")) if blob is not None else None

    def version_tag(self, version: str | None) -> str | None:
        """The highest ``data-v<N>`` tag whose commit records `version`, or None."""
        if version is None:
            return None
        for tag in reversed(self.tags()):
            blob = subprocess.run(
                ["git", "cat-file", "blob", f"{tag}:{self.rel(self.dvc_file)}"],
                cwd=self.root,
                capture_output=True,
            )
            if blob.returncode == 0 and recorded_version(blob.stdout.decode("utf-8")) == version:
                return tag
        return None

    def next_tag(self) -> str:
        """The tag of the next version: ``data-v<N+1>`` after the highest existing N."""
        tags = self.tags()
        return f"{TAG_PREFIX}{int(tags[-1][len(TAG_PREFIX) :]) + 1 if tags else 1}"

    # -- DVC -------------------------------------------------------------------------

    @contextlib.contextmanager
    def dvc_repo(self, action: str) -> Iterator[Repo]:
        """Open the DVC repository; any DVC failure inside becomes one `VersioningError`.

        Args:
            action: What is being done, for the message (``"<action> failed: <reason>"``).

        """
        try:
            with Repo(str(self.root)) as repo:
                yield repo
        except Exception as exc:  # noqa: BLE001 - any DVC failure aborts the version/intake
            raise VersioningError(f"{action} failed: {exc}") from exc

    def dvc_add(self) -> str:
        """``dvc add`` the data dir; return its new data version."""
        with self.dvc_repo(f"dvc add {self.rel(self.target)}") as repo:
            repo.scm_context.quiet = True
            repo.add([str(self.target)])
        return recorded_version(self.dvc_file.read_text(encoding="utf-8"))

    def dvc_push(self, remote: str | None) -> None:
        """``dvc push`` the data dir to `remote` (None: the default remote)."""
        with self.dvc_repo(f"dvc push to remote {remote or '(default)'}") as repo:
            repo.push(targets=[str(self.dvc_file)], remote=remote)

    def dvc_pull(self, remote: str | None) -> None:
        """``dvc pull`` the data dir from `remote` (None: the default remote)."""
        with self.dvc_repo(f"dvc pull from remote {remote or '(default)'}") as repo:
            repo.pull(targets=[str(self.dvc_file)], remote=remote)

    # -- the whole step ----------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the repository's intake lock (one intake at a time).

        Raises:
            InputError: When another intake holds it.

        """
        self.work.mkdir(parents=True, exist_ok=True)
        with open(self.work / "lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(
                    self.root, "another intake is running on this repository"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def recover(self, paths: Sequence[Path]) -> None:
        """Finish or roll back what a killed run left, and delete stale staging folders."""
        for stale in self.work.glob("staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if self.marker.is_file():
            swap = json.loads(self.marker.read_text(encoding="utf-8"))
            if self.head_version() == swap["old_version"]:
                self._roll_back(paths, had_old=swap["had_old"])
            else:
                shutil.rmtree(self.previous, ignore_errors=True)
            self.marker.unlink()
        elif self.previous.exists() and not self.target.exists():
            os.replace(self.previous, self.target)

    def check_clean(self, paths: Sequence[Path], remote: str | None) -> str | None:
        """Check that the work tree holds HEAD's version; pull the data dir if absent.

        Args:
            paths: Tracked files intake writes (``.dvc`` file, ``.gitignore``, reports).
            remote: DVC remote to pull from.

        Returns:
            The current data version (None before the first one).

        Raises:
            InputError: When a tracked file or the data dir differs from HEAD.

        """
        self.branch()
        for path in paths:
            current = path.read_bytes() if path.is_file() else None
            if current != self.head_blob(path):
                raise InputError(path, "differs from the data repository's last commit")
        version = self.head_version()
        if version is None:
            if self.target.exists():
                raise InputError(
                    self.target, f"exists but {self.rel(self.dvc_file)} is not committed"
                )
            return None
        if not self.target.exists():
            self.dvc_pull(remote)
        if data_version(self.target) != version:
            raise InputError(
                self.target, f"differs from version {version} in {self.rel(self.dvc_file)}"
            )
        return version

    def new_staging(self) -> Path:
        """A fresh, not yet existing path for a staged data dir (same file system)."""
        self.work.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="staging-", dir=self.work)) / "data"

    @contextlib.contextmanager
    def swapped_in(self, staging: Path, paths: Sequence[Path]) -> Iterator[None]:
        """Put `staging` in place of the data dir; on an exception put everything back.

        Args:
            staging: The new data dir (from `new_staging`).
            paths: Tracked files the block may change; restored from HEAD on failure.

        """
        had_old = self.target.exists()
        shutil.rmtree(self.previous, ignore_errors=True)
        if had_old:
            os.replace(self.target, self.previous)
        atomic_write_json(self.marker, {"old_version": self.head_version(), "had_old": had_old})
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, self.target)
            yield
        except BaseException:
            self._roll_back(paths, had_old)
            self.marker.unlink(missing_ok=True)
            raise
        shutil.rmtree(self.previous, ignore_errors=True)
        self.marker.unlink(missing_ok=True)

    def _roll_back(self, paths: Sequence[Path], had_old: bool) -> None:
        if self.previous.exists():
            shutil.rmtree(self.target, ignore_errors=True)
            os.replace(self.previous, self.target)
        elif not had_old:
            shutil.rmtree(self.target, ignore_errors=True)
        self.restore_files(paths)

    def publish(
        self,
        paths: Sequence[Path],
        message: str,
        tag: str,
        remote: str | None,
        git_remote: str | None,
    ) -> str:
        """Push the data, then commit and tag, then (optionally) push git (steps 3-5).

        Returns:
            The new commit.

        Raises:
            VersioningError: When a step fails; refs are back where they were.

        """
        self.dvc_push(remote)
        old = self.head()
        commit = self.commit_and_tag(paths, message, tag)
        if git_remote:
            try:
                self.push_git(git_remote)
            except VersioningError:
                self.move_refs_back(old, commit, tag)
                raise
        return commit


def recorded_version(dvc_text: str) -> str:
    """The data version (``<md5>.dir``) a ``.dvc`` file records.

    Raises:
        InputError: When the file does not record one output with an md5.

    """
    try:
        (out,) = yaml.safe_load(dvc_text)["outs"]
        return str(out["md5"])
    except (TypeError, KeyError, ValueError, yaml.YAMLError):
        raise InputError(".dvc file", "does not record one output with an md5") from None
