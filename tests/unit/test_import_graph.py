"""The package's import graph, read from source with ``ast``: no cycles between modules, and the evaluation code
imports no framework adapter or server.

Every ``import``/``from ... import`` counts, also those inside functions (they run on first use and close a cycle
then) and those under ``if TYPE_CHECKING:`` (they do not run, but a type-only back edge is still two modules that
each need the other; keeping them out of cycles keeps the layers honest). Strings (``lazy_attributes`` tables,
``importlib.import_module("...")``) are not imports.

How a name resolves:
- ``from .x import y``: ``x.y`` when it is a submodule, else ``x`` (a package's ``__init__``).
- importing ``p.q.m`` from outside package ``p.q`` also runs ``p/__init__`` and ``p/q/__init__`` first, so those are
  edges too; a module never depends on its own ancestors this way (they are always loaded before it), so a
  submodule's ``from . import sibling`` is an edge to the sibling only, not through its package's ``__init__``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "twostage_integrations"
# Modules the evaluation code must not import: it runs without the framework extras and the server.
EVALUATION_FORBIDDEN = (f"{PACKAGE}.langchain", f"{PACKAGE}.llama_index", f"{PACKAGE}.server")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package under ``root``."""
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    """The longest dotted prefix of ``name`` that is one of our modules (None for third-party names)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _base(module: str, node: ast.ImportFrom, modules: dict[str, Path]) -> str:
    """The absolute module a ``from ... import`` reads from."""
    if not node.level:
        return node.module or ""
    package = module if _is_package(module, modules) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def direct_imports(module: str, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for each of our modules that ``module``'s source names in an import."""
    tree = ast.parse(modules[module].read_text(encoding="utf-8"), filename=str(modules[module]))
    for node in ast.walk(tree):  # walks function bodies and `if TYPE_CHECKING:` blocks too
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, node, modules)
            # A name that is a submodule means that submodule; any other name is read from `base` itself.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            target = _known_prefix(name, modules)
            if target is not None and target != module:
                yield target, node.lineno


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}, with the package ``__init__`` files an import
    runs on the way (see the module docstring)."""
    modules = module_files(root)
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for module in modules:
        own = set(_ancestors(module)) | {module}
        for target, line in direct_imports(module, modules):
            for dep in [*_ancestors(target), target]:
                if dep not in own and dep in modules:
                    graph[module].setdefault(dep, line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None. Iterative depth-first search (white/grey/black)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    return "\n".join(
        f"  {a} -> {b}  ({modules[a].relative_to(ROOT)}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)
    )


def evaluation_violations(root: Path = ROOT) -> list[str]:
    """``file:line imports module`` for each import of an adapter or the server by the evaluation package."""
    modules = module_files(root)
    out = []
    for module in sorted(m for m in modules if m == f"{PACKAGE}.evaluation" or m.startswith(f"{PACKAGE}.evaluation.")):
        for target, line in direct_imports(module, modules):
            if any(target == bad or target.startswith(bad + ".") for bad in EVALUATION_FORBIDDEN):
                out.append(f"{modules[module].relative_to(root)}:{line} imports {target}")
    return sorted(set(out))  # one line per statement, however many names it imports


# -- the rules ------------------------------------------------------------------------------------------------
def test_no_import_cycles():
    modules = module_files()
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle (imports inside functions count):\n" + describe(cycle, graph, modules)


def test_evaluation_imports_no_adapter_or_server():
    violations = evaluation_violations()
    assert not violations, (
        "twostage_integrations/evaluation must not import the LangChain/LlamaIndex adapters or the server "
        "(bench code that needs them belongs elsewhere):\n  " + "\n  ".join(violations)
    )


# -- the graph builder itself, on a small made-up package -------------------------------------------------------
def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, source in files.items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return root


def test_function_level_and_type_checking_imports_count(tmp_path):
    root = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "def f():\n    from .b import g\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n",
        },
    )
    graph = import_graph(root)
    assert graph[f"{PACKAGE}.a"] == {f"{PACKAGE}.b": 2}
    assert find_cycle(graph) == [f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.a"]


def test_sibling_import_is_not_a_cycle_through_init(tmp_path):
    # pkg/__init__ re-exports from its submodules; a submodule imports a sibling with `from . import x`
    root = _write(
        tmp_path,
        {
            "__init__.py": "",
            "pkg/__init__.py": "from .x import X\nfrom .y import Y\n",
            "pkg/x.py": "X = 1\n",
            "pkg/y.py": "from . import x\nfrom .x import X as Y\n",
        },
    )
    graph = import_graph(root)
    assert graph[f"{PACKAGE}.pkg.y"] == {f"{PACKAGE}.pkg.x": 1}
    assert find_cycle(graph) is None


def test_name_from_package_init_and_init_run_on_the_way_are_edges(tmp_path):
    # `from ..pkg import Y` reads pkg/__init__ (Y is not a submodule); importing pkg.x from outside runs
    # pkg/__init__, which here imports back the importer: both are real cycles.
    files = {"__init__.py": "", "pkg/__init__.py": "from ..c import C\n", "pkg/x.py": "", "c.py": "C = 1\n"}
    root = _write(tmp_path / "one", {**files, "c.py": "from .pkg.x import X\n"})
    assert find_cycle(import_graph(root)) == [f"{PACKAGE}.c", f"{PACKAGE}.pkg", f"{PACKAGE}.c"]
    root = _write(tmp_path / "two", {**files, "c.py": "import twostage_integrations.pkg\n"})
    assert find_cycle(import_graph(root)) == [f"{PACKAGE}.c", f"{PACKAGE}.pkg", f"{PACKAGE}.c"]


@pytest.mark.parametrize(
    "source, caught",
    [
        ("from ..server import create_app\n", True),
        ("def f():\n    from ..langchain import TwoStageRetriever\n", True),
        ("import twostage_integrations.llama_index as li\n", True),
        ("from .. import server\n", True),
        ("from ..rerank.cascade import Cascade\n", False),
        ("import langchain_core\n", False),  # the third-party library is not our adapter
    ],
)
def test_evaluation_rule(tmp_path, source, caught):
    root = _write(
        tmp_path,
        {
            "__init__.py": "",
            "server.py": "",
            "langchain.py": "",
            "llama_index.py": "",
            "rerank/__init__.py": "",
            "rerank/cascade.py": "",
            "evaluation/__init__.py": "",
            "evaluation/run.py": source,
        },
    )
    assert bool(evaluation_violations(root)) is caught
