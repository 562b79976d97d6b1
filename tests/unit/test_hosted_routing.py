"""Which model names go to Voyage, to Cohere or to a local cross-encoder, and the base-URL list: no network, no
weights (the hosted clients are built but never called)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.rerank import make_reranker
from twostage_integrations.rerank.factory import hosted_provider
from twostage_integrations.rerank.hosted import resolve_base_urls

REPO = Path(__file__).resolve().parents[2]
VOYAGE_NAMES = ["rerank-2.5", "rerank-2.5-lite", "rerank-2", "rerank-2-lite", "rerank-lite-1", "rerank-1"]
COHERE_NAMES = ["rerank-v3.5", "rerank-english-v3.0", "rerank-multilingual-v3.0"]


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    for env in ("TWOSTAGE_VOYAGE_BASE_URL", "TWOSTAGE_COHERE_BASE_URL", "CO_API_URL", "TWOSTAGE_RERANK_MODEL"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("VOYAGE_API_KEY", "unit-voyage-key")
    monkeypatch.setenv("CO_API_KEY", "unit-cohere-key")


@pytest.mark.parametrize(
    "name, provider",
    [(n, "voyage") for n in VOYAGE_NAMES]
    + [(n, "cohere") for n in COHERE_NAMES]
    + [
        ("voyage:rerank-3-preview", "voyage"),  # an explicit prefix takes any model name
        ("cohere:my-finetune", "cohere"),
        ("cohere:rerank-2.5", "cohere"),  # the prefix wins over Voyage's names
        ("rerank-v4.0-pro", "cohere"),  # a rerank-... Voyage does not have stays Cohere's
        ("rerank-2.5-large", "cohere"),  # only Voyage's exact names are Voyage's
        ("cross-encoder/ms-marco-MiniLM-L-6-v2", None),
        ("./rerank-2.5", None),
    ],
)
def test_hosted_provider_of_each_name(name, provider):
    assert hosted_provider(name) == provider


@pytest.mark.parametrize("name", VOYAGE_NAMES + ["voyage:rerank-2"])
def test_make_reranker_builds_a_voyage_reranker_for_voyage_names(name):
    pytest.importorskip("voyageai")
    from twostage_integrations import VoyageReranker

    vo = make_reranker(name)
    assert type(vo) is VoyageReranker and vo.model == name.removeprefix("voyage:") and vo.score_kind == "voyage"


@pytest.mark.parametrize("name", COHERE_NAMES + ["cohere:rerank-2"])
def test_make_reranker_keeps_cohere_names_on_cohere(name):
    pytest.importorskip("cohere")
    from twostage_integrations import CohereReranker

    co = make_reranker(name)
    assert type(co) is CohereReranker and co.model == name.removeprefix("cohere:") and co.score_kind == "cohere"


def test_env_default_model_can_be_voyage(monkeypatch):
    pytest.importorskip("voyageai")
    monkeypatch.setenv("TWOSTAGE_RERANK_MODEL", "rerank-2-lite")
    assert make_reranker().name == "voyage:rerank-2-lite"


def test_an_existing_folder_named_like_a_voyage_model_is_a_cross_encoder(tmp_path, monkeypatch):
    import twostage_integrations.rerank.cross_encoder as cross_encoder

    built = []
    monkeypatch.setattr(cross_encoder, "CrossEncoderReranker", lambda name, **kw: built.append(name) or "local")
    (tmp_path / "rerank-2.5").mkdir()
    monkeypatch.chdir(tmp_path)
    assert make_reranker("rerank-2.5") == "local" and built == ["rerank-2.5"]


def test_a_rerank_backend_is_refused_for_voyage_names_naming_the_provider(monkeypatch):
    with pytest.raises(InvalidParameterError, match="hosted Voyage model.*local cross-encoders"):
        make_reranker("rerank-2.5", backend="onnx")
    monkeypatch.setenv("TWOSTAGE_RERANK_BACKEND", "onnx")  # the env var alone must not break hosted users
    pytest.importorskip("voyageai")
    assert make_reranker("rerank-2.5").name == "voyage:rerank-2.5"


def test_importing_the_package_and_routing_needs_no_sdk_and_no_torch():
    code = (
        "import sys, twostage_integrations, twostage_integrations.rerank as r\n"
        "from twostage_integrations.rerank.factory import hosted_provider\n"
        "assert hosted_provider('rerank-2.5') == 'voyage'\n"
        "assert 'VoyageReranker' in twostage_integrations.__all__ and 'VoyageReranker' in r.__all__\n"
        "heavy = sorted(m for m in ('voyageai', 'cohere', 'torch') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_cli_help_names_voyage_models():
    from typer.testing import CliRunner

    from twostage_integrations.cli import app

    result = CliRunner().invoke(app, ["demo", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "Voyage" in result.output and "voyage:NAME" in result.output


# -- base URLs and failover order ---------------------------------------------------------------------------------
def test_base_urls_from_a_list_a_comma_string_or_the_env(monkeypatch):
    assert resolve_base_urls(["http://a/v1", "http://b/v1"], ()) == ("http://a/v1", "http://b/v1")
    assert resolve_base_urls(" http://a ,http://b,", ()) == ("http://a", "http://b")
    monkeypatch.setenv("TWOSTAGE_VOYAGE_BASE_URL", "http://env-a, http://env-b")
    assert resolve_base_urls(None, ("TWOSTAGE_VOYAGE_BASE_URL",)) == ("http://env-a", "http://env-b")
    assert resolve_base_urls("http://given", ("TWOSTAGE_VOYAGE_BASE_URL",)) == ("http://given",)  # the argument wins
    assert resolve_base_urls(None, ("UNSET_FOR_THIS_TEST",)) == (None,)  # the SDK's default server
    with pytest.raises(InvalidParameterError, match="base_url must be"):
        resolve_base_urls(["http://a", 5], ())  # type: ignore[list-item]


def test_the_url_that_answered_last_is_tried_first_then_the_others_in_order():
    pytest.importorskip("voyageai")
    from twostage_integrations import VoyageReranker

    vo = VoyageReranker(base_url=("http://a/v1", "http://b/v1", "http://c/v1"))
    assert vo._url_order() == ["http://a/v1", "http://b/v1", "http://c/v1"] and vo.base_url == "http://a/v1"
    vo._preferred = "http://b/v1"
    assert vo._url_order() == ["http://b/v1", "http://c/v1", "http://a/v1"]  # the dead "a" comes last
    assert "base_url='http://b/v1'" in repr(vo)
