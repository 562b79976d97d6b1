"""The reranker name table (rerank/registry.py): which class each documented name form means, read without
building a reranker; the old import paths of its names; and `twostage serve` deciding from it."""

from __future__ import annotations

import logging
import types

import pytest
from typer.testing import CliRunner

from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.rerank import make_reranker, registry
from twostage_integrations.rerank.registry import CROSS_ENCODER, ROUTES, hosted_provider, route_for


@pytest.fixture(autouse=True)
def _no_env_model(monkeypatch):
    monkeypatch.delenv("TWOSTAGE_RERANK_MODEL", raising=False)


@pytest.mark.parametrize(
    ("name", "class_name"),
    [
        ("rerank-2.5", "VoyageReranker"),
        ("rerank-lite-1", "VoyageReranker"),
        ("voyage:x", "VoyageReranker"),
        ("rerank-v3.5", "CohereReranker"),
        ("cohere:rerank-2", "CohereReranker"),  # the prefix wins over Voyage's name
        ("rerank-2.5-large", "CohereReranker"),  # only Voyage's exact names are Voyage's
        ("rerankers:/p:cross-encoder", "RerankersReranker"),
        ("rerankers:org/model", "RerankersReranker"),
        ("org/ce", "CrossEncoderReranker"),
        ("/models/scifact-ce", "CrossEncoderReranker"),
    ],
)
def test_each_name_form_routes_to_its_class(name, class_name):
    assert route_for(name).class_name == class_name


def test_an_existing_folder_named_like_a_hosted_model_is_a_cross_encoder(tmp_path, monkeypatch):
    (tmp_path / "rerank-x").mkdir()
    (tmp_path / "rerank-2.5").mkdir()
    monkeypatch.chdir(tmp_path)
    assert route_for("rerank-x").class_name == "CrossEncoderReranker"
    assert route_for("rerank-2.5").class_name == "CrossEncoderReranker"
    assert route_for("rerank-v3.5").class_name == "CohereReranker"  # no such folder here
    assert hosted_provider("rerank-x") == "cohere"  # the name alone; paths are not looked at


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.kind}:{r.prefix or ('names' if r.names else '*')}")
def test_every_row_names_a_class_that_exists(route):
    cls = route.load()  # imports the backend module only; builds nothing
    assert cls.__name__ == route.class_name
    assert cls.__module__ == f"twostage_integrations.rerank.{route.target.partition(':')[0]}"


def test_only_the_last_row_takes_every_name():
    assert ROUTES[-1].kind == CROSS_ENCODER and ROUTES[-1].matches("anything at all")
    assert not any(r.matches("org/ce") for r in ROUTES[:-1])


def test_voyage_names_routed_here_all_have_documented_limits():
    from twostage_integrations.rerank.voyage import MODEL_LIMITS

    assert set(MODEL_LIMITS) == registry.VOYAGE_MODELS


def test_the_moved_names_keep_their_old_import_paths():
    from twostage_integrations.rerank import cohere, factory, rerankers, voyage

    assert factory.hosted_provider is registry.hosted_provider and factory.Provider is registry.Provider
    assert cohere.COHERE_PREFIX == registry.COHERE_PREFIX == "cohere:"
    assert voyage.VOYAGE_PREFIX == "voyage:" and voyage.VOYAGE_MODELS is registry.VOYAGE_MODELS
    assert voyage.is_voyage_model is registry.is_voyage_model
    assert rerankers.RERANKERS_PREFIX == registry.RERANKERS_PREFIX == "rerankers:"
    assert cohere.is_cohere_model("rerank-v3.5") and not cohere.is_cohere_model("rerank-2.5")


def test_model_folder_is_the_model_inside_a_rerankers_spec(tmp_path):
    assert registry.model_folder(f"rerankers:{tmp_path}:cross-encoder") == str(tmp_path)
    assert registry.model_folder("org/ce") == "org/ce"
    with pytest.raises(InvalidParameterError, match="names no model"):
        registry.model_folder("rerankers:")


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("rerank-v3.5", {"backend": "onnx"}, "'rerank-v3.5' is a hosted Cohere model; a rerank backend"),
        ("rerank-2.5", {"max_length": 64}, "'rerank-2.5' is a hosted Voyage model; a token limit"),
        ("rerankers:org/m", {"backend": "torch"}, "'rerankers:org/m' runs in the rerankers library; a rerank"),
    ],
)
def test_options_that_do_not_apply_are_refused_before_anything_is_built(name, kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        make_reranker(name, **kwargs)


def test_make_reranker_builds_the_class_of_the_row(monkeypatch):
    import twostage_integrations.rerank.cross_encoder as cross_encoder

    built: list[tuple[str, dict]] = []
    monkeypatch.setattr(cross_encoder, "CrossEncoderReranker", lambda name, **kw: built.append((name, kw)) or "ce")
    assert make_reranker("org/ce", backend="torch", batch_size=4) == "ce"
    assert built == [("org/ce", {"backend": "torch", "batch_size": 4})]


# -- `twostage serve` decides from the same table -----------------------------------------------------------------
def _serve(args: list[str], monkeypatch) -> tuple[int, str]:
    import twostage_integrations.server as server
    from twostage_integrations.cli import app

    for name in ("twostage_integrations.server", "twostage_integrations.server.requests"):
        logger = logging.getLogger(name)  # serve adds a handler on CliRunner's stderr and sets levels: undo it
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
        monkeypatch.setattr(logger, "level", logger.level)
    started = []
    fake_app = types.SimpleNamespace(state=types.SimpleNamespace(service=types.SimpleNamespace(load_error=None)))
    monkeypatch.setattr(server, "create_app", lambda load, **kwargs: fake_app)  # no model is loaded
    monkeypatch.setattr(server, "run_server", lambda *a, **kw: started.append(a))
    result = CliRunner().invoke(app, ["serve", *args])
    return result.exit_code, result.output + ("[started]" if started else "")


def test_serve_refuses_a_rerankers_name_like_a_hosted_one(monkeypatch):
    code, output = _serve(["--model", "rerankers:org/model"], monkeypatch)
    assert code == 2 and "runs in the rerankers library; serve hosts a local cross-encoder" in output
    code, output = _serve(["--model", "voyage:rerank-2"], monkeypatch)
    assert code == 2 and "is a hosted Voyage model; serve hosts a local cross-encoder" in output


def test_serve_takes_an_existing_folder_named_like_a_cohere_model(tmp_path, monkeypatch):
    (tmp_path / "rerank-x").mkdir()
    monkeypatch.chdir(tmp_path)
    code, output = _serve(["--model", "rerank-x"], monkeypatch)
    assert code == 0 and "serving rerank-x at" in output and output.endswith("[started]")
