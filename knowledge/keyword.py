"""BM25 over the Chunk table, for vector stores without full-text search (Milvus < 2.5).

Chinese is cut into words with jieba (search mode, which also emits the shorter words inside
long ones); Latin text is lower-cased words. Each base's index is built once per process and
reused until the base's retrieval generation changes (any document added, re-indexed or
deleted), so a stale index can never surface a deleted chunk.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

from openspark.core.state import on_reset

_WORD = re.compile(r"[\w\u3400-\u4dbf\u4e00-\u9fff]", re.UNICODE)
K1 = 1.5
B = 0.75
_jieba_lock = threading.Lock()
_jieba_ready = False


def tokenize(text: str) -> list[str]:
    global _jieba_ready
    import jieba

    if not _jieba_ready:
        with _jieba_lock:
            if not _jieba_ready:
                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _jieba_ready = True
    return [t for t in jieba.lcut_for_search(text.lower()) if _WORD.search(t)]


@dataclass
class BaseIndex:
    chunk_ids: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    postings: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @classmethod
    def build(cls, rows: list[tuple[int, str]]) -> BaseIndex:
        index = cls()
        for position, (chunk_id, text) in enumerate(rows):
            counts = Counter(tokenize(text))
            index.chunk_ids.append(chunk_id)
            index.lengths.append(sum(counts.values()))
            for term, tf in counts.items():
                index.postings.setdefault(term, []).append((position, tf))
        return index


def bm25_search(indexes: list[BaseIndex], query: str, *, limit: int) -> list[tuple[int, float]]:
    """[(chunk_id, score)] over the union of the given bases' chunks, best first."""
    terms = set(tokenize(query))
    total_docs = sum(len(i.chunk_ids) for i in indexes)
    if not terms or not total_docs:
        return []
    avg_len = sum(sum(i.lengths) for i in indexes) / total_docs or 1.0
    scores: dict[int, float] = {}
    for term in terms:
        df = sum(len(i.postings.get(term, ())) for i in indexes)
        if not df:
            continue
        idf = math.log(1 + (total_docs - df + 0.5) / (df + 0.5))
        for index in indexes:
            for position, tf in index.postings.get(term, ()):
                norm = tf * (K1 + 1) / (tf + K1 * (1 - B + B * index.lengths[position] / avg_len))
                chunk_id = index.chunk_ids[position]
                scores[chunk_id] = scores.get(chunk_id, 0.0) + idf * norm
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:limit]


_indexes: dict[int, tuple[str, BaseIndex]] = {}
_indexes_lock = threading.Lock()
on_reset(_indexes.clear)


def base_index(*, kb_id: int, generation: str) -> BaseIndex:
    from .models import Chunk

    with _indexes_lock:
        cached = _indexes.get(kb_id)
    if cached and cached[0] == generation:
        return cached[1]
    rows = list(
        Chunk.objects.filter(knowledge_base_id=kb_id).order_by("id").values_list("id", "text")
    )
    index = BaseIndex.build(rows)
    with _indexes_lock:
        _indexes[kb_id] = (generation, index)
    return index
