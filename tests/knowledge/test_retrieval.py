# ruff: noqa: RUF001 - Chinese test data uses full-width punctuation on purpose
"""Retrieval: the chat hook's contract, hybrid ranking for Chinese with an English-only
embedder, the token budget, and cache invalidation."""

from __future__ import annotations

import pytest

from knowledge import retrieval
from knowledge.selectors import passages_for_query
from knowledge.services import document_delete, knowledge_base_create
from openspark.core.errors import NotFound
from openspark.llm.base import Passage, estimate_tokens
from tests.knowledge.conftest import ingest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("embedder")]

# Short Chinese FAQ entries (each its own document) about different insurance topics.
ZH_DOCS = {
    "犹豫期.txt": "投保人在收到保险合同后有十五天的犹豫期，犹豫期内退保可以退还全部保费。",
    "理赔.txt": "发生保险事故后，被保险人应当在三十日内通知保险公司并提交理赔申请材料。",
    "宽限期.txt": "分期支付保费的，投保人逾期未交保费，自应交日起六十日为宽限期。",
    "免责.txt": "因被保险人故意犯罪或者醉酒驾驶导致的伤残，保险公司不承担给付保险金的责任。",
    "受益人.txt": "被保险人或者投保人可以指定一人或者数人为身故保险金受益人。",
}


@pytest.fixture
def zh_base(user):
    base = knowledge_base_create(owner=user, name="保险")
    for name, text in ZH_DOCS.items():
        assert ingest(base, user, name, text.encode()).status == "ready"
    return base


def test_chinese_queries_rank_by_keywords_when_the_embedder_reads_only_english(user, zh_base):
    """MiniLM cannot read Chinese, so its ranking must not drag the keyword ranking down."""
    questions = {
        "犹豫期内退保能退多少保费？": "犹豫期.txt",
        "出险以后多久要通知保险公司理赔？": "理赔.txt",
        "保费晚交了有宽限期吗": "宽限期.txt",
        "醉酒驾驶受伤保险公司赔吗": "免责.txt",
        "身故保险金的受益人怎么指定": "受益人.txt",
    }
    hybrid_top = {}
    for question, expected in questions.items():
        hits = retrieval.search(knowledge_bases=[zh_base], query=question, top_k=3)
        keyword = retrieval.search(
            knowledge_bases=[zh_base], query=question, top_k=3, mode="keyword"
        )
        assert keyword[0].chunk.document.title == expected
        hybrid_top[question] = hits[0].chunk.document.title
        # Hybrid keeps the keyword order; vector evidence is attached, not in charge.
        assert [h.chunk.id for h in hits[: len(keyword)]] == [h.chunk.id for h in keyword]
        assert hits[0].keyword_score is not None and hits[0].vector_score is not None
    assert hybrid_top == questions


def test_english_query_over_chinese_passages_ranks_by_keywords(user):
    """An English (or Latin-only) question about a Chinese base is still a case MiniLM cannot
    read: the passages decide, not only the query, so keywords keep the lead."""
    base = knowledge_base_create(owner=user, name="mixed")
    ingest(base, user, "gzip.txt", "gzip 压缩文件，gunzip 解压 gzip 格式的文件。".encode())
    ingest(base, user, "tar.txt", "tar 打包多个文件为一个归档文件。".encode())
    chunk_ids = list(base.chunks.values_list("id", flat=True))
    dense = [(chunk_ids[-1], 0.9)]
    sparse = [(chunk_id, 1.0) for chunk_id in chunk_ids]
    embedder = retrieval.get_embedder("")
    assert retrieval._weights(embedder, "gunzip", dense, sparse) == (
        retrieval.TIEBREAK_WEIGHT,
        1.0,
    )
    hits = retrieval.search(knowledge_bases=[base], query="gunzip", top_k=2)
    keyword = retrieval.search(knowledge_bases=[base], query="gunzip", top_k=2, mode="keyword")
    assert [h.chunk.id for h in hits[: len(keyword)]] == [h.chunk.id for h in keyword]


def test_keyword_weight_follows_the_rankings_agreement(user):
    base = knowledge_base_create(owner=user, name="english")
    for name in ("a.txt", "b.txt", "c.txt"):
        ingest(base, user, name, f"Plain English text about the {name[0]} command.".encode())
    ids = list(base.chunks.values_list("id", flat=True))
    embedder = retrieval.get_embedder("")
    full, floor = retrieval.KEYWORD_WEIGHT, retrieval.KEYWORD_WEIGHT * retrieval.AGREEMENT_FLOOR
    dense = [(i, 0.5) for i in ids]
    # Disjoint top lists: the floor; the same top ten: the full weight; in between: the share.
    assert retrieval._weights(embedder, "q", dense, [(10**9, 1.0)]) == (1.0, floor)
    same = [(i, 1.0) for i in range(10)]
    assert retrieval._weights(embedder, "q", same, same) == (1.0, full)
    half = same[:5] + [(100 + i, 1.0) for i in range(5)]
    assert retrieval._weights(embedder, "q", same, half) == (1.0, full * 0.5)
    # One ranking only (vector or keyword mode): it counts fully.
    assert retrieval._weights(embedder, "q", dense, None) == (1.0, 1.0)


def test_passages_for_query_contract(user, other_user, zh_base, settings):
    passages = passages_for_query(
        user=user, knowledge_base_ids=[zh_base.id], query="犹豫期退保", top_k=3
    )
    assert [p.index for p in passages] == list(range(1, len(passages) + 1))
    assert all(isinstance(p, Passage) for p in passages)
    first = passages[0]
    assert first.document_title == "犹豫期.txt" and "十五天" in first.text
    assert first.score == max(p.score for p in passages) > 0
    assert isinstance(first.chunk_id, int) and isinstance(first.document_id, int)

    # Other users: a NotFound for the private base, however it is asked for.
    with pytest.raises(NotFound):
        passages_for_query(user=other_user, knowledge_base_ids=[zh_base.id], query="犹豫期")
    assert passages_for_query(user=user, knowledge_base_ids=[], query="犹豫期") == []

    # The token budget holds for the whole context, trimming the last passage if needed.
    settings.KNOWLEDGE_CONTEXT_TOKEN_BUDGET = 60
    trimmed = passages_for_query(
        user=user, knowledge_base_ids=[zh_base.id], query="保险公司 保费 保险金", top_k=5
    )
    assert 1 <= len(trimmed) < 5
    assert sum(estimate_tokens(p.text) for p in trimmed) <= 60


def test_score_threshold_drops_weak_meaning_only_matches(user):
    base = knowledge_base_create(owner=user, name="Facts")
    ingest(base, user, "a.txt", b"Photosynthesis converts sunlight, water and CO2 into sugar.")
    ingest(base, user, "b.txt", b"The Treaty of Westphalia ended the Thirty Years War in 1648.")
    query = "how do plants make food from light"
    loose = retrieval.search(knowledge_bases=[base], query=query, top_k=5, score_threshold=-1)
    assert [h.chunk.document.title for h in loose][:1] == ["a.txt"] and len(loose) == 2
    strict = retrieval.search(knowledge_bases=[base], query=query, top_k=5, score_threshold=0.3)
    assert [h.chunk.document.title for h in strict] == ["a.txt"]


def test_results_are_cached_and_invalidated_when_the_base_changes(
    user, zh_base, django_capture_on_commit_callbacks
):
    query = "理赔申请材料"
    first = retrieval.search(knowledge_bases=[zh_base], query=query, top_k=3)
    assert first[0].chunk.document.title == "理赔.txt"

    # A cached answer does not touch Milvus: prove it by searching with the store gone.
    from knowledge import vectorstore

    real = vectorstore.get_vector_store
    vectorstore_calls = []
    retrieval.get_vector_store = lambda: vectorstore_calls.append(1) or real()
    try:
        again = retrieval.search(knowledge_bases=[zh_base], query=query, top_k=3)
        assert [h.chunk.id for h in again] == [h.chunk.id for h in first]
        assert vectorstore_calls == []

        # Deleting the document changes the base (its scope is bumped once the delete
        # commits): the next search is computed afresh.
        with django_capture_on_commit_callbacks(execute=True):
            document_delete(document=first[0].chunk.document)
        after = retrieval.search(knowledge_bases=[zh_base], query=query, top_k=3)
        assert vectorstore_calls == [1]
        assert all(h.chunk.document.title != "理赔.txt" for h in after)
    finally:
        retrieval.get_vector_store = real


FACTS = {
    "photosynthesis.txt": b"Photosynthesis converts sunlight, water and CO2 into sugar.",
    "westphalia.txt": b"The Treaty of Westphalia ended the Thirty Years War in 1648.",
    "tides.txt": b"Tides rise and fall twice a day because of the pull of the Moon.",
}
QUESTIONS = {
    "how do plants make food from light": "photosynthesis.txt",
    "which peace ended the war in 1648": "westphalia.txt",
    "why does the sea level change every day": "tides.txt",
}


@pytest.mark.parametrize(("documents", "queries"), [("int8", "int8"), ("fp32", "int8"),
                                                     ("int8", "fp32")])  # fmt: skip
def test_int8_embedder_finds_the_right_document_in_bases_of_either_precision(
    user, settings, documents, queries
):
    settings.KNOWLEDGE_LOCAL_EMBED_PRECISION = documents
    base = knowledge_base_create(owner=user, name="Facts")
    for name, text in FACTS.items():
        assert ingest(base, user, name, text).status == "ready"
    settings.KNOWLEDGE_LOCAL_EMBED_PRECISION = queries
    # The setting change forgets the process's query vectors (embed_query is a process_memo).
    for query, expected in QUESTIONS.items():
        hits = retrieval.search(
            knowledge_bases=[base], query=query, top_k=3, mode="vector", score_threshold=-1,
            use_cache=False,
        )  # fmt: skip
        assert hits[0].chunk.document.title == expected, (query, hits)
