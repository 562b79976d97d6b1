"""Server mode: a real `chroma run` process, reached through host/port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from twostage_integrations import ChromaRecall, TwoStagePipeline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    exe = shutil.which("chroma")
    assert exe, "the `chroma` CLI ships with chromadb; is chromadb installed?"
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "run",
            "--path",
            str(tmp_path_factory.mktemp("chroma-server")),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import chromadb

    deadline = time.monotonic() + 60
    while True:
        try:
            chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"chroma server did not start on port {port} (exit code {proc.poll()})")
            time.sleep(0.3)
    yield "127.0.0.1", port
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


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
