"""Atomic writes: umask-honouring modes, no file/folder swaps, stale temporaries cleaned."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dsnet.core.errors import InputError
from dsnet.core.fsutil import (
    atomic_dir,
    atomic_path,
    atomic_write_text,
    check_replaceable,
    clean_stale_temporaries,
)


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_outputs_get_the_modes_of_the_umask(tmp_path, umask_027):
    text = atomic_write_text(tmp_path / "metrics.json", "{}")
    with atomic_path(tmp_path / "model.pt") as tmp:
        tmp.write_bytes(b"weights")
    with atomic_dir(tmp_path / "data") as folder:
        (folder / "x").write_text("1")
    assert (text.stat().st_mode & 0o777) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600
    assert ((tmp_path / "model.pt").stat().st_mode & 0o777) == 0o640
    assert ((tmp_path / "data").stat().st_mode & 0o777) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "metrics.json", "model.pt"]


def test_a_file_never_becomes_a_folder_nor_a_folder_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.json").write_text("{}")
    with pytest.raises(InputError, match="is a file"), atomic_dir(tmp_path / "notes.txt"):
        pass
    with pytest.raises(InputError, match="is a folder"):
        atomic_write_text(tmp_path / "results", "{}")
    with pytest.raises(InputError, match="is a folder"), atomic_path(tmp_path / "results"):
        pass
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "results" / "a.json").read_text() == "{}"


def test_check_replaceable_refuses_unrelated_folders_and_the_current_one(tmp_path, monkeypatch):
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "ch1.tex").write_text("precious")
    with pytest.raises(InputError, match="not an earlier dsnet synth output"):
        check_replaceable(tmp_path / "thesis", False, "dsnet synth")
    check_replaceable(tmp_path / "thesis", True, "dsnet synth")
    check_replaceable(tmp_path / "new", False, "dsnet synth")
    monkeypatch.chdir(tmp_path / "thesis")
    for path in (".", "..", str(tmp_path / "thesis")):
        with pytest.raises(InputError, match="current folder"):
            check_replaceable(path, True, "dsnet synth")


def test_temporaries_of_a_killed_writer_are_cleaned_by_the_next_write(tmp_path):
    killer = (
        "import os, sys\n"
        "from dsnet.core.fsutil import atomic_dir, atomic_path\n"
        "with atomic_path(sys.argv[1] + '/model.pt') as tmp:\n"
        "    tmp.write_bytes(b'partial')\n"
        "    with atomic_dir(sys.argv[1] + '/data') as folder:\n"
        "        (folder / 'half.dcm').write_bytes(b'x')\n"
        "        os._exit(9)\n"  # killed mid-write: no cleanup runs
    )
    done = subprocess.run([sys.executable, "-c", killer, str(tmp_path)], env=os.environ)
    assert done.returncode == 9
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(name.endswith(".tmp") for name in left)
    (tmp_path / "unrelated.tmp").write_text("not ours")
    with atomic_path(tmp_path / "model.pt") as tmp:
        tmp.write_bytes(b"weights")
        assert len(list(tmp_path.glob(".model.pt.*"))) == 1  # only this write's temporary
    with atomic_dir(tmp_path / "data") as folder:
        (folder / "a.dcm").write_bytes(b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model.pt", "unrelated.tmp"]
    assert clean_stale_temporaries(tmp_path / "model.pt") == []
