"""Hybrid retrieval over bases the caller has already been allowed to read.

Two rankings per query: vector similarity (Milvus, HNSW) and keyword relevance (BM25 with
jieba, in Milvus where the server has it, else over the Chunk table). They are fused with
weighted reciprocal-rank fusion; the weights follow what each ranking can know. The local
all-MiniLM-L6-v2 model is English-only: on Chinese its ranking is close to noise (recall@5
0.41 against BM25's 0.99 on a Chinese QA set) and an even-weighted fusion drags the result
down to 0.77. So where the embedder cannot read the query or the passages (Chinese in
either), the vector ranking only breaks ties and fills in when keywords find nothing. Where it
can, the vector ranking leads and the keyword ranking counts as much as the two agree (the
share of chunks in both top tens, with a floor so an exact-term match can still surface): on
English known-item questions MiniLM alone beat BM25, and a fixed-weight fusion fell below it
(see docs/performance.md for the measurements behind this).

The database has the last word: hits are read back from Chunk rows of `ready` documents in
the allowed bases, so a vector that outlived its chunk (a delete in flight, a crash between
the two stores) can never put text in front of a user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from django.conf import settings
from django.db.models.functions import Substr

from openspark.core.state import process_memo
from openspark.llm.base import contains_cjk

from . import cache as retrieval_cache
from .embedders import default_embedding_model, get_embedder, reads_chinese
from .keyword import base_index, bm25_search
from .models import Chunk, KnowledgeBase
from .vectorstore import get_vector_store

Mode = Literal["hybrid", "vector", "keyword"]
RRF_K = 60
# Weight of the vector ranking for a Chinese query when the embedder cannot read Chinese:
# w/(K+1) stays below the smallest gap between adjacent keyword ranks in the candidate list
# (1/(K+20) - 1/(K+21) ≈ 1.5e-4), so it reorders no keyword hits and only ranks the rest.
TIEBREAK_WEIGHT = 0.005
# Where the embedder reads the language, the keyword ranking's weight is KEYWORD_WEIGHT
# times the rankings' agreement (overlap of their top AGREEMENT_DEPTH), at least
# AGREEMENT_FLOOR (bench/knowledge.py; docs/performance.md).
KEYWORD_WEIGHT = 0.5
AGREEMENT_DEPTH = 10
AGREEMENT_FLOOR = 0.2


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: Chunk
    score: float
    vector_score: float | None
    keyword_score: float | None


def _effective_model(base: KnowledgeBase) -> str:
    return base.embedding_model or default_embedding_model()


@process_memo(maxsize=512)
def embed_query(*, model: str, query: str) -> list[float]:
    """Query vectors are kept per process (LRU): the same question asked again, or asked of
    several bases, is embedded once. Callers must not mutate the returned list."""
    return get_embedder(model).embed([query])[0]


def search(
    *,
    knowledge_bases: list[KnowledgeBase],
    query: str,
    top_k: int,
    score_threshold: float = 0.0,
    mode: Mode = "hybrid",
    use_cache: bool = True,
) -> list[Hit]:
    query = query.strip()
    if not query or not knowledge_bases or top_k <= 0:
        return []
    kb_ids = sorted(b.id for b in knowledge_bases)
    parts = {
        "q": query,
        "mode": mode,
        "k": top_k,
        "t": score_threshold,
        "models": sorted({_effective_model(b) for b in knowledge_bases}),
    }
    seen = None
    if use_cache:
        cached, seen = retrieval_cache.results_get(kb_ids=kb_ids, parts=parts)
        if cached is not None:
            return _hydrate(cached, kb_ids=kb_ids, top_k=top_k)
    ranked = _rank(
        knowledge_bases=knowledge_bases,
        query=query,
        top_k=top_k,
        score_threshold=score_threshold,
        mode=mode,
    )
    hits = _hydrate(ranked, kb_ids=kb_ids, top_k=top_k)
    if use_cache:
        retrieval_cache.results_set(
            kb_ids=kb_ids,
            parts=parts,
            value=[(h.chunk.id, h.score, h.vector_score, h.keyword_score) for h in hits],
            seen=seen,
        )
    return hits


def _rank(
    *,
    knowledge_bases: list[KnowledgeBase],
    query: str,
    top_k: int,
    score_threshold: float,
    mode: Mode,
) -> list[tuple[int, float, float | None, float | None]]:
    store = get_vector_store()
    candidates = max(top_k * 4, 20)
    groups: dict[str, list[KnowledgeBase]] = {}
    for base in knowledge_bases:
        groups.setdefault(_effective_model(base), []).append(base)

    fused: dict[int, float] = {}
    vector_scores: dict[int, float] = {}
    keyword_scores: dict[int, float] = {}
    best_possible = 0.0
    for model, bases in groups.items():
        ids = [b.id for b in bases]
        embedder = get_embedder(model)
        collection = store.ensure_collection(model=model, dimension=embedder.dimension)
        dense = sparse = None
        keyword = None
        if mode in ("hybrid", "keyword") and store.supports_bm25:
            # The keyword search waits on the store while this thread embeds the query and
            # runs the vector search: a hybrid search takes the longer of the two paths, not
            # their sum.
            keyword = store.search_keyword_async(
                collection=collection, query=query, kb_ids=ids, limit=candidates
            )
        if mode in ("hybrid", "vector"):
            dense = store.search_vector(
                collection=collection,
                vector=embed_query(model=model, query=query),
                kb_ids=ids,
                limit=candidates,
            )
        if keyword is not None:
            sparse = keyword.result()
        elif mode in ("hybrid", "keyword"):
            gens = retrieval_cache.generations(ids)
            indexes = [base_index(kb_id=i, generation=gens[i]) for i in ids]
            sparse = bm25_search(indexes, query, limit=candidates)
        vector_weight, keyword_weight = _weights(embedder, query, dense, sparse)
        lists = []
        if dense is not None:
            lists.append((vector_weight, dense, vector_scores))
        if sparse is not None:
            lists.append((keyword_weight, sparse, keyword_scores))
        best_possible = max(best_possible, sum(w for w, _, _ in lists) / (RRF_K + 1))
        for weight, ranking, scores in lists:
            for rank, (chunk_id, score) in enumerate(ranking, start=1):
                scores[chunk_id] = score
                fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (RRF_K + rank)

    ranked = []
    for chunk_id, value in sorted(fused.items(), key=lambda item: (-item[1], item[0])):
        vector_score = vector_scores.get(chunk_id)
        keyword_score = keyword_scores.get(chunk_id)
        # The threshold is on meaning (cosine similarity); keyword matches are always kept,
        # because BM25 scores have no absolute scale to cut at.
        if keyword_score is None and (vector_score or 0.0) < score_threshold:
            continue
        score = round(value / best_possible, 4) if best_possible else 0.0
        ranked.append((chunk_id, score, vector_score, keyword_score))
    return ranked


def _weights(embedder, query: str, dense, sparse) -> tuple[float, float]:
    """(vector weight, keyword weight) for one model's two rankings (None: not searched)."""
    if dense is None or sparse is None:
        return 1.0, 1.0
    if not reads_chinese(embedder) and (contains_cjk(query) or _mostly_chinese(dense, sparse)):
        return TIEBREAK_WEIGHT, 1.0
    top_dense = {chunk_id for chunk_id, _ in dense[:AGREEMENT_DEPTH]}
    top_sparse = {chunk_id for chunk_id, _ in sparse[:AGREEMENT_DEPTH]}
    agreement = len(top_dense & top_sparse) / AGREEMENT_DEPTH
    return 1.0, KEYWORD_WEIGHT * max(AGREEMENT_FLOOR, agreement)


def _mostly_chinese(dense, sparse) -> bool:
    """Whether most candidate passages are Chinese (one query; only asked for a Latin query
    and an embedder that cannot read Chinese)."""
    candidates = {chunk_id for chunk_id, _ in dense} | {chunk_id for chunk_id, _ in sparse}
    # Only the openings are read: a passage's first 200 characters tell its language.
    heads = (
        Chunk.objects.filter(id__in=candidates)
        .annotate(head=Substr("text", 1, 200))
        .values_list("head", flat=True)
    )
    return 2 * sum(1 for head in heads if contains_cjk(head)) > len(candidates)


def _hydrate(ranked, *, kb_ids: list[int], top_k: int) -> list[Hit]:
    """Hits for the first `top_k` ranked ids that still have a row. Rows are read for those
    ids only (a hybrid search ranks up to eight times as many candidates; building their
    Chunk and Document objects was a third of its time in a profile); only when some of them
    are gone (a delete in flight) is the next slice read."""
    hits: list[Hit] = []
    start = 0
    while len(hits) < top_k and start < len(ranked):
        window = ranked[start : start + top_k - len(hits)]
        start += len(window)
        # No status filter: a document has chunks only while it is ready or re-indexing from
        # ready.
        chunks = Chunk.objects.filter(
            id__in=[row[0] for row in window], knowledge_base_id__in=kb_ids
        ).select_related("document")
        by_id = {c.id: c for c in chunks}
        for chunk_id, score, vector_score, keyword_score in window:
            chunk = by_id.get(chunk_id)
            if chunk is not None:
                hits.append(Hit(chunk, score, vector_score, keyword_score))
    return hits


def default_top_k() -> int:
    return settings.KNOWLEDGE_TOP_K
