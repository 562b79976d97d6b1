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
    """The command that installs an extra.

    Args:
        extra: The extra's name (``"eval"``, ``"cohere"``...).

    Returns:
        The ``pip install`` line.

    >>> install_line("eval")
    'pip install "twostage-integrations[eval]"'
    """
    return f'pip install "{PACKAGE}[{extra}]"'


def require_extra(module: str, extra: str, *, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise an error naming the extra that provides it.

    Args:
        module: The module to import.
        extra: The extra that installs it.
        feature: What needed it, for the message (e.g. ``"twostage eval"``); default the module name.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: If ``module``'s top-level package is not installed. Other import errors (a
            broken install) propagate unchanged.

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
    """A module ``__getattr__`` that imports names on first use, so importing the package needs no optional
    dependency (and no torch).

    Args:
        package: The package relative module paths start from (the caller's ``__name__``).
        where: Name -> module that defines it (relative, e.g. ``".rerank.voyage"``).

    Returns:
        The ``__getattr__`` function; it raises ``AttributeError`` for names not in ``where``.

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
    """Check what ``twostage eval`` / :func:`~twostage_integrations.evaluation.evaluate` need, before any indexing.

    Args:
        recall: The recall kind; ``"bm25"`` and ``"hybrid"`` need bm25s.
        plot: Whether a plot is wanted (needs matplotlib).

    Raises:
        MissingDependencyError: If ir-measures, or a package the arguments need, is not installed.
    """
    require_extra("ir_measures", "eval", feature="evaluation (twostage eval)")
    if recall in ("bm25", "hybrid"):
        require_extra("bm25s", "eval", feature=f"{recall} recall")
    if plot:
        require_extra("matplotlib", "eval", feature="--plot")
