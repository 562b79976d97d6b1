"""Long documents scored whole: token windows, their scores aggregated per document, and the winning window as
evidence (``CrossEncoderReranker(long_docs="max" | "top2mean")``, docs/stage2.md "Long documents").

A cross-encoder reads ``max_length`` tokens per (query, passage) pair and cuts the rest. :class:`WindowSplitter`
cuts each passage instead into windows that fit beside the query, using the engine's own tokenizer and its
character offsets, so that every character of the passage is in some window and windows share only
``window - stride`` tokens; every (query, window) pair then runs through the engine's usual length-bucketed
batches, and :func:`aggregate` turns each passage's window scores into one score (``max``: the best window;
``top2mean``: the mean of the best two) plus the best window's character span and score (:class:`Evidence`).

A passage that fits in one window is scored as the whole text, exactly as ``long_docs="first"`` scores it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameterError

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

logger = logging.getLogger(__name__)

#: ``first``: today's behaviour, the pair is cut at ``max_length``; ``max``: the best window's score;
#: ``top2mean``: the mean of the best two windows (one window: its score).
LONG_DOCS = ("first", "max", "top2mean")
#: Default stride as a share of the window: windows overlap by 40%, so a sentence cut by one window's end is
#: whole in the next one.
STRIDE_SHARE = 0.6
EVIDENCE_KEY = "evidence"


@dataclass(frozen=True)
class Evidence:
    """The window of a passage that scored best: ``text[start:end]`` and its score.

    Attributes:
        start: Offset of the window's first character in the passage's text.
        end: Offset just past its last character.
        score: The window's own score (the passage's score under ``long_docs="max"``).
    """

    start: int
    end: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        """``{"start", "end", "score"}``: what ``Hit.metadata["evidence"]`` holds (plain ints and a float)."""
        return {"start": self.start, "end": self.end, "score": self.score}


def check_long_docs(long_docs: object, window: object, stride: object, max_length: int) -> None:
    """Refuse settings no window plan can follow.

    Args:
        long_docs: One of :data:`LONG_DOCS`.
        window: Tokens of passage per window, or None (what fits beside the query).
        stride: Tokens from one window's start to the next, or None (``window * 0.6``).
        max_length: The engine's tokens per pair.

    Raises:
        InvalidParameterError: An unknown ``long_docs``; a window or stride that is not a whole number >= 1; a
            window >= ``max_length`` (no room for the query); a stride above the window (text would be skipped);
            a window or stride with ``long_docs="first"``.
    """
    if long_docs not in LONG_DOCS:
        raise InvalidParameterError(f"long_docs must be one of {', '.join(LONG_DOCS)}, got {long_docs!r}")
    for name, value in (("window", window), ("stride", stride)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidParameterError(f"{name} must be a whole number of tokens >= 1, got {value!r}", parameter=name)
    if long_docs == "first" and (window is not None or stride is not None):
        raise InvalidParameterError("window and stride apply to long_docs='max' or 'top2mean', not 'first'")
    if isinstance(window, int) and window >= max_length:
        raise InvalidParameterError(
            f"window={window} leaves no room for the query in max_length={max_length} tokens; pass a smaller "
            f"window (default: what fits beside the query)",
            parameter="window",
        )
    if isinstance(window, int) and isinstance(stride, int) and stride > window:
        raise InvalidParameterError(
            f"stride={stride} is longer than window={window}: the text between windows would never be scored",
            parameter="stride",
        )


class WindowSplitter:
    """Cuts passages into windows that fit beside a query, from one tokenisation of each passage.

    Args:
        tokenizer: The engine's ``tokenizers.Tokenizer`` (copied: the engine's own keeps its truncation).
        max_length: Tokens per (query, window) pair, special tokens included.
        window: Tokens of passage per window; None: ``max_length`` minus the query and special tokens (at least
            half of what the special tokens leave, so a long query is cut rather than the window).
        stride: Tokens between window starts; None: ``window * 0.6``.

    Raises:
        InvalidParameterError: See :func:`check_long_docs`.
    """

    def __init__(
        self, tokenizer: Tokenizer, max_length: int, *, window: int | None = None, stride: int | None = None
    ) -> None:
        from tokenizers import Tokenizer

        check_long_docs("max", window, stride, max_length)
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        processor = self.tokenizer.post_processor
        self.specials = processor.num_special_tokens_to_add(True) if processor is not None else 0
        self.max_length = max_length
        self.window = window
        self.stride = stride

    def budget(self, query: str) -> tuple[int, int]:
        """``(window, stride)`` in tokens for ``query``.

        Args:
            query: The query the windows go beside.

        Returns:
            What fits beside the query (at most the window given); the stride given (at most the window), else
            60% of the window.
        """
        room = max(self.max_length - self.specials, 1)
        query_tokens = len(self.tokenizer.encode(query, add_special_tokens=False).ids)
        fits = max(room - query_tokens, room // 2, 1)
        window = fits if self.window is None else min(self.window, fits)
        stride = self.stride if self.stride is not None else max(1, int(window * STRIDE_SHARE))
        return window, min(stride, window)

    def split(self, query: str, texts: Sequence[str], *, limit: int | None = None) -> list[list[tuple[int, int]]]:
        """Character spans of each text's windows.

        Args:
            query: The query the windows go beside.
            texts: The passages.
            limit: Read only each text's first ``limit`` tokens (Cohere's ``max_tokens_per_doc``); None: all.

        Returns:
            Per text, ``(start, end)`` spans in order; a text that fits in one window has the one span
            ``(0, len(text))``, and the spans of a text always cover ``0..len(text)`` (or its first ``limit``
            tokens) without gaps.
        """
        window, stride = self.budget(query)
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [_spans(text, enc, window, stride, limit) for text, enc in zip(texts, encodings, strict=True)]


def _word_start(words: list[int | None], i: int) -> int:
    """The first token of the word token ``i`` belongs to (``i`` itself when it starts one)."""
    while i > 0 and words[i] is not None and words[i - 1] == words[i]:
        i -= 1
    return i


def _spans(text: str, enc: Encoding, window: int, stride: int, limit: int | None) -> list[tuple[int, int]]:
    """Token windows of one encoding as character spans; boundaries move back to word starts when they can, so a
    window's text tokenises as it did inside the passage (a word is never split between two windows' edges)."""
    offsets = enc.offsets
    n = len(offsets) if limit is None else min(len(offsets), limit)
    end_char = len(text) if n == len(offsets) else offsets[n - 1][1]
    if n <= window:
        return [(0, end_char)]
    words = list(enc.word_ids)
    token_spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + window, n)
        if end < n:
            snapped = _word_start(words, end)
            end = snapped if snapped > start else end  # a word longer than the window is cut mid-word
        token_spans.append((start, end))
        if end >= n:
            break
        nxt = _word_start(words, start + stride)
        nxt = nxt if nxt > start else start + stride
        start = min(nxt, end)  # never past the previous end: no text is skipped
    spans = [(offsets[s][0], offsets[e - 1][1]) for s, e in token_spans]
    spans[0] = (0, spans[0][1])  # leading whitespace belongs to the first window, trailing to the last
    spans[-1] = (spans[-1][0], end_char)
    return spans


def aggregate(scores: Sequence[float], spans: Sequence[tuple[int, int]], how: str) -> tuple[float, Evidence]:
    """One passage's score from its windows' scores, and the best window as evidence.

    Args:
        scores: One score per window, in window order.
        spans: The windows' character spans.
        how: ``"max"`` or ``"top2mean"`` (the mean of the best two; one window: its score).

    Returns:
        ``(score, evidence)``; ties go to the earliest window.

    >>> aggregate([0.2, 0.9, 0.5], [(0, 10), (6, 16), (12, 20)], "top2mean")
    (0.7, Evidence(start=6, end=16, score=0.9))
    """
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    evidence = Evidence(spans[best][0], spans[best][1], float(scores[best]))
    if how == "top2mean" and len(scores) > 1:
        top = sorted(scores, reverse=True)[:2]
        return float(top[0] + top[1]) / 2, evidence
    return float(scores[best]), evidence


def score_windows(
    splitter: WindowSplitter,
    predict: Callable[[Sequence[tuple[str, str]]], Sequence[float]],
    pairs: Sequence[tuple[str, str]],
    how: str,
    *,
    limit: int | None = None,
) -> list[tuple[float, Evidence]]:
    """Score (query, passage) pairs window by window in one ``predict`` call.

    Args:
        splitter: Cuts the passages.
        predict: Scores (query, text) pairs in one call (the engine's batches), one float per pair.
        pairs: (query, passage) pairs; queries may differ.
        how: ``"max"`` or ``"top2mean"``.
        limit: Tokens of each passage read (None: all).

    Returns:
        Per pair, ``(score, evidence)`` in input order.
    """
    by_query: dict[str, list[int]] = {}
    for i, (query, _) in enumerate(pairs):
        by_query.setdefault(query, []).append(i)
    spans: list[list[tuple[int, int]]] = [[] for _ in pairs]
    for query, idx in by_query.items():
        for i, found in zip(idx, splitter.split(query, [pairs[i][1] for i in idx], limit=limit), strict=True):
            spans[i] = found
    flat = [(q, t[s:e]) for (q, t), found in zip(pairs, spans, strict=True) for s, e in found]
    scores = list(predict(flat)) if flat else []
    out: list[tuple[float, Evidence]] = []
    at = 0
    for found in spans:
        out.append(aggregate(scores[at : at + len(found)], found, how))
        at += len(found)
    if len(flat) > len(pairs):
        logger.debug("scored %d passages as %d windows", len(pairs), len(flat))
    return out


def evidence_context(hits: Sequence[Any], tokenizer: Tokenizer | None = None) -> tuple[list[str], int | None]:
    """Only the evidence windows of reranked hits: a compact context for an LLM prompt.

    Args:
        hits: Hits (best first) whose ``metadata["evidence"]`` was set by a windowed reranker; a hit without
            evidence contributes its whole text.
        tokenizer: Counts the tokens of the windows (e.g. ``reranker.splitter.tokenizer``); None: no count.

    Returns:
        ``(windows, tokens)``: each hit's evidence text in order, and their token count (None without a
        tokenizer).
    """
    windows = []
    for hit in hits:
        span = (hit.metadata or {}).get(EVIDENCE_KEY)
        windows.append(hit.text[span["start"] : span["end"]] if isinstance(span, dict) else hit.text)
    if tokenizer is None:
        return windows, None
    encodings = tokenizer.encode_batch(windows, add_special_tokens=False) if windows else []
    return windows, sum(len(e.ids) for e in encodings)
