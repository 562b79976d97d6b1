"""Optional dependencies ("extras"): one check, one error with the exact install line.

Call :func:`require_extra` where an extra is first needed, and as early as possible (before indexing a corpus or
loading a model), so a partial install fails in a second with the line to run instead of after minutes of work.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from .errors import MissingDependencyError

PACKAGE = "twostage-integrations"

# import name -> distribution name, where they differ (for the message only)
_DISTRIBUTIONS = {"Stemmer": "PyStemmer", "ir_measures": "ir-measures"}


def install_line(extra: str) -> str:
    """The command that installs ``extra``.

    >>> install_line("eval")
    'pip install "twostage-integrations[eval]"'
    """
    return f'pip install "{PACKAGE}[{extra}]"'


def require_extra(module: str, extra: str, *, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra that provides it.

    ``feature`` says what needed it (default: the module name), e.g. ``"twostage eval"``.

    >>> require_extra("json", "eval").__name__
    'json'
    >>> require_extra("no_such_module_xyz", "eval", feature="BM25 recall")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    twostage_integrations.errors.MissingDependencyError: BM25 recall needs no_such_module_xyz, ...[eval]"
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # Only a missing *top-level* package is ours to explain; a broken install of it is a different problem.
        if getattr(exc, "name", None) not in (module, module.split(".")[0]):
            raise
        what = _DISTRIBUTIONS.get(module, module)
        raise MissingDependencyError(
            f"{feature or what} needs {what}, which is not installed; install it with: {install_line(extra)}"
        ) from None


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``where[name]`` (relative to ``package``) on first use, so importing
    the package needs no optional dependency (and no torch).

    >>> __getattr__ = lazy_attributes("twostage_integrations", {"VoyageReranker": ".rerank.voyage"})
    >>> __getattr__("VoyageReranker").__name__
    'VoyageReranker'
    """

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def check_eval_extras(recall: object = "dense", *, plot: bool = False) -> None:
    """What ``twostage eval`` / :func:`~twostage_integrations.evaluation.evaluate` need, checked before any
    indexing: ir-measures always, bm25s for BM25/hybrid recall, matplotlib for plots."""
    require_extra("ir_measures", "eval", feature="evaluation (twostage eval)")
    if recall in ("bm25", "hybrid"):
        require_extra("bm25s", "eval", feature=f"{recall} recall")
    if plot:
        require_extra("matplotlib", "eval", feature="--plot")
