"""The package's layering, enforced: no import cycle, no import from a lower layer to a higher one.

The runtime import graph of ``src/comatch`` is read from the source with :mod:`ast` (nothing is
imported): every ``import`` and ``from ... import`` naming a ``comatch`` module, at module level
or inside a function, except those under ``if TYPE_CHECKING:`` (they never run).
docs/architecture.md draws the same layers and says why ``config`` sits where it does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: tuple[tuple[str, ...], ...] = (
    # bottom: used everywhere, import nothing of the package above them
    ("comatch.errors", "comatch.signals", "comatch.distributed", "comatch.numerics", "comatch.openmp",
     "comatch.config_files"),
    ("comatch.models",),  # networks
    ("comatch.methods", "comatch"),  # what a step computes; ``comatch`` re-exports its loss API
    ("comatch.config",),  # the typed configuration: collects the methods' sections, checks model names
    ("comatch.data",),  # files to batches of views; reads the configuration
    ("comatch.training",),  # the loop and what keeps a run safe
    # what uses a finished run, by concern (each subpackage imports only those listed before it):
    # what every command shares (``comatch.tools`` itself names a new module here until it is placed)
    ("comatch.tools", "comatch.tools.arguments", "comatch.tools.outputs", "comatch.tools.quiet"),
    ("comatch.tools.inference",),  # a trained checkpoint: load, evaluate, predict, export, calibration
    # on the checkpoint: what to label next, what does not belong (trust), and the baselines beside
    # the run; neither imports the other
    ("comatch.tools.trust", "comatch.tools.baseline"),
    ("comatch.tools.report",),  # the report shows the trust figures and the baselines
    ("comatch.tools.commands",),  # the subcommands of all of them
    # the command line and the run's lifecycle
    ("comatch.cli", "comatch.__main__", "comatch.lifecycle"),
)
"""Bottom to top. A module may import modules of its own layer or of a lower one."""

ALLOWED: dict[tuple[str, str], str] = {}
"""Today's known upward imports, each with the change that removes it. A new one fails the
test; an entry whose import is gone fails too, so that the list only shrinks."""


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package under ``src``."""
    modules = {}
    for path in sorted((src / "comatch").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    """Whether ``node`` is ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of a (possibly relative) ``from`` import in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def runtime_imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports at runtime (``from a import b`` counts as
    ``a.b`` when ``b`` is a module, else as ``a``)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names if alias.name.split(".")[0] == "comatch")
            elif isinstance(child, ast.ImportFrom):
                target = _absolute(module, is_package, child.level, child.module)
                if target.split(".")[0] == "comatch":
                    for alias in child.names:
                        full = f"{target}.{alias.name}"
                        found.add(full if full in modules else target)
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    found.discard(module)
    return found


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the package's modules it imports at runtime."""
    modules = module_files(src)
    return {name: runtime_imports(name, path, modules) for name, path in modules.items()}


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest prefix naming ``module`` (a package names its modules)."""
    best, index = -1, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    if index < 0:
        raise KeyError(f"{module} is in no layer; add it to LAYERS")
    return index


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Every import from a lower layer to a higher one."""
    return {(a, b) for a, targets in graph.items() for b in targets if layer_of(a) < layer_of(b)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


# ------------------------------------------------------------------------------ the checks
def test_every_module_is_in_a_layer():
    for module in import_graph():
        layer_of(module)  # raises for a module no layer names


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_new_upward_import():
    new = sorted(upward_imports(import_graph()) - set(ALLOWED))
    assert new == [], "imports from a lower layer to a higher one: " + ", ".join(f"{a} -> {b}" for a, b in new)


def test_allowed_upward_imports_still_exist():
    """An entry of ALLOWED whose import is gone is removed from it: the list only shrinks."""
    gone = sorted(set(ALLOWED) - upward_imports(import_graph()))
    assert gone == [], "remove from ALLOWED: " + ", ".join(f"{a} -> {b}" for a, b in gone)


# ------------------------------------------------------------------ the checker, on known graphs
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "comatch" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_graph_reads_function_level_and_relative_imports_and_skips_type_checking(tmp_path):
    src = _package(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "data/__init__.py": "",
        "data/loaders.py": (
            "from typing import TYPE_CHECKING\n"
            "from .views import thing\n"
            "if TYPE_CHECKING:\n    from comatch.training import trainer\n"
            "def f():\n    import comatch.training.trainer\n"
        ),
        "data/views.py": "from comatch import errors\n",
        "training/__init__.py": "",
        "training/trainer.py": "from comatch.data import loaders\n",
    })
    graph = import_graph(src)
    assert graph["comatch.data.loaders"] == {"comatch.data.views", "comatch.training.trainer"}
    assert graph["comatch.data.views"] == {"comatch.errors"}
    assert graph["comatch.training.trainer"] == {"comatch.data.loaders"}
    assert upward_imports(graph) == {("comatch.data.loaders", "comatch.training.trainer")}
    assert cycles(graph) == [["comatch.data.loaders", "comatch.training.trainer"]]


def test_cycles_finds_a_longer_circle_and_nothing_in_a_tree():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize("module, layer", [
    ("comatch.errors", 0), ("comatch.models.ema", 1), ("comatch.methods.losses", 2), ("comatch", 2),
    ("comatch.config", 3), ("comatch.data.batch_views", 4), ("comatch.training.trainer", 5),
    ("comatch.tools", 6), ("comatch.tools.quiet", 6), ("comatch.tools.inference.checkpoint", 7),
    ("comatch.tools.trust.commands", 8), ("comatch.tools.baseline", 8), ("comatch.tools.report.build", 9),
    ("comatch.tools.commands", 10), ("comatch.cli", 11),
])
def test_layer_of_takes_the_longest_prefix(module, layer):
    assert layer_of(module) == layer
