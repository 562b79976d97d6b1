"""Training pairs for ``twostage finetune``: which (query, passage) pairs, and which negatives.

Two sources of positives:

- ``qrels``: a BEIR split's judged (query, relevant document) pairs;
- label-free (``title-body``, ``first-sentence``, ``last-sentence``): pseudo-queries cut from each document
  of the corpus alone, the positive being the rest of that same document.

Negatives are mined per query with stage 1 (any :class:`~twostage_integrations.recall.base.Recall`): a
sample of the hits at ranks ``skip+1 .. depth`` (judged positives never used), plus random documents.
Skipping the very top ranks matters: they hold most of the *unjudged* relevant documents, and training
them as negatives teaches the model to push good answers down.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import InvalidDocumentError, InvalidParameterError
from ..evaluation.beir import BeirDataset, _jsonl, passage_text
from ..recall.base import Recall
from ..validation import check_positive_int

PAIR_SOURCES = ("qrels", "title-body", "first-sentence", "last-sentence")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


@dataclass
class TrainQuery:
    """One training query: its text, the ids of its positive documents, and (after mining) its negatives."""

    qid: str
    text: str
    positives: list[str]
    negatives: list[str] = field(default_factory=list)


@dataclass
class Pair:
    """One training example for binary cross-entropy: label 1 = relevant, 0 = not."""

    query: str
    passage: str
    label: int


def load_corpus(folder: str | os.PathLike[str]) -> BeirDataset:
    """Only ``corpus.jsonl`` of a BEIR folder (label-free mode: no queries, no qrels needed).

    The fingerprint is computed as :func:`~twostage_integrations.evaluation.load_beir` does, so mining and
    ``twostage eval`` share one cached Chroma collection."""
    path = Path(folder).expanduser()
    file = path / "corpus.jsonl"
    if not file.is_file():
        raise InvalidDocumentError(f"{file} not found: label-free fine-tuning needs at least a BEIR corpus.jsonl")
    digest = hashlib.sha256()
    corpus: dict[str, str] = {}
    titles: dict[str, str] = {}
    for row in _jsonl(file):  # the same JSONL reader (and errors) as load_beir
        doc_id = str(row["_id"])
        corpus[doc_id] = passage_text(row.get("title") or "", row.get("text") or "")
        titles[doc_id] = row.get("title") or ""
        digest.update(doc_id.encode() + b"\0" + corpus[doc_id].encode() + b"\0")
    if not corpus:
        raise InvalidDocumentError(f"{file} holds no documents")
    return BeirDataset(path.name, path, "corpus", corpus, titles, {}, {}, fingerprint=digest.hexdigest())


def body(dataset: BeirDataset, doc_id: str) -> str:
    """A document's text without its title (``passage_text`` joined them as ``"<title>. <text>"``)."""
    title = dataset.titles.get(doc_id, "").strip()
    passage = dataset.corpus[doc_id]
    return passage[len(title) + 2 :] if title and passage.startswith(f"{title}. ") else passage


def split_first_sentence(text: str) -> tuple[str, str]:
    """``("First sentence.", "the rest")``; the rest is empty when there is one sentence only.

    >>> split_first_sentence("Aspirin thins blood. It lowers stroke risk.")
    ('Aspirin thins blood.', 'It lowers stroke risk.')
    """
    parts = _SENTENCE_END.split(text.strip(), maxsplit=1)
    return (parts[0].strip(), parts[1].strip()) if len(parts) == 2 else (text.strip(), "")


def split_last_sentence(text: str) -> tuple[str, str]:
    """``("the rest", "Last sentence.")``; the rest is empty when there is one sentence only.

    >>> split_last_sentence("Aspirin thins blood. It lowers stroke risk.")
    ('Aspirin thins blood.', 'It lowers stroke risk.')
    """
    parts = _SENTENCE_END.split(text.strip())
    return (" ".join(p.strip() for p in parts[:-1]), parts[-1].strip()) if len(parts) > 1 else ("", text.strip())


class PairBuilder:
    """Turns a dataset into training queries and the passage text each document shows the model.

    ``source``: ``qrels`` (the dataset's judged queries; relevance > 0 is a positive), ``title-body``
    (query = a document's title, passage = its text without the title), ``first-sentence`` (query = the
    first sentence of the text, passage = title + the rest) or ``last-sentence`` (query = the last sentence,
    often an abstract's conclusion, a claim-like statement; passage = title + the rest). In the label-free
    sources every document is shown the same way, positives and negatives alike, so the model cannot learn
    the cut itself.
    """

    def __init__(self, dataset: BeirDataset, source: str = "qrels") -> None:
        if source not in PAIR_SOURCES:
            raise InvalidParameterError(f"pairs must be one of {', '.join(PAIR_SOURCES)}, got {source!r}")
        self.dataset, self.source = dataset, source

    def passage(self, doc_id: str) -> str:
        if self.source == "title-body":
            return body(self.dataset, doc_id)
        if self.source in ("first-sentence", "last-sentence"):
            rest = self._split(body(self.dataset, doc_id))[1]
            if not rest:  # one sentence: never a positive, and as a negative it is shown whole, not empty
                return self.dataset.corpus[doc_id]
            return passage_text(self.dataset.titles.get(doc_id, ""), rest)
        return self.dataset.corpus[doc_id]

    def queries(self, *, max_queries: int | None = None, seed: int = 0) -> list[TrainQuery]:
        """Training queries; ``max_queries`` keeps a seeded random sample (label-free) or the first N (qrels)."""
        if max_queries is not None:
            check_positive_int(max_queries, "max_queries")
        if self.source == "qrels":
            corpus, qrels = self.dataset.corpus, self.dataset.qrels
            out = [
                TrainQuery(qid, text, [d for d, rel in qrels[qid].items() if rel > 0 and d in corpus])
                for qid, text in self.dataset.queries.items()
            ]
            out = [q for q in out if q.positives][:max_queries]
        else:
            out = []
            for doc_id in self.dataset.corpus:
                pseudo = self._pseudo_query(doc_id)
                if pseudo:
                    out.append(TrainQuery(f"doc:{doc_id}", pseudo, [doc_id]))
            if max_queries is not None and max_queries < len(out):
                out = random.Random(seed).sample(out, max_queries)
        if not out:
            what = (
                "judged queries with a relevant document in the corpus"
                if self.source == "qrels"
                else (
                    "documents with both a title and a text"
                    if self.source == "title-body"
                    else "documents with at least two sentences"
                )
            )
            raise InvalidDocumentError(f"{self.dataset.path}: no {what}; nothing to train on")
        return out

    def _pseudo_query(self, doc_id: str) -> str:
        text = body(self.dataset, doc_id)
        if self.source == "title-body":
            title = self.dataset.titles.get(doc_id, "").strip()
            return title if title and len(text.split()) >= 5 else ""
        sentence, rest = self._split(text)
        return sentence if rest and len(sentence.split()) >= 4 else ""

    def _split(self, text: str) -> tuple[str, str]:
        """``(pseudo-query sentence, rest of the text)`` for the sentence sources."""
        if self.source == "last-sentence":
            rest, last = split_last_sentence(text)
            return last, rest
        return split_first_sentence(text)

    def pairs(self, queries: Sequence[TrainQuery]) -> list[Pair]:
        """One labelled pair per (query, positive) and per (query, negative)."""
        out: list[Pair] = []
        for q in queries:
            out += [Pair(q.text, self.passage(d), 1) for d in q.positives]
            out += [Pair(q.text, self.passage(d), 0) for d in q.negatives]
        return out


def mine_negatives(
    queries: Sequence[TrainQuery],
    recall: Recall,
    corpus_ids: Sequence[str],
    *,
    hard: int = 3,
    random_negatives: int = 3,
    depth: int = 40,
    skip: int = 10,
    seed: int = 0,
    exclude: Mapping[str, set[str]] | None = None,
    progress: bool = True,
) -> list[TrainQuery]:
    """Fill each query's ``negatives``: ``hard`` sampled from stage-1 hits at ranks ``skip+1 .. depth``
    and ``random_negatives`` drawn from the whole corpus. A query's positives (and ``exclude[qid]``, e.g.
    documents judged non-relevant-but-related) are never negatives. Seeded: same inputs, same negatives.

    ``recall.search`` is asked for exactly ``depth`` hits, so nothing below ``depth`` is ever used.
    """
    depth = check_positive_int(depth, "mine_depth")
    for value, name in ((hard, "negatives"), (random_negatives, "random_negatives"), (skip, "mine_skip")):
        if not isinstance(value, int) or value < 0:
            raise InvalidParameterError(f"{name} must be an integer >= 0, got {value!r}")
    if hard and skip >= depth:
        raise InvalidParameterError(f"mine_skip ({skip}) must be below mine_depth ({depth}) to leave ranks to mine")
    rng = random.Random(seed)
    ids = list(corpus_ids)
    for q in tqdm(queries, desc="mining negatives", unit="query", disable=not progress):
        banned = set(q.positives) | set((exclude or {}).get(q.qid, ()))
        chosen: list[str] = []
        if hard:
            pool = [h.id for h in recall.search(q.text, depth)[skip:depth] if h.id not in banned]
            chosen = rng.sample(pool, min(hard, len(pool)))
        taken = banned | set(chosen)
        if random_negatives and len(ids) > len(taken):
            extra: list[str] = []
            while len(extra) < random_negatives and len(taken) < len(ids):
                doc_id = ids[rng.randrange(len(ids))]
                if doc_id not in taken:
                    extra.append(doc_id)
                    taken.add(doc_id)
            chosen += extra
        q.negatives = chosen
    return list(queries)
