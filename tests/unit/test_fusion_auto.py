"""``fuse=rrf:auto`` / ``--fusion-weight auto``: the label-free estimate picks the weight that maximises nDCG@10 on
pseudo-queries (ties to the smaller weight), the spec and the CLI read ``auto`` and refuse look-alikes, too few
usable passages fall back to the fixed default with a warning, and the pick is cached per collection version.

No weights: rerankers are small fakes that know (or invert) the truth; Chroma embeds with the FakeEmbedder."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from typer.testing import CliRunner

from twostage_integrations.cli import app
from twostage_integrations.errors import InvalidParameterError, PipelineSpecError
from twostage_integrations.evaluation import fusion_auto
from twostage_integrations.evaluation.fusion_auto import (
    GRID,
    PseudoQuery,
    PseudoRun,
    choose_fusion_weight,
    estimate_from_runs,
    make_pseudo_query,
    ndcg_at,
    pick_weight,
    pseudo_recall,
    read_pool,
)
from twostage_integrations.hit import Hit
from twostage_integrations.recall.chroma import ChromaRecall
from twostage_integrations.rerank.base import BaseReranker
from twostage_integrations.rerank.fusion import FusedReranker
from twostage_integrations.spec import FusionSpec, PipelineSpec, build
from twostage_integrations.testing import FakeEmbedder, FakeReranker

runner = CliRunner()
AUTO_SPEC = "dense:10 > org/ce > fuse=rrf:auto > top_k=3"


# -- the pick, from runs built by hand ---------------------------------------------------------------------------
def _run(relevant_at: int, reranker_order: str, n: int = 20, qid: str = "q") -> PseudoRun:
    """Recall ranks the relevant passage ``relevant_at`` (1-based) of ``n``; the reranker puts it first
    (``perfect``), last (``anti``) or keeps recall's order (``same``)."""
    ids = [f"{qid}-d{i}" for i in range(1, n + 1)]
    relevant = ids[relevant_at - 1]
    hits = [Hit(id=i, text=i, score=float(n - r)) for r, i in enumerate(ids)]
    others = [i for i in ids if i != relevant]
    order = {"perfect": [relevant, *others], "anti": [*others, relevant], "same": ids}[reranker_order]
    reranked = [Hit(id=i, text=i, score=float(n - r)) for r, i in enumerate(order)]
    return PseudoRun(PseudoQuery(relevant, "query", relevant), hits, reranked)


def test_a_perfect_reranker_that_recall_misses_picks_the_reranker_order():
    runs = [_run(20, "perfect", qid=str(q)) for q in range(5)]
    estimate = estimate_from_runs(runs, "rrf")
    assert estimate.ndcg[1.0] == 1.0 and max(v for w, v in estimate.ndcg.items() if w < 1.0) < 1.0
    assert estimate.weight == 1.0


def test_an_anti_correlated_reranker_picks_recall_order():
    runs = [_run(r, "anti", qid=str(r)) for r in (1, 2, 3)]
    for method in ("rrf", "minmax"):
        estimate = estimate_from_runs(runs, method)
        assert estimate.weight == 0.0
        assert estimate.ndcg[0.0] == pytest.approx(estimate.recall_ndcg) and estimate.ndcg[1.0] < estimate.recall_ndcg


def test_ties_go_to_the_smaller_weight():
    # a reranker that agrees with recall: every weight scores the same, the pick is recall's own order
    assert estimate_from_runs([_run(3, "same")], "rrf").weight == 0.0
    # a perfect reranker with the relevant passage near the top: several weights rank it first
    estimate = estimate_from_runs([_run(2, "perfect")], "rrf")
    perfect = [w for w, v in estimate.ndcg.items() if v == 1.0]
    assert len(perfect) > 1 and estimate.weight == min(perfect) < 1.0
    assert pick_weight({0.9: 0.8, 0.5: 0.8, 1.0: 0.7, 0.0: 0.6}) == 0.5


def test_ndcg_with_one_relevant_document():
    assert ndcg_at(["a", "b"], "a") == 1.0
    assert ndcg_at(["b", "a"], "a") == pytest.approx(1 / 1.584962500721156)
    assert ndcg_at([str(i) for i in range(20)], "12") == 0.0


def test_a_bad_method_or_grid_is_refused():
    with pytest.raises(InvalidParameterError, match="method"):
        estimate_from_runs([_run(1, "same")], "mean")
    with pytest.raises(InvalidParameterError, match="grid"):
        estimate_from_runs([_run(1, "same")], "rrf", grid=[0.5, 1.5])


def test_pseudo_queries_cut_the_first_sentence_after_the_title():
    pseudo = make_pseudo_query(
        "d1", "Aspirin. Aspirin lowers stroke risk today. It thins the blood of most adults.", "Aspirin"
    )
    assert pseudo == PseudoQuery(
        "d1", "Aspirin lowers stroke risk today.", "Aspirin. It thins the blood of most adults."
    )
    assert make_pseudo_query("d2", "One sentence only, nothing after it at all.") is None
    assert make_pseudo_query("d3", "Too short. Then a rest that is long enough to be a passage.") is None


# -- the spec, the reranker and the CLI --------------------------------------------------------------------------
def test_the_spec_reads_auto_and_round_trips():
    spec = PipelineSpec.parse("hybrid:50 > default > fuse=rrf:auto > top_k=5")
    assert spec.fusion == FusionSpec("rrf", "auto") and spec.fusion.auto
    assert PipelineSpec.parse(spec.to_string()) == spec
    assert spec.to_dict()["fusion"] == {"method": "rrf", "weight": "auto"}
    assert PipelineSpec.from_dict(spec.to_dict()) == spec
    assert PipelineSpec.from_toml(spec.to_toml()) == spec
    assert PipelineSpec.parse("dense:9 > ce > fuse=minmax:auto").fusion == FusionSpec("minmax", "auto")
    assert not PipelineSpec.parse("dense:9 > ce > fuse=rrf:0.5").fusion.auto


@pytest.mark.parametrize("token", ["fuse=rrf:autox", "fuse=rrf:Auto", "fuse=rrf:", "fuse=minmax:auto0.5"])
def test_auto_look_alikes_are_refused(token):
    with pytest.raises(PipelineSpecError, match="weight must be a number such as 0.9, or auto"):
        PipelineSpec.parse(f"dense:9 > ce > {token}")
    with pytest.raises(PipelineSpecError, match="or auto"):
        FusionSpec("rrf", token.rpartition(":")[2] or "none")


def test_an_auto_weight_that_was_never_chosen_refuses_to_rerank():
    fused = FusedReranker(FakeReranker(), weight="auto")
    assert fused.name == "fake-word-overlap+rrf(auto)"
    hits = [Hit(id="a", text="aspirin", score=1.0), Hit(id="b", text="coffee", score=0.5)]
    with pytest.raises(InvalidParameterError, match="not chosen yet"):
        fused.rerank("aspirin", hits)
    fused.set_weight(1.0)
    assert fused.name == "fake-word-overlap+rrf(1)" and [h.id for h in fused.rerank("aspirin", hits)] == ["a", "b"]
    with pytest.raises(InvalidParameterError, match="or 'auto'"):
        FusedReranker(FakeReranker(), weight="autox")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--fusion-weight", "autox"], ["--fusion-weight", "or auto"]),
        (["--fusion-weight", "1.5"], ["--fusion-weight", "between 0 and 1"]),
        (["--pipeline", "dense:9 > ce > fuse=rrf:autox"], ["auto", "autox"]),
    ],
)
def test_eval_refuses_a_bad_fusion_weight_in_one_line(args, words, tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path / "missing-dataset"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert all(word in lines[0] for word in words), lines[0]


# -- over a Chroma collection -------------------------------------------------------------------------------------
class _Truth(BaseReranker):
    """Knows which passage each pseudo-query was cut from: scores it 1 (``perfect``) or -1 (``anti``), others 0."""

    def __init__(self, passages: dict[str, str], sign: float) -> None:
        self.name, self.sign, self.calls = f"truth{sign:+g}", sign, 0
        self.source = {}
        for doc_id, text in passages.items():
            pseudo = make_pseudo_query(doc_id, text)
            if pseudo is not None:
                self.source[pseudo.query] = pseudo.passage

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        self.calls += 1
        return [self.sign if self.source.get(query) == t else 0.0 for t in texts]


def _passages(n: int) -> dict[str, str]:
    """``n`` passages of two sentences. A first sentence shares its rare word ``topicN`` with its own rest, and
    ``topicN`` plus a colour with the previous passage's rest: recall finds the source often, but not first."""
    colours = ["red", "green", "blue", "amber"]
    return {
        f"d{i}": (
            f"Question about topic{i} in {colours[i % 4]} terms. "
            f"Answer names topic{i} plainly, then {colours[(i + 1) % 4]} words and topic{(i + 1) % n} too."
        )
        for i in range(n)
    }


@pytest.fixture
def collection(tmp_path) -> tuple[ChromaRecall, dict[str, str]]:
    passages = _passages(40)
    chroma = ChromaRecall("notes", path=tmp_path / "db", embedding_model=FakeEmbedder())
    chroma.add_texts(list(passages.values()), ids=list(passages))
    return chroma, passages


def test_the_pseudo_collection_holds_the_rest_and_leaves_the_collection_alone(collection):
    chroma, passages = collection
    before = chroma.version()
    pool = read_pool(chroma)
    queries = fusion_auto.pseudo_queries(dict(zip(pool["ids"], pool["documents"], strict=True)), sample=5)
    with pseudo_recall(chroma, pool, queries) as mirrored:
        texts = {h.id: h.text for h in mirrored.search(queries[0].query, 40)}
    assert texts[queries[0].doc_id] == queries[0].passage and queries[0].query not in texts[queries[0].doc_id]
    assert chroma.version() == before and chroma.collection.get(ids=[queries[0].doc_id])["documents"] == [
        passages[queries[0].doc_id]
    ]


def test_choose_picks_by_the_truth_and_caches_per_collection_version(collection, monkeypatch):
    chroma, passages = collection
    monkeypatch.setattr(fusion_auto, "_PICKS", {})
    perfect, anti = _Truth(passages, 1.0), _Truth(passages, -1.0)
    good = choose_fusion_weight(chroma, perfect, limit=10, sample=40, persist=False)
    assert good.n_queries == 40 and good.n_passages == 40 and good.fallback is None
    # the reranker knows the truth: its own order is best, recall alone worst, and the pick leaves recall
    assert good.ndcg[1.0] == max(good.ndcg.values()) > good.recall_ndcg > 0.0 and good.weight > 0.0
    assert choose_fusion_weight(chroma, anti, limit=10, sample=40, persist=False).weight == 0.0
    calls = perfect.calls
    again = choose_fusion_weight(chroma, perfect, limit=10, sample=40, persist=False)
    assert again.weight == good.weight and perfect.calls == calls  # cached: nothing scored twice
    chroma.add_texts(
        ["Question about topic99 in grey terms. Answer names topic99 and nothing else at all."], ids=["new"]
    )
    choose_fusion_weight(chroma, perfect, limit=10, sample=40, persist=False)
    assert perfect.calls > calls  # the collection changed: estimated again


def test_the_pick_is_kept_beside_the_collection_for_the_next_process(collection, monkeypatch):
    chroma, passages = collection
    monkeypatch.setattr(fusion_auto, "_PICKS", {})
    perfect = _Truth(passages, 1.0)
    first = choose_fusion_weight(chroma, perfect, limit=10, sample=40)
    assert fusion_auto.picks_file(chroma).is_file()
    monkeypatch.setattr(fusion_auto, "_PICKS", {})  # a new process
    calls = perfect.calls
    second = choose_fusion_weight(chroma, perfect, limit=10, sample=40)
    assert perfect.calls == calls and second.weight == first.weight and second.ndcg == first.ndcg


def test_too_few_usable_passages_fall_back_to_the_fixed_default_with_a_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(fusion_auto, "_PICKS", {})
    chroma = ChromaRecall("short", path=tmp_path / "db", embedding_model=FakeEmbedder())
    chroma.add_texts([f"Only one sentence number {i} here." for i in range(30)])
    reranker = FakeReranker()
    with caplog.at_level(logging.WARNING, logger=fusion_auto.__name__):
        estimate = choose_fusion_weight(chroma, reranker, limit=5, persist=False)
    assert estimate.weight == fusion_auto.FALLBACK_WEIGHT and "only 0 passages" in (estimate.fallback or "")
    assert any("fixed default" in r.getMessage() for r in caplog.records) and reranker.calls == []


def test_from_spec_chooses_an_auto_weight_from_the_collection(collection, monkeypatch):
    from twostage_integrations import TwoStagePipeline

    chroma, passages = collection
    monkeypatch.setattr(fusion_auto, "_PICKS", {})
    monkeypatch.setattr(build, "make_reranker", lambda model=None, **kwargs: _Truth(passages, -1.0))
    pipe = TwoStagePipeline.from_spec(AUTO_SPEC, chroma)
    fused = pipe.reranker.stages[-1][0]
    assert isinstance(fused, FusedReranker) and fused.weight == 0.0 and pipe.reranker.name.endswith("rrf(0)")
    assert len(pipe.run("Question about topic3").hits) == 3


def test_grid_defaults_cover_both_ends():
    assert GRID[0] == 0.0 and GRID[-1] == 1.0 and 0.9 in GRID
