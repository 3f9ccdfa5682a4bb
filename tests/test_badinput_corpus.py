"""Every case of the bad-input corpus (`badinput_corpus.CASES`), one test id each.

Each case must exit with its status (2: refused) and print exactly one line on stderr,
``error: <the file or parameter>: <what is wrong>``, without a traceback; and nothing
that was in the case's folder before the run may be changed or gone (no temporary
left either). Most cases run in-process through `dsnet.cli.main` (the same entry point
as the console script); those whose point is what a real process prints on stderr
(library warnings and logging) run as subprocesses.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from badinput_corpus import CASES, Case, Spec, make_world

from dsnet.cli import QUIET_LOGGERS, main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("corpus-world"))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every regular file under `folder` (FIFOs are never opened)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@contextlib.contextmanager
def restored_logging():
    """Undo what `dsnet.cli.quiet_libraries` does to this (pytest's) process."""
    warnings_logger = logging.getLogger("py.warnings")
    saved = (list(warnings_logger.handlers), warnings_logger.propagate)
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    try:
        yield
    finally:
        logging.captureWarnings(False)
        warnings_logger.handlers[:], warnings_logger.propagate = saved
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def run_in_process(spec: Spec, cwd: Path, monkeypatch, capfd) -> tuple[int, str]:
    monkeypatch.delenv("DSNET_DEBUG", raising=False)
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "ERROR")
    for key, value in spec.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["dsnet", *spec.argv])
    capfd.readouterr()
    with restored_logging(), pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0), capfd.readouterr().err


def run_subprocess(spec: Spec, cwd: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "DSNET_DEBUG"}
    env.update(spec.env)
    done = subprocess.run(
        [sys.executable, "-m", "dsnet", *spec.argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stderr


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_on_one_line_and_loses_nothing(
    case: Case, world, tmp_path, monkeypatch, capfd
):
    spec = case.build(world, tmp_path)
    cwd = spec.cwd or tmp_path
    before = snapshot(tmp_path)

    if spec.subprocess:
        code, err = run_subprocess(spec, cwd)
    else:
        code, err = run_in_process(spec, cwd, monkeypatch, capfd)

    assert code == spec.exit, err
    assert "Traceback" not in err
    lines = err.splitlines()
    if spec.progress:
        assert [line for line in lines if line.startswith("error:")] == lines[-1:], err
        lines = lines[-1:]
    if spec.exit == 0:
        assert lines == []
    else:
        assert len(lines) == 1, err
        assert lines[0].startswith("error: ")
        for text in [*spec.names, spec.fragment]:
            assert text in lines[0], (text, lines[0])
        for text in spec.absent:
            assert text not in err
    after = snapshot(tmp_path)
    assert {name: after.get(name) for name in before} == before  # nothing lost or changed
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary left behind


def test_corpus_covers_every_category():
    counts = collections.Counter(case.category for case in CASES)
    assert set(counts) == {"destroy", "contract", "message", "strict", "accept"}
    assert len({case.id for case in CASES}) == len(CASES)
