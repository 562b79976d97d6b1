"""Server mode: a real `chroma run` process, reached through host/port."""

from __future__ import annotations

import threading

import pytest
from servers import free_port, start_server, stop_server

from twostage_integrations import ChromaRecall, TwoStagePipeline
from twostage_integrations.errors import ChromaUnavailableError, CollectionNotFoundError


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    port = free_port()
    proc = start_server(tmp_path_factory.mktemp("chroma-server"), port)
    yield "127.0.0.1", port
    stop_server(proc)


def test_ingest_and_query_through_host_and_port(chroma_server, embedder, cross_encoder, scifact_subset):
    host, port = chroma_server
    doc_ids, texts, metas, queries, qrels = scifact_subset
    recall = ChromaRecall("server-mode", host=host, port=port, embedding_model=embedder, progress=False)
    assert recall.add_texts(texts[:80], metadatas=metas[:80], ids=doc_ids[:80]).added == 80

    # A second client of the same server sees the same data.
    again = ChromaRecall("server-mode", host=host, port=port, embedding_model=embedder)
    assert again.count() == 80
    qid = next(q for q in queries if any(d in doc_ids[:80] for d in qrels[q]))
    pipe = TwoStagePipeline(again, cross_encoder, limit=10, top_k=3)
    hits = pipe.search(queries[qid])
    assert len(hits) == 3 and all(h.rerank_rank for h in hits)
    recalled = [h.id for h in again.search(queries[qid], 10)]
    assert any(d in recalled for d in qrels[qid])  # the relevant abstract is recalled


def test_missing_collection_names_the_server(chroma_server, embedder):
    host, port = chroma_server
    with pytest.raises(CollectionNotFoundError) as info:
        ChromaRecall("never-made", host=host, port=port, embedding_model=embedder).search("aspirin")
    message = str(info.value)
    assert f"the Chroma server at {host}:{port}" in message
    assert f"twostage ingest PATH -c never-made --host {host} --port {port}" in message


def test_server_killed_mid_query_then_restarted(tmp_path, embedder, scifact_subset):
    """A server that dies under load gives one clear error naming host:port (never a raw httpx traceback), and
    the same pipeline object works again once the server is back."""
    doc_ids, texts, metas, queries, _ = scifact_subset
    path, port = tmp_path / "server-db", free_port()
    proc = start_server(path, port)
    try:
        recall = ChromaRecall("restart-test", host="127.0.0.1", port=port, embedding_model=embedder, progress=False)
        recall.add_texts(texts[:60], metadatas=metas[:60], ids=doc_ids[:60])
        pipe = TwoStagePipeline(recall, None, limit=10, top_k=5)
        query = next(iter(queries.values()))
        before = [h.id for h in pipe.search(query)]

        errors: list[BaseException] = []
        searched = threading.Event()

        def keep_searching():
            while True:
                try:
                    pipe.search(query)
                    searched.set()
                except Exception as exc:  # noqa: BLE001 - the test inspects what came out
                    errors.append(exc)
                    return

        worker = threading.Thread(target=keep_searching)
        worker.start()
        assert searched.wait(60)
        proc.kill()  # SIGKILL while queries are in flight
        proc.wait()
        worker.join(60)
        assert len(errors) == 1 and isinstance(errors[0], ChromaUnavailableError), errors
        message = str(errors[0])
        assert f"127.0.0.1:{port}" in message and "\n" not in message

        proc = start_server(path, port)  # same data, same port
        assert [h.id for h in pipe.search(query)] == before  # the same pipeline object, no reconnect call
    finally:
        stop_server(proc)
