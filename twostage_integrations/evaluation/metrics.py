"""IR metrics via ir-measures, averaged over every judged query (a query with no hits scores 0)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def metric_names(limit: int, k: int = 10) -> dict[str, str]:
    """The metrics an evaluation reports.

    Args:
        limit: Candidates recalled (for Recall@limit).
        k: The cut-off of nDCG@k, Recall@k and MRR@k.

    Returns:
        Display name -> ir-measures measure.
    """
    names = {f"nDCG@{k}": f"nDCG@{k}", f"Recall@{k}": f"R@{k}", f"Recall@{limit}": f"R@{limit}"}
    names.update({f"MRR@{k}": f"RR@{k}", "MAP@100": "AP@100"})
    return names


def compute_metrics(
    qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Sequence[str]], *, limit: int, k: int = 10
) -> dict[str, float]:
    """Average each metric over every judged query.

    Args:
        qrels: Query id -> {doc id: relevance}.
        rankings: Query id -> doc ids, best first (only the order matters); a missing query scores 0.
        limit: Candidates recalled (for Recall@limit).
        k: The cut-off of the @k metrics.

    Returns:
        Display name (see :func:`metric_names`) -> mean over every query in ``qrels``.
    """
    import ir_measures

    names = metric_names(limit, k)
    measures = {ir_measures.parse_measure(m): display for display, m in names.items()}
    qrels_list = [ir_measures.Qrel(q, d, int(r)) for q, docs in qrels.items() for d, r in docs.items()]
    run = [
        ir_measures.ScoredDoc(q, d, float(len(docs) - rank))
        for q, docs in rankings.items()
        if q in qrels
        for rank, d in enumerate(docs)
    ]
    totals = dict.fromkeys(names, 0.0)
    for m in ir_measures.iter_calc(list(measures), qrels_list, run):
        totals[measures[m.measure]] += m.value
    n = max(len(qrels), 1)
    return {name: totals[name] / n for name in names}
