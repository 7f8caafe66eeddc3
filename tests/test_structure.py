"""The shape of the package: no import circle between mafl's modules, nor between its packages, counting every
import (at the top, inside a function, under ``if TYPE_CHECKING:``) and every ``"mafl.module:attr"`` string a
registry or a hook imports later; settings below what uses them; the registries the one list of names that
validation and its messages use."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from helpers import compose_cfg
from mafl.errors import ConfigError
from mafl.pipeline import validate

PACKAGE = Path(__file__).resolve().parents[1] / "mafl"
# a string that names a mafl module, as registries and hooks do ("mafl.methods.star:run_star")
NAMED = re.compile(r"^(mafl(?:\.\w+)+)(?::\w+)?$")
# what the typed settings never reach: what runs a method (they import component settings, which may name their
# components: a backend, a launcher)
ORCHESTRATION = ("mafl.methods", "mafl.pipeline", "mafl.session", "mafl.cli", "mafl.reporting", "mafl.summary",
                 "mafl.diagnose", "mafl.serve", "mafl.debate.engine")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The mafl modules ``path`` imports: anywhere in the file (type-only imports too), and by a string that names
    one. ``from mafl.pkg import sub`` imports the module ``mafl.pkg.sub``, not ``mafl.pkg``'s own code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mafl":
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= subs if len(subs) == len(node.names) else subs | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (named := NAMED.match(node.value)):
            found.add(named.group(1))
    return found & modules


def module_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: imports(p, set(paths)) - {m} for m, p in paths.items()}


def package_of(module: str) -> str:
    """``mafl.finetune.launchers.ray`` -> ``mafl.finetune``; a top-level module is its own."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {package_of(m): set() for m in graph}
    for m, targets in graph.items():
        packages[package_of(m)] |= {package_of(t) for t in targets} - {package_of(m)}
    return packages


def reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())
    return seen


def circles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every import ``a -> b`` from which ``a`` is reached again."""
    return sorted((a, b) for a in graph for b in graph[a] if a in reach(graph, b))


def test_no_import_circle_between_modules():
    assert circles(module_graph()) == []


def test_no_import_circle_between_packages():
    assert circles(package_graph(module_graph())) == []


def test_the_settings_import_no_orchestration():
    graph = module_graph()
    reached = reach(graph, "mafl.config")
    assert sorted(m for m in reached if m.startswith(ORCHESTRATION)) == []


@pytest.mark.parametrize("source,edge", [
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mafl.b import B\n", "mafl.b"),
    ("REGISTERED = 'mafl.b:B'\n", "mafl.b"),
    ("def f():\n    import mafl.b\n", "mafl.b"),
    ("from mafl.pkg import sub\n", "mafl.pkg.sub"),
])
def test_every_kind_of_import_is_counted(tmp_path, source, edge):
    path = tmp_path / "a.py"
    path.write_text(source)
    assert imports(path, {"mafl.b", "mafl.pkg", "mafl.pkg.sub"}) == {edge}
    assert circles({"mafl.a": {edge}, edge: {"mafl.a"}}) == sorted([("mafl.a", edge), (edge, "mafl.a")])


@pytest.mark.parametrize("override,key,registry", [
    ("method.name=nope", "method.name", "mafl.methods:METHODS"),
    ("backend.name=nope", "backend.name", "mafl.backends:BACKENDS"),
    ("dataset.task=nope", "dataset.task", "mafl.tasks:TASKS"),
])
def test_an_unknown_name_is_refused_with_the_registry_s_names(override, key, registry):
    from mafl.registry import load

    names = load(registry).names()
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg([override]))
    assert str(err.value) == f"{key}: 'nope' is not one of {', '.join(names)}"


def test_the_run_folder_layout_is_spelt_in_one_module():
    """Only mafl/run_folder.py builds an iteration's folder name (docs and comments aside)."""
    spelt = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.value) for n in ast.walk(tree)
                      if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        if any(isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
               and re.search(r"iter_(\{|\d|$)", n.value) for n in ast.walk(tree)):
            spelt.add(module_name(path))
    assert spelt - {"mafl.run_folder"} == set() and "mafl.run_folder" in spelt


def test_the_docs_speak_of_machines_not_of_the_history_of_their_making():
    """docs/ and the README name a machine by what it is (processor, kernel level, weights hash), never by the work
    session or tracker entry that used it ("stop 30's machine", "issue 20")."""
    history = re.compile(r"\b(stops? \d+|issues? \d+|this session|this round|tracker)\b", re.IGNORECASE)
    repo = PACKAGE.parent
    found = [f"{path.relative_to(repo)}:{n}: {line.strip()[:80]}"
             for path in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]
             for n, line in enumerate(path.read_text().splitlines(), 1) if history.search(line)]
    assert found == []
