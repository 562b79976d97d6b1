"""Argument checks shared by the pipeline, the recall backends and the rerankers.

They run before any work so bad input fails fast with a typed error and nothing is half-written.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InvalidDocumentError, InvalidParameterError, InvalidQueryError

# What Chroma can store as a metadata value: these, or a non-empty list of one of them.
METADATA_SCALARS = (str, int, float, bool)


def check_query(query: object) -> str:
    if not isinstance(query, str):
        raise InvalidQueryError(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise InvalidQueryError("query is empty or whitespace; pass the text to search for")
    return query


def check_positive_int(value: object, name: str) -> int:
    """``value`` when it is an integer >= 1.

    Args:
        value: the argument to check.
        name: the parameter's name, which the message starts with (the CLI shows the option instead).

    Returns:
        ``value``.

    Raises:
        InvalidParameterError: not an integer, or below 1 (``parameter`` is ``name``).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterError(f"{name} must be an integer >= 1, got {value!r}", parameter=name)
    if value < 1:
        raise InvalidParameterError(f"{name} must be >= 1, got {value}", parameter=name)
    return value


def check_search_args(query: object, limit: object) -> tuple[str, int]:
    """A stage-1 call: a real query and ``limit >= 1``."""
    return check_query(query), check_positive_int(limit, "limit")


def check_rerank_args(query: object, top_k: object | None) -> tuple[str, int | None]:
    """A stage-2 call: a real query and ``top_k`` either None (keep all) or >= 1."""
    return check_query(query), None if top_k is None else check_positive_int(top_k, "top_k")


def check_limit_top_k(limit: object, top_k: object) -> tuple[int, int]:
    limit = check_positive_int(limit, "limit")
    top_k = check_positive_int(top_k, "top_k")
    if top_k > limit:
        raise InvalidParameterError(
            f"top_k ({top_k}) is larger than limit ({limit}): stage 2 can only keep candidates that "
            f"stage 1 recalled; raise limit (--limit) or lower top_k (--top-k)"
        )
    return limit, top_k


def content_id(text: str) -> str:
    """Stable id for a text without a caller id: the same text always maps to the same id."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def check_documents(
    texts: object,
    metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ids: Sequence[str] | None = None,
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Validate a batch to add; return (texts, metadatas, ids) with content-hash ids filled in."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidDocumentError(
            f"texts must be a list of strings, got {type(texts).__name__}; wrap a single text in a list"
        )
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidDocumentError(
                f"texts[{i}] is {type(text).__name__}, not str; convert documents to text before adding"
            )
        if not text.strip():
            raise InvalidDocumentError(f"texts[{i}] is empty or whitespace; drop it before adding")
    if metadatas is None:
        metas: list[dict[str, Any]] = [{} for _ in texts]
    else:
        if len(metadatas) != len(texts):
            raise InvalidDocumentError(f"got {len(metadatas)} metadatas for {len(texts)} texts; pass one each")
        metas = [check_metadata(m, i) for i, m in enumerate(metadatas)]
    if ids is None:
        out_ids = [content_id(t) for t in texts]
    else:
        if len(ids) != len(texts):
            raise InvalidDocumentError(f"got {len(ids)} ids for {len(texts)} texts; pass one each")
        out_ids = []
        for i, doc_id in enumerate(ids):
            if not isinstance(doc_id, str) or not doc_id:
                raise InvalidDocumentError(f"ids[{i}] must be a non-empty string, got {doc_id!r}")
            out_ids.append(doc_id)
    # Chroma rejects duplicate ids in one upsert; keep the last occurrence, as a re-ingest would.
    seen: dict[str, int] = {}
    for i, doc_id in enumerate(out_ids):
        seen[doc_id] = i
    if len(seen) != len(out_ids):
        keep = sorted(seen.values())
        texts = [texts[i] for i in keep]
        metas = [metas[i] for i in keep]
        out_ids = [out_ids[i] for i in keep]
    return texts, metas, out_ids


def check_metadata(meta: Mapping[str, Any] | None, index: int) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InvalidDocumentError(f"metadatas[{index}] must be a dict, got {type(meta).__name__}")
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not key:
            raise InvalidDocumentError(f"metadatas[{index}] has a non-string or empty key {key!r}")
        if value is None:
            continue  # Chroma cannot store None; an absent key means the same thing
        if not is_storable(value):
            raise InvalidDocumentError(
                f"metadatas[{index}][{key!r}] is {type(value).__name__} ({value!r:.60}); Chroma stores only "
                f"str, int, float, bool and non-empty lists of one of those: convert it (e.g. json.dumps) "
                f"or drop the key"
            )
        out[key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def _scalar(value: object) -> bool:
    return isinstance(value, METADATA_SCALARS) and not (isinstance(value, float) and not math.isfinite(value))


def is_storable(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_scalar(v) for v in value) and len({type(v) for v in value}) == 1
    return _scalar(value)
