"""Which reranker a model name means: one table, read by ``make_reranker``, ``LazyReranker`` and ``twostage serve``.

Each row (a :class:`Route`) says which names it takes (a prefix or an exact list) and which class serves them,
as ``"module:Class"`` under ``twostage_integrations.rerank``, imported only when a reranker is built. This module
imports none of the backends, so every backend may import it (the prefixes and name tests live here) without an
import cycle, and reading the table loads no SDK, torch or weights.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

Provider = Literal["cohere", "voyage"]

COHERE_PREFIX = "cohere:"
VOYAGE_PREFIX = "voyage:"
RERANKERS_PREFIX = "rerankers:"
#: Voyage's own rerank model names (their limits are in ``voyage.MODEL_LIMITS``). Any other ``rerank-...`` is Cohere's.
VOYAGE_MODELS = frozenset({"rerank-2.5", "rerank-2.5-lite", "rerank-2", "rerank-2-lite", "rerank-1", "rerank-lite-1"})
CROSS_ENCODER = "cross-encoder"

_HOSTED_REJECTS = {
    "backend": "a rerank backend ({value!r}) applies to local cross-encoders",
    "max_length": "a token limit (max_length) applies to local cross-encoders only",
}
_WINDOW_REJECTS = {
    "long_docs": "windowed scoring (long_docs) applies to local cross-encoders only",
    "window": "a window (long_docs) applies to local cross-encoders only",
    "stride": "a stride (long_docs) applies to local cross-encoders only",
}
_HOSTED_REJECTS.update(_WINDOW_REJECTS)


@dataclass(frozen=True)
class Route:
    """One row of the table: the model names it takes and the class that reranks with them.

    Attributes:
        kind: ``"rerankers"``, ``"cohere"``, ``"voyage"`` or ``"cross-encoder"``.
        target: ``"module:Class"`` under ``twostage_integrations.rerank``; imported by :meth:`load` only.
        prefix: Names starting with it match (``""``: every name, the last row).
        names: Names equal to one of these match (used instead of ``prefix`` when given).
        hosted: A hosted API; an existing local folder with the same name goes to the cross-encoder instead.
        what: How errors describe such a name, after the quoted name (``"is a hosted Cohere model"``).
        rejects: Options that do not apply to this kind -> why (``{value!r}`` is the value given).
        folder_of: ``"module:function"`` giving ``(folder or hub id, ...)`` inside a name that wraps one.
    """

    kind: str
    target: str
    prefix: str = ""
    names: frozenset[str] = frozenset()
    hosted: bool = False
    what: str = "is a local cross-encoder"
    rejects: dict[str, str] = field(default_factory=dict)
    folder_of: str | None = None

    def matches(self, name: str) -> bool:
        """Whether this row takes a name (paths are not looked at).

        Args:
            name: A resolved model name.

        Returns:
            True when ``name`` is in :attr:`names`, or (without names) starts with :attr:`prefix`.
        """
        return name in self.names if self.names else name.startswith(self.prefix)

    @property
    def class_name(self) -> str:
        """The reranker class's name, without importing it."""
        return self.target.partition(":")[2]

    def load(self) -> Callable[..., Any]:
        """The reranker class, importing its module now (and with it any SDK it needs).

        Returns:
            The class named by :attr:`target`.
        """
        return _attribute(self.target)


# First match wins. The order is the documented one: `rerankers:`; an explicit `cohere:`/`voyage:`; Voyage's own
# names; any other `rerank-...` (Cohere's); then a local folder or hub id.
ROUTES: tuple[Route, ...] = (
    Route(
        "rerankers",
        "rerankers:RerankersReranker",
        prefix=RERANKERS_PREFIX,
        what="runs in the rerankers library",
        rejects={
            "backend": "a rerank backend ({value!r}) applies to our cross-encoders",
            **{k: v.replace("local", "our") for k, v in _WINDOW_REJECTS.items()},
        },
        folder_of="rerankers:parse_rerankers_name",
    ),
    Route(
        "cohere",
        "cohere:CohereReranker",
        prefix=COHERE_PREFIX,
        hosted=True,
        what="is a hosted Cohere model",
        rejects=_HOSTED_REJECTS,
    ),
    Route(
        "voyage",
        "voyage:VoyageReranker",
        prefix=VOYAGE_PREFIX,
        hosted=True,
        what="is a hosted Voyage model",
        rejects=_HOSTED_REJECTS,
    ),
    Route(
        "voyage",
        "voyage:VoyageReranker",
        names=VOYAGE_MODELS,
        hosted=True,
        what="is a hosted Voyage model",
        rejects=_HOSTED_REJECTS,
    ),
    Route(
        "cohere",
        "cohere:CohereReranker",
        prefix="rerank-",
        hosted=True,
        what="is a hosted Cohere model",
        rejects=_HOSTED_REJECTS,
    ),
    Route(CROSS_ENCODER, "cross_encoder:CrossEncoderReranker"),
)


def _attribute(target: str) -> Any:
    module, _, attribute = target.partition(":")
    # By name, so this module imports no backend: they import it (for the prefixes) without a cycle.
    return getattr(importlib.import_module(f"{__package__}.{module}"), attribute)


def _first_match(name: str, *, check_paths: bool) -> Route:
    for route in ROUTES:
        if route.matches(name) and not (check_paths and route.hosted and os.path.exists(name)):
            return route
    return ROUTES[-1]  # not reached: the last row matches every name


def route_for(name: str) -> Route:
    """The row of :data:`ROUTES` for a model name. An existing local folder always wins over a hosted name.

    Args:
        name: A resolved model name (see :func:`~twostage_integrations.models.resolve_rerank_model`).

    Returns:
        The first matching :class:`Route`; the cross-encoder's when no other matches.

    >>> [route_for(n).class_name for n in ("rerank-2.5", "rerank-v3.5", "rerankers:org/m", "org/ce")]
    ['VoyageReranker', 'CohereReranker', 'RerankersReranker', 'CrossEncoderReranker']
    """
    return _first_match(name, check_paths=True)


def hosted_provider(name: str) -> Provider | None:
    """Which hosted API a model name means.

    An explicit ``cohere:``/``voyage:`` prefix wins; then Voyage's own model names (``rerank-2.5``,
    ``rerank-2.5-lite``, ``rerank-2``, ``rerank-2-lite``, ``rerank-1``, ``rerank-lite-1``); then any other
    ``rerank-...`` is Cohere's (``rerank-v3.5``, ``rerank-english-v3.0``...). Paths are not checked here.

    Args:
        name: A model name.

    Returns:
        ``"cohere"``, ``"voyage"``, or ``None`` for a local cross-encoder (or a ``rerankers:`` name).

    >>> [hosted_provider(n) for n in ("rerank-2.5", "voyage:x", "rerank-v3.5", "cohere:rerank-2", "org/ce")]
    ['voyage', 'voyage', 'cohere', 'cohere', None]
    """
    route = _first_match(name, check_paths=False)
    return cast(Provider, route.kind) if route.hosted else None


def is_voyage_model(name: str) -> bool:
    """Whether a name is one of Voyage's.

    Args:
        name: A model name.

    Returns:
        True for Voyage's rerank model names and an explicit ``voyage:<model>``.

    >>> is_voyage_model("rerank-2.5"), is_voyage_model("voyage:rerank-3"), is_voyage_model("rerank-v3.5")
    (True, True, False)
    """
    return name.startswith(VOYAGE_PREFIX) or name in VOYAGE_MODELS


def model_folder(name: str) -> str:
    """The part of a model name that is a folder or hub id.

    Args:
        name: A resolved model name.

    Returns:
        The model inside ``rerankers:<model>[:<type>]``, else the name itself.

    Raises:
        InvalidParameterError: If a ``rerankers:`` name names no model or an unknown type.
    """
    route = route_for(name)
    return name if route.folder_of is None else _attribute(route.folder_of)(name)[0]
