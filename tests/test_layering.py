"""The package layering of `dsnet` (docs/architecture.md), checked on the source with `ast`.

Each package's ``__init__`` docstring states what lives there and, on a line
``May import: dsnet.a, dsnet.b``, which sibling packages its modules may import. This test
builds the import graph of every module under ``dsnet/`` and fails on:

- an import cycle between dsnet modules (any scope, except ``if TYPE_CHECKING:`` blocks);
- an import of a sibling package the importing package's docstring does not allow;
- a function-local import in a library module (outside ``dsnet/cli``) without a
  ``# lazy: <reason>`` comment on its line (lazy imports hide the dependency graph);
- a module longer than `MAX_LINES` lines.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dsnet"
MAX_LINES = 400
LAZY_ALLOWED = ("dsnet.cli",)  # the CLI imports heavy libraries on use: fast `dsnet --help`
ALWAYS_ALLOWED = {"dsnet"}  # `from dsnet import __version__`
MAY_IMPORT = re.compile(r"^May import:(.*(?:\n(?![ \t]*\n).+)*)", re.MULTILINE)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the dsnet module (or package) imported
    line: int
    local: bool  # inside a function
    text: str  # the source line


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str:
    """The dsnet module `name` names (``from a.b import c``: a.b.c if it is a module)."""
    return name if name in MODULES else name.rpartition(".")[0]


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, source: str | None = None) -> list[Import]:
    """The dsnet imports of `module` (its file, or `source`), outside TYPE_CHECKING blocks."""
    source = MODULES[module].read_text() if source is None else source
    lines = source.splitlines()
    found: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            inner = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [resolve(f"{child.module}.{a.name}") for a in child.names]
            for name in names:
                if name == "dsnet" or name.startswith("dsnet."):
                    found.append(Import(module, name, child.lineno, local, lines[child.lineno - 1]))
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


def local_imports(module: str, source: str | None = None) -> list[tuple[int, str]]:
    """Every function-local import statement of `module` (any library): (line, text)."""
    source = MODULES[module].read_text() if source is None else source
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    out.append((inner.lineno, lines[inner.lineno - 1].strip()))
    return sorted(set(out))


GRAPH = {m: imports_of(m) for m in MODULES}


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def allowed_imports(package: str) -> set[str] | None:
    init = MODULES.get(package)
    if init is None or init.name != "__init__.py":
        return None
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    match = MAY_IMPORT.search(doc)
    if match is None:
        return None
    return set(re.findall(r"dsnet(?:\.\w+)?", match.group(1)))


PACKAGES = sorted({package_of(m) for m in MODULES if m.count(".") >= 1 and m in MODULES})
PACKAGES = [p for p in PACKAGES if MODULES[p].name == "__init__.py"]


def module_edges() -> dict[str, list[str]]:
    return {m: sorted({i.target for i in GRAPH[m] if i.target in MODULES}) for m in MODULES}


def find_cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a self-import (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                cycles.append(sorted(component))

    for v in edges:
        if v not in index:
            connect(v)
    return cycles


def test_no_import_cycles_inside_dsnet():
    assert find_cycles(module_edges()) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_package_docstring_states_what_it_may_import(package):
    assert allowed_imports(package) is not None, f"{package}/__init__.py: no 'May import:' line"


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_the_layers_their_docstring_allows(package):
    allowed = (allowed_imports(package) or set()) | ALWAYS_ALLOWED | {package}
    wrong = [
        f"{MODULES[i.module].relative_to(ROOT)}:{i.line} imports {i.target}"
        for m in MODULES
        if package_of(m) == package
        for i in GRAPH[m]
        if package_of(i.target) not in allowed
    ]
    assert wrong == []


def test_library_code_imports_at_the_top_or_says_why():
    unexplained = [
        f"{MODULES[m].relative_to(ROOT)}:{line}: {text}"
        for m in MODULES
        if not m.startswith(LAZY_ALLOWED)
        for line, text in local_imports(m)
        if "# lazy:" not in MODULES[m].read_text().splitlines()[line - 1]
    ]
    assert unexplained == []


def test_cli_lazy_imports_say_why():
    unexplained = [
        f"{MODULES[m].relative_to(ROOT)}:{line}: {text}"
        for m in MODULES
        if m.startswith(LAZY_ALLOWED)
        for line, text in local_imports(m)
        if "# lazy:" not in MODULES[m].read_text().splitlines()[line - 1]
    ]
    assert unexplained == []


def test_no_module_is_longer_than_the_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_checks_find_a_planted_cycle_lazy_import_and_layer_list():
    """The checks are real: they find what they are meant to find."""
    assert find_cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert find_cycles({"a": ["a"]}) == [["a"]]
    assert find_cycles({"a": ["b"], "b": []}) == []
    source = "import os\nimport dsnet.io\n\n\ndef f():\n    from dsnet.data import split\n"
    found = imports_of("dsnet.cli", source)
    assert [(i.target, i.local) for i in found] == [("dsnet.io", False), ("dsnet.data.split", True)]
    assert local_imports("dsnet.cli", source) == [(6, "from dsnet.data import split")]
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import dsnet.data\n"
    assert imports_of("dsnet.cli", typed) == []
    assert allowed_imports("dsnet.core") == set()
    assert allowed_imports("dsnet.data") == {"dsnet.core", "dsnet.io"}
