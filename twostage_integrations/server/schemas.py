"""Request, response and error shapes of the rerank routes, as pydantic v2 models: Cohere v2 (``/v2/rerank``),
the ``/v1/rerank`` family (Cohere v1, Jina, Voyage, Infinity) and Hugging Face TEI (``/rerank``).

Validation keeps this server's own messages (``invalid request: documents[1] is int, not a string``): each
field's check raises a :class:`~pydantic_core.PydanticCustomError` of one of three types (``invalid``,
``empty``, ``too_many_documents``) and :func:`request_error` turns the first one into the status and
:class:`RequestError` every route answers, in its API's error shape (:func:`error_body`). Fields are declared
in the order the checks run, so the first error is the one a reader fixing the body top-down meets first.

>>> V2Request.parse({"query": "q", "documents": ["a", "b"], "top_n": 5}).top_n  # capped at the documents
2
>>> V2Request.parse({"query": "q", "documents": []})
Traceback (most recent call last):
...
twostage_integrations.server.schemas.RequestError: invalid request: documents is empty; send at least one document
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError
from typing_extensions import Self

from ..errors import TwoStageError
from ..scores import check_min_score
from ..validation import check_positive_int, check_query

DEFAULT_MAX_DOCUMENTS = 1000  # Cohere's own per-request limit
# Longest query accepted, in characters: about the 2,048 query tokens Cohere's rerank documents as its limit, four
# times a cross-encoder's usual 512-token window, so a real query is never refused while a huge one is.
DEFAULT_MAX_QUERY_CHARS = 8192
V2_ROUTE = "/v2/rerank"  # Cohere v2
TEI_ROUTE = "/rerank"  # Hugging Face text-embeddings-inference
V1_ROUTE = "/v1/rerank"  # Cohere v1, Jina, Voyage, Infinity

# The PydanticCustomError types our field checks raise; ``request_error`` maps them to statuses.
INVALID = "invalid"
EMPTY = "empty"
TOO_MANY_DOCUMENTS = "too_many_documents"


# -- errors -------------------------------------------------------------------------------------------------
class ErrorKind(str, Enum):
    """TEI's ``ErrorType`` variants as its serde writes them; the ``error_type`` of a ``/rerank`` error."""

    UNHEALTHY = "Unhealthy"
    BACKEND = "Backend"
    OVERLOADED = "Overloaded"
    VALIDATION = "Validation"
    TOKENIZER = "Tokenizer"
    EMPTY = "Empty"

    @classmethod
    def for_status(cls, status_code: int) -> ErrorKind:
        """The kind a status implies when nothing more specific is known.

        Args:
            status_code: the HTTP status of the error.

        Returns:
            ``Overloaded`` for 429, ``Unhealthy`` for 503, ``Backend`` for other 5xx, else ``Validation``.
        """
        if status_code == 429:
            return cls.OVERLOADED
        if status_code == 503:
            return cls.UNHEALTHY
        if status_code >= 500:
            return cls.BACKEND
        return cls.VALIDATION


class RequestError(Exception):
    """A request we refuse: ``status_code`` and ``message``, answered in the shape of the route's API (see
    :func:`error_body`). ``retry_after`` (seconds) becomes a ``Retry-After`` header; ``kind`` names the failure
    for APIs that type their errors (TEI's ``error_type``)."""

    def __init__(
        self, status_code: int, message: str, retry_after: int | None = None, kind: ErrorKind | str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after
        self.kind = kind


def invalid(message: str, kind: ErrorKind | None = None) -> RequestError:
    """A 400 ``invalid request: <message>``.

    Args:
        message: what is wrong with the body.
        kind: TEI's error kind when more specific than ``Validation`` (``Empty``).

    Returns:
        The error to raise.
    """
    return RequestError(400, f"invalid request: {message}", kind=kind)


def tei_error_type(status_code: int, kind: ErrorKind | str | None = None) -> str:
    """TEI's ``error_type`` for one of our statuses: one of its ``ErrorType`` variants (see :class:`ErrorKind`).

    Args:
        status_code: the HTTP status of the error.
        kind: a kind the error names itself, which wins over the status.

    Returns:
        The variant's name, e.g. ``"Overloaded"``.
    """
    if kind is not None:
        return ErrorKind(kind).value
    return ErrorKind.for_status(status_code).value


class CohereError(BaseModel):
    """Cohere v2's error body."""

    message: str


class V1Error(BaseModel):
    """``/v1/rerank``'s error body: Cohere v1 reads ``message``, Jina's and Voyage's clients read ``detail``."""

    message: str
    detail: str


class TeiError(BaseModel):
    """TEI's error body."""

    error: str
    error_type: ErrorKind


def error_body(path: str, status_code: int, message: str, kind: ErrorKind | str | None = None) -> dict[str, Any]:
    """The error body each route's clients parse.

    Args:
        path: the request's path: TEI's shape on ``/rerank``, the v1 shape on ``/v1/rerank``, else Cohere v2's.
        status_code: the HTTP status (sets TEI's ``error_type`` unless ``kind`` is given).
        message: what went wrong.
        kind: TEI's error kind, when more specific than the status says.

    Returns:
        ``{"error", "error_type"}``, ``{"message", "detail"}`` or ``{"message"}``.
    """
    if path == TEI_ROUTE:
        body: BaseModel = TeiError(error=message, error_type=ErrorKind(tei_error_type(status_code, kind)))
    elif path == V1_ROUTE:
        body = V1Error(message=message, detail=message)
    else:
        body = CohereError(message=message)
    return body.model_dump(mode="json")


def check_query_length(payload: Any, max_query_chars: int) -> None:
    """Refuse a body whose ``query`` is longer than ``max_query_chars`` characters, before any parsing or scoring
    (every pair repeats the query, so its length multiplies the model's work). Other problems with ``query`` are
    left to the route's schema.

    Args:
        payload: the decoded body.
        max_query_chars: the longest query accepted.

    Raises:
        RequestError: 400 ``invalid request: query is N characters, more than the limit of M``.
    """
    query = payload.get("query") if isinstance(payload, dict) else None
    if isinstance(query, str) and len(query) > max_query_chars:
        raise invalid(f"query is {len(query)} characters, more than the limit of {max_query_chars}; shorten it")


# -- field checks (each raises a PydanticCustomError carrying our message) -------------------------------------
def _refuse(message: str, error_type: str = INVALID) -> PydanticCustomError:
    return PydanticCustomError(error_type, "{reason}", {"reason": message})


def _query(value: Any) -> str:
    if value is None:
        raise _refuse("query is required")
    try:
        return check_query(value)
    except TwoStageError as exc:
        raise _refuse(str(exc)) from None


def _documents(value: Any, info: ValidationInfo, *, text_objects: bool = False) -> list[str]:
    """A non-empty list of at most ``max_documents`` (from the validation context) strings; with
    ``text_objects``, ``{"text": ...}`` objects (Jina, Cohere v1) count as their text."""
    key = info.field_name
    if not isinstance(value, list):
        raise _refuse(f"{key} must be a list of strings")
    if not value:
        raise _refuse(f"{key} is empty; send at least one document", EMPTY)
    max_documents = (info.context or {}).get("max_documents", DEFAULT_MAX_DOCUMENTS)
    if len(value) > max_documents:
        raise _refuse(
            f"too many documents: {len(value)}, more than the limit of {max_documents}; split them", TOO_MANY_DOCUMENTS
        )
    texts = []
    for i, doc in enumerate(value):
        if text_objects and isinstance(doc, dict) and isinstance(doc.get("text"), str):
            doc = doc["text"]
        if not isinstance(doc, str):
            wanted = 'a string or {"text": string}' if text_objects else "a string"
            raise _refuse(f"{key}[{i}] is {type(doc).__name__}, not {wanted}")
        texts.append(doc)
    return texts


def _text_documents(value: Any, info: ValidationInfo) -> list[str]:
    return _documents(value, info, text_objects=True)


def _flag(value: Any, info: ValidationInfo) -> bool:
    """An optional boolean, false when null; never coerced from ``"yes"`` or ``1``."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _refuse(f"{info.field_name} must be true or false")
    return value


def _count(value: Any, info: ValidationInfo) -> int | None:
    """An optional positive count of results (capped at the number of documents once all fields are valid)."""
    if value is None:
        return None
    try:
        return check_positive_int(value, info.field_name or "count")
    except TwoStageError as exc:
        raise _refuse(str(exc)) from None


def _min_score(value: Any, info: ValidationInfo) -> float | None:
    """Our extension: drop results scored below it (a finite number; its range is checked against the served
    ``score_kind`` by the route)."""
    try:
        return check_min_score(value, name=info.field_name or "min_score")
    except TwoStageError as exc:
        raise _refuse(str(exc)) from None


def _direction(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in ("left", "right"):
        raise _refuse(f'truncation_direction must be "left" or "right", got {value!r}')
    if value.lower() == "left":
        raise _refuse('truncation_direction "left" is not supported: the model truncates from the right')
    return value


def _agreeing_top_k(value: Any, info: ValidationInfo) -> int | None:
    """Voyage's ``top_k``; when ``top_n`` is sent too, both must ask for the same number of results."""
    top_k, top_n, documents = _count(value, info), info.data.get("top_n"), info.data.get("documents")
    if top_n is None or top_k is None or documents is None:
        return top_k
    if _cap(top_n, len(documents)) != _cap(top_k, len(documents)):
        raise _refuse(f"top_n ({top_n}) and top_k ({top_k}) disagree; send one of them")
    return top_k


def _required() -> Any:
    """A field whose check also runs when it is absent: absent and null are refused alike."""
    return Field(default=None, validate_default=True)


def _cap(count: int | None, n_documents: int) -> int | None:
    return None if count is None else min(count, n_documents)


Query = Annotated[str, BeforeValidator(_query)]
Documents = Annotated[list[str], BeforeValidator(_documents)]
TextDocuments = Annotated[list[str], BeforeValidator(_text_documents)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Direction = Annotated[str | None, BeforeValidator(_direction)]
AgreeingTopK = Annotated[int | None, BeforeValidator(_agreeing_top_k)]
Count = Annotated[int | None, BeforeValidator(_count)]
# Not in Cohere's, TEI's or Voyage's schema: clients that do not send it get every top_n result, as before.
MinScore = Annotated[float | None, BeforeValidator(_min_score)]


def request_error(exc: ValidationError, documents_key: str = "documents") -> RequestError:
    """The error a route answers for a body its model refused: the first failed check, in field order.

    Args:
        exc: pydantic's error for the body.
        documents_key: the field holding the documents (``texts`` for TEI), named when the body is no object.

    Returns:
        413 for too many documents; 400 ``invalid request: ...`` otherwise (TEI kind ``Empty`` for an empty list).
    """
    first = exc.errors(include_url=False)[0]
    reason = str((first.get("ctx") or {}).get("reason", first["msg"]))
    if first["type"] == TOO_MANY_DOCUMENTS:
        return RequestError(413, reason)
    if first["type"] == EMPTY:
        return invalid(reason, kind=ErrorKind.EMPTY)
    if first["type"] == INVALID:
        return invalid(reason)
    if first["type"] == "model_type":  # a list, a string...: not an object at all
        return invalid(f"the body must be a JSON object with query and {documents_key}")
    where = ".".join(str(part) for part in first["loc"])  # a check of pydantic's own: name the field
    return invalid(f"{where}: {reason}" if where else reason)


# -- requests ---------------------------------------------------------------------------------------------
class _Request(BaseModel):
    """Shared parsing: unknown fields (``model``, ``rank_fields``...) are ignored, errors become ours."""

    model_config = ConfigDict(extra="ignore")
    documents_key: ClassVar[str] = "documents"

    @classmethod
    def parse(cls, payload: Any, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> Self:
        """Validate a decoded JSON body.

        Args:
            payload: the decoded body.
            max_documents: most documents accepted (413 above).

        Returns:
            The request model.

        Raises:
            RequestError: 400 for a bad body (``Empty`` kind for an empty list), 413 for too many documents.
        """
        try:
            return cls.model_validate(payload, context={"max_documents": max_documents})
        except ValidationError as exc:
            raise request_error(exc, cls.documents_key) from None


class V2Request(_Request):
    """Cohere v2 ``/v2/rerank``. ``max_tokens_per_doc`` does what Cohere does with it on a local cross-encoder:
    each document's first ``max_tokens_per_doc`` tokens are scored in windows that fit the model, the best window
    wins, and results carry ``evidence``; a reranker that cannot window (a hosted one) says so in ``warnings``.
    Our extension ``min_score`` drops results scored below it (fewer than ``top_n``, or none)."""

    query: Query = _required()
    documents: Documents = _required()
    top_n: Count = None
    min_score: MinScore = None
    max_tokens_per_doc: Count = None
    return_documents: Flag = False

    @model_validator(mode="after")
    def _cap_top_n(self) -> Self:
        self.top_n = _cap(self.top_n, len(self.documents))
        return self

    @property
    def warnings(self) -> list[str]:
        """Cohere's ``meta.warnings`` from a reranker that cannot window (see :meth:`warnings_for`)."""
        return self.warnings_for(False)

    def warnings_for(self, windows: bool) -> list[str]:
        """Cohere's ``meta.warnings``: what the request asked for that the server does not do.

        Args:
            windows: Whether the served reranker scores windows (then ``max_tokens_per_doc`` is applied).

        Returns:
            The warnings (none when ``max_tokens_per_doc`` is absent or applied).
        """
        if self.max_tokens_per_doc is None or windows:
            return []
        return ["max_tokens_per_doc is not applied: the model truncates at its own max_length"]


class TeiRequest(_Request):
    """TEI ``/rerank``. ``truncate: true`` cuts each pair at the model's max_length from the right. With
    ``truncate: false`` (TEI's default, where TEI refuses over-long inputs unless started with
    ``--auto-truncate``), a server run with ``--long-docs max|top2mean`` scores long texts whole in windows and
    returns ``evidence``; a ``--long-docs first`` server cuts them as ``--auto-truncate`` does.
    ``truncation_direction: "left"`` is refused rather than ignored."""

    documents_key: ClassVar[str] = "texts"

    query: Query = _required()
    texts: Documents = _required()
    truncate: Flag = False
    truncation_direction: Direction = None
    raw_scores: Flag = False
    return_text: Flag = False


class V1Request(_Request):
    """``/v1/rerank`` as Cohere v1, Jina, Voyage and Infinity share it: documents as strings or
    ``{"text": ...}``, ``top_n`` or Voyage's ``top_k`` (both: they must agree), Voyage's ``truncation`` and
    Infinity's ``raw_scores``; ``model`` is not checked. Our extension ``min_score`` drops results whose served
    score (before any ``raw_scores`` inversion) is below it."""

    query: Query = _required()
    documents: TextDocuments = _required()
    top_n: Count = None
    min_score: MinScore = None
    top_k: AgreeingTopK = None
    truncation: Flag = False
    return_documents: Flag = False
    raw_scores: Flag = False

    @model_validator(mode="after")
    def _cap_counts(self) -> Self:
        self.top_n, self.top_k = _cap(self.top_n, len(self.documents)), _cap(self.top_k, len(self.documents))
        return self

    @property
    def top(self) -> int | None:
        """How many results to return: ``top_n`` or ``top_k`` (``None``: all)."""
        return self.top_n if self.top_n is not None else self.top_k

    @property
    def infinity(self) -> bool:
        """The body has ``raw_scores``, a field only Infinity's schema has and its client always sends: its
        results then carry ``document`` as a string."""
        return "raw_scores" in self.model_fields_set


def parse_rerank_request(payload: Any, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> dict[str, Any]:
    """Validate a decoded ``/v2/rerank`` body with :class:`V2Request`.

    Args:
        payload: the decoded body.
        max_documents: most documents accepted (413 above).

    Returns:
        query, documents, top_n (capped at the documents), return_documents, warnings.

    Raises:
        RequestError: as :meth:`V2Request.parse`.

    >>> parse_rerank_request({"model": "m", "query": "q", "documents": ["a", "b"], "top_n": 1})["top_n"]
    1
    """
    req = V2Request.parse(payload, max_documents)
    return {
        "query": req.query,
        "documents": req.documents,
        "top_n": req.top_n,
        "min_score": req.min_score,
        "return_documents": req.return_documents,
        "warnings": req.warnings,
    }


def parse_tei_request(payload: Any, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> dict[str, Any]:
    """Validate a decoded TEI ``/rerank`` body with :class:`TeiRequest`.

    Args:
        payload: the decoded body (``query``, ``texts``, ``raw_scores``, ``return_text``, ``truncate``,
            ``truncation_direction``).
        max_documents: most texts accepted (413 above).

    Returns:
        query, documents (the texts), raw_scores, return_text.

    Raises:
        RequestError: as :meth:`TeiRequest.parse`.

    >>> parse_tei_request({"query": "q", "texts": ["a"], "raw_scores": True})["raw_scores"]
    True
    """
    req = TeiRequest.parse(payload, max_documents)
    return {"query": req.query, "documents": req.texts, "raw_scores": req.raw_scores, "return_text": req.return_text}


def parse_v1_request(payload: Any, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> dict[str, Any]:
    """Validate a decoded ``/v1/rerank`` body with :class:`V1Request`.

    Args:
        payload: the decoded body in the shape Cohere v1, Jina, Voyage and Infinity share.
        max_documents: most documents accepted (413 above).

    Returns:
        query, documents, top_n (``top_n`` or ``top_k``, capped), return_documents, raw_scores and
        ``infinity`` (see :attr:`V1Request.infinity`).

    Raises:
        RequestError: as :meth:`V1Request.parse`.

    >>> parse_v1_request({"query": "q", "documents": [{"text": "a"}, "b"], "top_k": 1})["top_n"]
    1
    """
    req = V1Request.parse(payload, max_documents)
    return {
        "query": req.query,
        "documents": req.documents,
        "top_n": req.top,
        "return_documents": req.return_documents,
        "raw_scores": req.raw_scores,
        "infinity": req.infinity,
    }


# -- responses --------------------------------------------------------------------------------------------
# Optional fields are None when absent; routes serialise with exclude_none, so absent keys stay absent.
class DocumentText(BaseModel):
    """A document as Cohere and Jina return it."""

    text: str


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int


class Meta(BaseModel):
    """Cohere's ``meta``: billed in search units of 100 documents, with the request's warnings."""

    api_version: ApiVersion
    billed_units: BilledUnits
    warnings: list[str] | None = None


class EvidenceSpan(BaseModel):
    """An extension: the document's best-scoring window, character offsets into the document and its score
    (present when the document was scored in windows, docs/stage2.md "Long documents"; clients ignore it)."""

    start: int
    end: int
    score: float


class V2Result(BaseModel):
    index: int
    relevance_score: float
    document: DocumentText | None = None
    evidence: EvidenceSpan | None = None


class V2Response(BaseModel):
    """Cohere v2's answer: results best first."""

    id: str
    results: list[V2Result]
    meta: Meta


class TeiRank(BaseModel):
    """One entry of TEI's answer, a bare list best first."""

    index: int
    score: float
    text: str | None = None
    evidence: EvidenceSpan | None = None


class V1Result(BaseModel):
    """``results[]``: ``document`` is ``{"text"}`` (Cohere v1, Jina) or the string (Infinity)."""

    index: int
    relevance_score: float
    document: str | DocumentText | None = None


class V1Data(BaseModel):
    """Voyage's ``data[]``: ``document`` is the string."""

    index: int
    relevance_score: float
    document: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class V1Response(BaseModel):
    """One answer every ``/v1/rerank`` client parses: ``results`` and ``data`` hold the same ranking."""

    id: str
    model: str
    results: list[V1Result]
    data: list[V1Data]
    usage: Usage
    meta: Meta
