"""Library code logs, never prints: only the CLI (twostage_integrations/cli/) writes to stdout/stderr itself,
so an application embedding the package decides what its users see (logging config) and ``--json`` stays JSON."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "twostage_integrations"
LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if (PACKAGE / "cli") not in p.parents)


def _writes_to_std_stream(func: ast.expr) -> bool:
    """``sys.stdout.write`` / ``sys.stderr.writelines`` and the like."""
    return (
        isinstance(func, ast.Attribute)
        and func.attr in ("write", "writelines")
        and isinstance(func.value, ast.Attribute)
        and func.value.attr in ("stdout", "stderr", "__stdout__", "__stderr__")
        and isinstance(func.value.value, ast.Name)
        and func.value.value.id == "sys"
    )


def direct_output(source: str) -> list[int]:
    """Lines that call ``print(...)``, ``pprint(...)`` or ``sys.stdout/stderr.write(...)``. Docstrings (doctest
    examples) are strings, not calls, so they do not count."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id in ("print", "pprint"))
            or _writes_to_std_stream(node.func)
        )
    ]


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ('print("x")\n', [1]),
        ('import sys\nprint("x", file=sys.stderr)\n', [2]),
        ('import sys\nsys.stderr.write("x")\n', [2]),
        ('def f():\n    """Example.\n\n    >>> print(f())\n    """\n    return 1\n', []),
        ('import logging\nlogging.getLogger(__name__).info("x")  # print("no")\n', []),
        ('with open("f", "w") as fh:\n    fh.write("x")\n', []),
    ],
)
def test_output_finder(source, lines):
    assert direct_output(source) == lines


def test_library_modules_log_instead_of_printing():
    assert len(LIBRARY) > 20 and PACKAGE / "pipeline.py" in LIBRARY and PACKAGE / "cli" / "app.py" not in LIBRARY
    offenders = {str(path.relative_to(REPO)): found for path in LIBRARY if (found := direct_output(path.read_text()))}
    assert not offenders, f"use logging.getLogger(__name__) in library code, not print: {offenders}"
