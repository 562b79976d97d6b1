"""The Python API is quiet on stderr unless asked: real models load without ``Loading weights: 100%|...`` and
``add_texts`` shows its bar only with ``show_progress=True`` (the CLI's ingest asks for it)."""

from __future__ import annotations

import importlib
import re

import pytest

from twostage_integrations import ChromaRecall, CrossEncoderReranker
from twostage_integrations.embeddings import Embedder

BAR = re.compile(r"\d+%\|")  # tqdm's "100%|████|"


@pytest.fixture
def bars_on(monkeypatch):
    """The model libraries' bars switched on, as in a fresh process (a CLI test in this process may have
    switched them off); the previous switches are restored afterwards."""
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    hub = importlib.import_module("huggingface_hub.utils.tqdm")
    monkeypatch.setattr(hub, "HF_HUB_DISABLE_PROGRESS_BARS", None)
    transformers_logging = importlib.import_module("transformers").utils.logging
    saved, was_on = dict(hub.progress_bar_states), transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_progress_bar()
    yield
    (transformers_logging.enable_progress_bar if was_on else transformers_logging.disable_progress_bar)()
    hub.progress_bar_states.clear()
    hub.progress_bar_states.update(saved)


def test_model_loads_print_no_progress_bar(bars_on, rerank_model_path, capfd):
    from sentence_transformers import SentenceTransformer

    embedding_folder = Embedder().load_from
    SentenceTransformer(embedding_folder)  # control: the library itself does print its bar here
    assert BAR.search(capfd.readouterr().err), "the bar this test looks for no longer exists"

    emb = Embedder(embedding_folder)
    assert emb.embed(["aspirin and stroke"]).shape[0] == 1  # loads the model
    reranker = CrossEncoderReranker(rerank_model_path, backend="torch")
    assert len(reranker.score("aspirin", ["Aspirin lowers the risk of stroke."])) == 1
    err = capfd.readouterr().err
    assert not BAR.search(err), err
    assert importlib.import_module("transformers").utils.logging.is_progress_bar_enabled()  # switches restored


def test_add_texts_bar_only_when_asked(embedder, tmp_path, capfd):
    texts = [f"Passage {i}: aspirin lowers the risk of stroke in group {i}." for i in range(40)]
    recall = ChromaRecall("quiet-api", path=tmp_path, embedding_model=embedder)
    assert recall.add_texts(texts[:20]).added == 20
    assert not BAR.search(capfd.readouterr().err)
    assert recall.add_texts(texts[20:], show_progress=True).added == 20
    err = capfd.readouterr().err
    assert "adding to quiet-api" in err and BAR.search(err)
