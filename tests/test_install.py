"""The install story: README commands, the committed locks, CI, and a self-contained repo.

A fresh machine installs only through `requirements/*.lock`; these tests keep the locks in
step with `pyproject.toml`, keep `.ci/run` running the README's test command, and keep every
document the repository cites inside the repository.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCKS = REPO / "requirements"


def _readme_commands() -> list[str]:
    """The README's numbered commands (the lines after `# 1.` and `# 2.`)."""
    text = (REPO / "README.md").read_text()
    return re.findall(r"^# \d\. .*\n(.+)$", text, flags=re.MULTILINE)


def _lock(name: str) -> dict[str, Version]:
    pins = {}
    for line in (LOCKS / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{name}: {line} is not an exact pin"
            pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pins


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """pyproject's requirements for `extras`, with self-references expanded."""
    project = _project()
    found = [Requirement(r) for r in project["dependencies"]]
    pending = list(extras)
    while pending:
        for text in project["optional-dependencies"][pending.pop()]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                pending += sorted(requirement.extras)
            else:
                found.append(requirement)
    return found


def test_readme_has_two_commands_that_install_through_the_locks():
    main, tests = _readme_commands()
    assert main == "pip install --no-compile -r requirements/main.lock -e . && dvc repro"
    assert tests == "pip install --no-compile -r requirements/test.lock -e . && python -m pytest"


def test_ci_builds_a_fresh_venv_and_runs_the_readmes_test_command():
    script = (REPO / ".ci" / "run").read_text()
    _, tests = _readme_commands()
    install, run = tests.split(" && ")
    lines = [line.strip() for line in script.splitlines()]
    assert any(line.startswith(install) for line in lines), "install half differs from README"
    assert run in lines, "test half differs from README"
    assert "-m venv" in script and "mktemp -d" in script
    assert lines.index(next(x for x in lines if x.startswith(install))) < lines.index(run)


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("main.lock", ()), ("pipeline.lock", ("pipeline",)), ("test.lock", ("test",))],
)
def test_each_lock_pins_a_version_that_pyproject_allows(lock, extras):
    pins = _lock(lock)
    for requirement in _requirements(extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock}: {name} is required by pyproject.toml but not locked"
        assert pins[name] in requirement.specifier, (
            f"{lock}: {name}=={pins[name]} is outside pyproject's {requirement.specifier}; "
            "run bash requirements/lock.sh"
        )


def test_locks_agree_where_they_overlap():
    main, pipeline, tests = _lock("main.lock"), _lock("pipeline.lock"), _lock("test.lock")
    for name, version in main.items():
        assert pipeline[name] == version and tests[name] == version, name
    assert set(pipeline) <= set(tests)


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()
    suffixes = {".md", ".py", ".yaml", ".yml", ".toml", ".sh", ".txt", ""}
    return [REPO / p for p in listed if Path(p).suffix in suffixes and (REPO / p).is_file()]


# A citation of a document: a Markdown link to a .md file, a path through docs/, or (outside
# tests/, whose fixtures create such files) an upper-case document name like README.md.
# Files a program writes (report.md, ablation.md) are not citations.
MD_REFERENCE = re.compile(
    r"\]\(((?:\.\./|\./)?[\w./-]+\.md)(?:#[\w-]*)?\)"
    r"|(?<![\w/.-])((?:\.\./)*docs/[\w./-]+\.md)\b"
    r"|(?<![\w/.-])((?:\.\./)*[A-Z][A-Z_-]+\.md)\b"
)


def test_every_cited_document_is_in_the_repository():
    missing = []
    for path in _tracked_text_files():
        text = path.read_text(errors="replace")
        in_tests = path.is_relative_to(REPO / "tests")
        for match in MD_REFERENCE.findall(text):
            if in_tests and match[2]:
                continue
            cited = next(g for g in match if g)
            candidates = [path.parent / cited, REPO / cited, REPO / "docs" / cited]
            inside = [c.resolve() for c in candidates if c.resolve().is_relative_to(REPO)]
            if not any(c.is_file() for c in inside):
                missing.append(f"{path.relative_to(REPO)}: {cited}")
    assert not missing, "documents cited but not in the repository:\n" + "\n".join(missing)
