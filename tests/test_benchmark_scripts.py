"""The scripts under benchmarks/ import what exists: every name they take from the package (at
module level or inside a function) and from a sibling script. A renamed function otherwise
breaks a benchmark only when someone runs it, perhaps an hour into a measurement."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def missing_imports(source: str, siblings: dict[str, set[str]]) -> list[str]:
    """``module.name`` for each ``from module import name`` of ``source`` that does not resolve
    (``comatch`` modules are imported; a sibling script's names are read from its source)."""
    missing = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        names = [alias.name for alias in node.names if alias.name != "*"]
        if node.module.split(".")[0] == "comatch":
            try:
                module = importlib.import_module(node.module)
            except ImportError:
                missing.append(node.module)
                continue
            for name in names:
                if not hasattr(module, name):
                    try:
                        importlib.import_module(f"{node.module}.{name}")
                    except ImportError:
                        missing.append(f"{node.module}.{name}")
        elif node.module in siblings:
            missing += [f"{node.module}.{name}" for name in names if name not in siblings[node.module]]
    return missing


def defined_names(path: Path) -> set[str]:
    """The top-level names a script defines or imports."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


SIBLINGS = {path.stem: defined_names(path) for path in SCRIPTS}


def test_the_check_finds_a_renamed_function():
    source = "def f():\n    from comatch.tools.trust.pool import _run_data\n    from own_folder import nothing_here\n"
    assert missing_imports(source, SIBLINGS) == ["comatch.tools.trust.pool._run_data", "own_folder.nothing_here"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_a_benchmark_imports_only_what_exists(script):
    assert missing_imports(script.read_text(), SIBLINGS) == []
