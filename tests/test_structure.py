"""The shape of the package: no import cycles between mafl's modules, and the registries are the one list of
names that validation and its messages use."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import compose_cfg
from mafl.config import validate
from mafl.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1] / "mafl"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The mafl modules ``path`` imports, at the top or inside a function (``if TYPE_CHECKING:`` blocks aside)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mafl":
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found & modules


def test_no_import_cycles():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: imports(p, set(paths)) - {m} for m, p in paths.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        return False

    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a)})
    assert cycles == []


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
