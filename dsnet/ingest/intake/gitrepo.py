"""The git side of a data repository: run git, read HEAD, commit and tag in one step.

`GitWorkTree` is the base of `dsnet.ingest.intake.versioning.DataRepo`: it knows the work
tree (``root``) and git only; the data dir, DVC and data versions live in `DataRepo`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dsnet.core.errors import DsnetError, InputError

TAG_PREFIX = "data-v"
DEFAULT_IDENTITY = {
    "GIT_AUTHOR_NAME": "dsnet intake",
    "GIT_AUTHOR_EMAIL": "dsnet-intake@localhost",
    "GIT_COMMITTER_NAME": "dsnet intake",
    "GIT_COMMITTER_EMAIL": "dsnet-intake@localhost",
}


class VersioningError(DsnetError):
    """DVC or git failed while publishing a version; everything was put back as it was."""


class GitWorkTree:
    """A git work tree at `root` (set by the subclass), driven through the ``git`` CLI."""

    root: Path
    _env: dict[str, str] | None

    def rel(self, path: Path) -> str:
        """`path` relative to the repository root, with forward slashes."""
        return path.relative_to(self.root).as_posix()

    def git(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
        """Run ``git args`` in the repository; return stdout stripped.

        Raises:
            VersioningError: On a non-zero exit, with git's message.

        """
        result = subprocess.run(
            ["git", *args],
            cwd=self.root,
            input=stdin,
            capture_output=True,
            text=True,
            env={**self.git_env(), **(env or {})},
        )
        if result.returncode != 0:
            message = " ".join((result.stderr or result.stdout).split())
            raise VersioningError(f"git {args[0]} failed in {self.root}: {message}")
        return result.stdout.strip()

    def git_env(self) -> dict[str, str]:
        """The environment for git: a fallback identity when none is configured."""
        if self._env is None:
            env = dict(os.environ)
            probe = subprocess.run(
                ["git", "var", "GIT_COMMITTER_IDENT"], cwd=self.root, capture_output=True, env=env
            )
            if probe.returncode != 0:
                env.update(DEFAULT_IDENTITY)
            self._env = env
        return self._env

    def head(self) -> str | None:
        """The commit HEAD points at, or None on an unborn branch."""
        result = subprocess.run(
            ["git", "rev-parse", "-q", "--verify", "HEAD^{commit}"],
            cwd=self.root,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip() if result.returncode == 0 else None

    def branch(self) -> str:
        """The checked-out branch ref (``refs/heads/...``).

        Raises:
            InputError: On a detached HEAD (a version must extend a branch).

        """
        result = subprocess.run(
            ["git", "symbolic-ref", "-q", "HEAD"], cwd=self.root, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise InputError(self.root, "HEAD is detached; check out the data branch first")
        return result.stdout.strip()

    def head_blob(self, path: Path) -> bytes | None:
        """The content of `path` in HEAD, or None when HEAD lacks it."""
        head = self.head()
        if head is None:
            return None
        result = subprocess.run(
            ["git", "cat-file", "blob", f"{head}:{self.rel(path)}"],
            cwd=self.root,
            capture_output=True,
        )
        return result.stdout if result.returncode == 0 else None

    def tags(self) -> list[str]:
        """The ``data-v<N>`` tags, in order of N."""
        names = self.git("tag", "--list", f"{TAG_PREFIX}*").split()
        numbered = [(int(n[len(TAG_PREFIX) :]), n) for n in names if n[len(TAG_PREFIX) :].isdigit()]
        return [name for _, name in sorted(numbered)]

    def restore_files(self, paths: Sequence[Path]) -> None:
        """Put tracked files back to their HEAD content (delete those HEAD lacks)."""
        for path in paths:
            blob = self.head_blob(path)
            if blob is None:
                path.unlink(missing_ok=True)
            elif not path.is_file() or path.read_bytes() != blob:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(blob)
        self.sync_index(paths)

    def sync_index(self, paths: Sequence[Path]) -> None:
        """Make the index entries of `paths` match the work tree (add or drop them)."""
        present = [self.rel(p) for p in paths if p.exists()]
        gone = [self.rel(p) for p in paths if not p.exists()]
        if present:
            self.git("add", "--", *present)
        if gone:
            self.git("rm", "--cached", "-q", "--ignore-unmatch", "--", *gone)

    def commit_and_tag(self, paths: Sequence[Path], message: str, tag: str) -> str:
        """Commit `paths` as they are in the work tree and tag the commit, atomically.

        The tree is built in a temporary index (the user's index is left alone until the
        refs have moved); one ``update-ref`` transaction moves the branch and creates the
        annotated tag.

        Returns:
            The new commit.

        Raises:
            VersioningError: When git refuses (e.g. the tag exists); no ref moved then.

        """
        old, branch = self.head(), self.branch()
        with tempfile.TemporaryDirectory(prefix="dsnet-intake-index-") as scratch:
            index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            self.git("read-tree", *([old] if old else ["--empty"]), env=index)
            present = [self.rel(p) for p in paths if p.exists()]
            gone = [self.rel(p) for p in paths if not p.exists()]
            if present:
                self.git("add", "--", *present, env=index)
            if gone:
                self.git("rm", "--cached", "-q", "--ignore-unmatch", "--", *gone, env=index)
            tree = self.git("write-tree", env=index)
        commit = self.git("commit-tree", tree, *(["-p", old] if old else []), "-m", message)
        tagger = self.git("var", "GIT_COMMITTER_IDENT")
        tag_object = self.git(
            "mktag",
            stdin=f"object {commit}\ntype commit\ntag {tag}\ntagger {tagger}\n\n{message}\n",
        )
        move = f"update {branch} {commit} {old}" if old else f"create {branch} {commit}"
        transaction = ["start", move, f"create refs/tags/{tag} {tag_object}", "prepare", "commit"]
        self.git("update-ref", "--stdin", stdin="\n".join(transaction) + "\n")
        self.sync_index(paths)
        return commit

    def move_refs_back(self, old: str | None, new: str, tag: str) -> None:
        """Undo `commit_and_tag`: the branch back to `old`, the tag deleted (one transaction)."""
        branch = self.branch()
        move = f"update {branch} {old} {new}" if old else f"delete {branch} {new}"
        transaction = ["start", move, f"delete refs/tags/{tag}", "prepare", "commit"]
        self.git("update-ref", "--stdin", stdin="\n".join(transaction) + "\n")

    def push_git(self, remote: str) -> None:
        """Push the branch and the data tags to `remote` in one atomic push.

        Raises:
            VersioningError: When the push is refused (e.g. the remote moved on).

        """
        branch = self.branch()
        tags = f"refs/tags/{TAG_PREFIX}*:refs/tags/{TAG_PREFIX}*"
        self.git("push", "--atomic", "--quiet", remote, f"{branch}:{branch}", tags)
