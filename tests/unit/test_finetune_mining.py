"""Negative-mining and pair-building rules of ``twostage finetune`` (no model weights: a fake recall)."""

from __future__ import annotations

from pathlib import Path

import pytest

from twostage_integrations.errors import InvalidDocumentError, InvalidParameterError
from twostage_integrations.evaluation.beir import BeirDataset, passage_text
from twostage_integrations.finetune import (
    PairBuilder,
    TrainQuery,
    load_corpus,
    mine_negatives,
    split_first_sentence,
    split_last_sentence,
)
from twostage_integrations.hit import Hit


class FakeRecall:
    """Returns the corpus in a fixed order for every query and records each ``limit`` asked for."""

    def __init__(self, order: list[str]) -> None:
        self.order = order
        self.limits: list[int] = []

    def search(self, query, limit=20, *, where=None, where_document=None):
        self.limits.append(limit)
        return [Hit(id=d, text=d, recall_rank=i + 1) for i, d in enumerate(self.order[:limit])]


CORPUS = [f"d{i}" for i in range(100)]


def test_positives_never_negatives_and_depth_honoured():
    recall = FakeRecall(CORPUS)
    # Positives sit inside the minable window (ranks 3..20) and in the random pool.
    queries = [TrainQuery("q1", "one", ["d5", "d7"]), TrainQuery("q2", "two", ["d12"])]
    mine_negatives(queries, recall, CORPUS, hard=10, random_negatives=20, depth=20, skip=2, seed=1, progress=False)
    assert recall.limits == [20, 20]
    for q in queries:
        hard, rand = q.negatives[:10], q.negatives[10:]
        assert not set(q.negatives) & set(q.positives)
        assert len(set(q.negatives)) == len(q.negatives) == 30
        ranks = [CORPUS.index(d) for d in hard]
        assert all(2 <= r < 20 for r in ranks), ranks  # ranks skip+1 .. depth only
        assert not set(rand) & set(hard)


def test_hard_negatives_limited_by_the_window():
    queries = [TrainQuery("q", "x", ["d3"])]
    mine_negatives(queries, FakeRecall(CORPUS), CORPUS, hard=50, random_negatives=0, depth=8, skip=2, progress=False)
    assert sorted(queries[0].negatives, key=CORPUS.index) == ["d2", "d4", "d5", "d6", "d7"]


def test_exclude_and_seed_reproducible():
    def run(seed):
        q = [TrainQuery("q", "x", ["d1"])]
        excl = {"q": {"d4", "d5"}}
        mine_negatives(q, FakeRecall(CORPUS), CORPUS, hard=3, random_negatives=3, depth=10, skip=0, seed=seed,
                       exclude=excl, progress=False)  # fmt: skip
        return q[0].negatives

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert not {"d1", "d4", "d5"} & set(run(3))


@pytest.mark.parametrize(
    "kwargs",
    [dict(depth=0), dict(hard=-1), dict(random_negatives=-2), dict(skip=10, depth=10), dict(skip=1.5)],
)
def test_bad_mining_settings_are_typed_errors(kwargs):
    with pytest.raises(InvalidParameterError):
        mine_negatives([TrainQuery("q", "x", ["d1"])], FakeRecall(CORPUS), CORPUS, progress=False, **kwargs)


def _dataset() -> BeirDataset:
    titles = {"a": "Aspirin and stroke", "b": "Statins in the elderly", "c": ""}
    texts = {
        "a": "Aspirin lowers the risk of stroke. It also thins the blood in most adults.",
        "b": "Statins reduce cholesterol in older patients. Muscle pain is a common side effect.",
        "c": "A note without a title that has only one sentence",
    }
    corpus = {d: passage_text(titles[d], texts[d]) for d in titles}
    qrels = {"q1": {"a": 1, "b": 0}, "q2": {"zzz": 1}}
    return BeirDataset("toy", Path("toy"), "train", corpus, titles, {"q1": "aspirin?", "q2": "gone"}, qrels)


def test_qrels_pairs_use_relevant_docs_in_the_corpus_only():
    builder = PairBuilder(_dataset(), "qrels")
    queries = builder.queries()
    assert [(q.qid, q.positives) for q in queries] == [("q1", ["a"])]  # rel 0 and missing docs dropped
    queries[0].negatives = ["c"]
    pairs = builder.pairs(queries)
    assert [(p.passage.split(".")[0], p.label) for p in pairs] == [
        ("Aspirin and stroke", 1),
        ("A note without a title that has only one sentence", 0),
    ]  # noqa: E501


def test_title_body_pairs_hide_the_title_from_every_passage():
    data = _dataset()
    builder = PairBuilder(data, "title-body")
    queries = builder.queries()
    assert {q.text: q.positives for q in queries} == {"Aspirin and stroke": ["a"], "Statins in the elderly": ["b"]}
    queries[0].negatives = ["b"]
    pairs = builder.pairs(queries[:1])
    assert all(data.titles[d] not in p.passage for p, d in zip(pairs, ["a", "b"], strict=True))
    assert [p.label for p in pairs] == [1, 0]


def test_first_sentence_pairs():
    builder = PairBuilder(_dataset(), "first-sentence")
    queries = builder.queries()
    assert [q.text for q in queries] == [
        "Aspirin lowers the risk of stroke.",
        "Statins reduce cholesterol in older patients.",
    ]
    assert builder.passage("a") == "Aspirin and stroke. It also thins the blood in most adults."
    assert builder.passage("c") == "A note without a title that has only one sentence"  # a negative, shown whole
    assert split_first_sentence("One sentence only") == ("One sentence only", "")


def test_last_sentence_pairs():
    builder = PairBuilder(_dataset(), "last-sentence")
    queries = builder.queries()
    assert [q.text for q in queries] == [
        "It also thins the blood in most adults.",
        "Muscle pain is a common side effect.",
    ]
    assert [q.positives for q in queries] == [["a"], ["b"]]
    assert builder.passage("a") == "Aspirin and stroke. Aspirin lowers the risk of stroke."
    assert builder.passage("c") == "A note without a title that has only one sentence"  # negatives shown the same way
    assert split_last_sentence("One. Two. Three.") == ("One. Two.", "Three.")
    assert split_last_sentence("One sentence only") == ("", "One sentence only")


def test_label_free_sample_is_seeded_and_bad_source_rejected():
    builder = PairBuilder(_dataset(), "title-body")
    assert [q.qid for q in builder.queries(max_queries=1, seed=5)] == [
        q.qid for q in builder.queries(max_queries=1, seed=5)
    ]
    with pytest.raises(InvalidParameterError, match="pairs must be one of"):
        PairBuilder(_dataset(), "titles")


def test_load_corpus_needs_only_corpus_jsonl(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "title": "T", "text": "Body text here."}\n')
    data = load_corpus(tmp_path)
    assert data.corpus == {"1": "T. Body text here."} and not data.qrels
    with pytest.raises(InvalidDocumentError, match="corpus.jsonl"):
        load_corpus(tmp_path / "missing")


def test_load_corpus_shares_the_eval_cache_key(tmp_path):
    from twostage_integrations.evaluation import load_beir

    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "title": "T", "text": "B."}\n{"_id": "2", "text": "C."}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "t?"}\n')
    (tmp_path / "qrels" / "train.tsv").write_text("q\t1\t1\n")
    full = load_beir(tmp_path, "train")
    assert load_corpus(tmp_path).fingerprint == full.fingerprint and load_corpus(tmp_path).corpus == full.corpus
