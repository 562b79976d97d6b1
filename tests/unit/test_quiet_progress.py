"""The Python API prints no progress bars unless asked (no weights): ``ChromaRecall.add_texts`` and the model
libraries' switches around a load. The real-model check is tests/test_quiet_api.py."""

from __future__ import annotations

import importlib
import logging
import re

import pytest

from twostage_integrations import ChromaRecall
from twostage_integrations.models import hidden_progress_bars, load_model

BAR = re.compile(r"\d+%\|")  # tqdm's "100%|████|"
TEXTS = [f"passage {i} about aspirin" for i in range(300)]


@pytest.fixture
def hub(monkeypatch):
    """huggingface_hub's switch module as a fresh process without HF_HUB_DISABLE_PROGRESS_BARS has it (another
    test may have set the variable before huggingface_hub read it), its switches restored after the test."""
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    module = importlib.import_module("huggingface_hub.utils.tqdm")
    monkeypatch.setattr(module, "HF_HUB_DISABLE_PROGRESS_BARS", None)
    saved = dict(module.progress_bar_states)
    yield module
    module.progress_bar_states.clear()
    module.progress_bar_states.update(saved)


@pytest.fixture
def transformers_logging(hub):
    module = pytest.importorskip("transformers").utils.logging
    was = module.is_progress_bar_enabled()
    yield module
    (module.enable_progress_bar if was else module.disable_progress_bar)()


def test_add_texts_is_quiet_by_default(tmp_path, fake_embedder, capfd):
    ChromaRecall("quiet", path=tmp_path, embedding_model=fake_embedder).add_texts(TEXTS)
    assert not BAR.search(capfd.readouterr().err)


def test_add_texts_shows_its_bar_when_asked(tmp_path, fake_embedder, capfd):
    recall = ChromaRecall("loud", path=tmp_path, embedding_model=fake_embedder)
    recall.add_texts(TEXTS[:100], show_progress=True)
    err = capfd.readouterr().err
    assert "adding to loud" in err and "100/100" in err and BAR.search(err)
    recall.add_texts(TEXTS[100:])  # the per-call switch does not stick
    assert not BAR.search(capfd.readouterr().err)


@pytest.mark.parametrize("kwargs", [{"show_progress": True}, {"progress": True}])  # progress: the former name
def test_constructor_switch_turns_the_bar_on(tmp_path, fake_embedder, capfd, kwargs):
    recall = ChromaRecall("loud", path=tmp_path, embedding_model=fake_embedder, **kwargs)
    assert recall.show_progress and recall.progress
    recall.add_texts(TEXTS[:50])
    assert "50/50" in capfd.readouterr().err
    recall.add_texts(TEXTS[50:100], show_progress=False)
    assert not BAR.search(capfd.readouterr().err)


def test_hidden_progress_bars_hides_then_restores_exactly(hub, transformers_logging):
    transformers_logging.enable_progress_bar()
    hub.progress_bar_states["some.group"] = False  # a caller's own per-group setting must survive
    before = dict(hub.progress_bar_states)
    with hidden_progress_bars():
        assert not transformers_logging.is_progress_bar_enabled()
        assert hub.are_progress_bars_disabled() and hub.are_progress_bars_disabled("other.group")
        with hidden_progress_bars():  # nested (or concurrent) blocks restore once, at the end
            pass
        assert not transformers_logging.is_progress_bar_enabled()
    assert transformers_logging.is_progress_bar_enabled()
    assert hub.progress_bar_states == before


def test_hidden_progress_bars_keeps_bars_the_caller_turned_off(hub, transformers_logging):
    transformers_logging.disable_progress_bar()
    with hidden_progress_bars():
        pass
    assert not transformers_logging.is_progress_bar_enabled()


def test_bars_stay_when_asked_for(hub, transformers_logging, monkeypatch, caplog):
    transformers_logging.enable_progress_bar()
    with hidden_progress_bars(show=True):
        assert transformers_logging.is_progress_bar_enabled()
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    with hidden_progress_bars():
        assert transformers_logging.is_progress_bar_enabled()
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    # INFO logging for this package is what `twostage --verbose` sets up
    with caplog.at_level(logging.INFO, logger="twostage_integrations"), hidden_progress_bars():
        assert transformers_logging.is_progress_bar_enabled()
    with hidden_progress_bars():
        assert not transformers_logging.is_progress_bar_enabled()


def test_load_model_loads_with_the_bars_hidden(hub, transformers_logging):
    transformers_logging.enable_progress_bar()
    seen = []

    def loader(name: str, local_only: bool) -> str:
        seen.append((name, transformers_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled()))
        return name

    assert load_model(".", loader, kind="embedding", env_var="X") == "."
    assert seen[-1] == (".", False, True)
    assert transformers_logging.is_progress_bar_enabled()
    load_model(".", loader, kind="embedding", env_var="X", show_progress=True)
    assert seen[-1] == (".", True, False)
