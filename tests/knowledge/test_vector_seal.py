"""Milvus Lite sealing: freshly ingested vectors are searchable at once (from Lite's memtable)
and sealed into one indexed segment when the burst of uploads ends — by the ingestion that
finishes last, or after a quiet period for writers outside the queue — which changes no
ranking; bulk writes seal at once past a row count; the sweep seals what a writer left."""

from __future__ import annotations

import time

import pytest

from knowledge import retrieval, vectorstore
from knowledge.embedders import LOCAL_MODEL
from knowledge.services import documents_upload, knowledge_base_create, knowledge_sweep
from knowledge.tasks import vectorize_document
from knowledge.vectorstore import VectorRow, get_vector_store
from tests.knowledge.conftest import ingest, upload, wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("embedder")]

DOCS = {
    "tides.txt": "Tides rise and fall twice a day because the moon's gravity pulls the oceans.",
    "bread.txt": "Sourdough bread rises slowly: wild yeast ferments the dough overnight.",
    "comets.txt": "A comet grows a glowing tail of gas and dust when it passes near the sun.",
}


def _collection() -> str:
    return get_vector_store().ensure_collection(model=LOCAL_MODEL, dimension=384)


def _ranking(base, query: str, mode: str) -> list[tuple[int, float]]:
    hits = retrieval.search(
        knowledge_bases=[base], query=query, top_k=3, mode=mode, use_cache=False
    )
    return [(hit.chunk.document_id, hit.score) for hit in hits]


def test_the_ingestion_that_ends_a_burst_seals_it(user, settings):
    settings.KNOWLEDGE_VECTOR_SEAL_DELAY = 3600  # only the queue running dry seals here
    store = get_vector_store()
    base = knowledge_base_create(owner=user, name="queue")
    files = [upload(name, text.encode()) for name, text in DOCS.items()]
    *first, last = documents_upload(knowledge_base=base, user=user, files=files)
    for document, task_id in first:
        vectorize_document.apply(args=[document.id], task_id=task_id)
        # Others still wait: the burst goes on, its rows stay together, already searchable.
        assert store.unsealed_rows(_collection()) > 0
    assert _ranking(base, "wild yeast dough", "keyword")[0][0] == first[1][0].id
    document, task_id = last
    vectorize_document.apply(args=[document.id], task_id=task_id)
    assert store.unsealed_rows(_collection()) == 0
    assert _ranking(base, "comet tail of gas", "hybrid")[0][0] == document.id


def test_a_burst_outside_the_queue_is_sealed_once_it_goes_quiet(user, settings):
    settings.KNOWLEDGE_VECTOR_SEAL_DELAY = 1.0
    store = get_vector_store()
    base = knowledge_base_create(owner=user, name="facts")
    documents = {name: ingest(base, user, name, text.encode()) for name, text in DOCS.items()}
    assert all(d.status == "ready" for d in documents.values())
    # Still one burst: written, not sealed, and already found in every mode.
    assert store.unsealed_rows(_collection()) >= len(DOCS)
    before = {
        mode: _ranking(base, "why do tides rise and fall", mode)
        for mode in ("vector", "keyword", "hybrid")
    }
    for ranking in before.values():
        assert ranking[0][0] == documents["tides.txt"].id

    wait_for(lambda: store.unsealed_rows(_collection()) == 0, timeout=15)
    # One segment for the burst: every ranking and score exactly as before.
    for mode, ranking in before.items():
        assert _ranking(base, "why do tides rise and fall", mode) == ranking
    assert _ranking(base, "wild yeast dough", "keyword")[0][0] == documents["bread.txt"].id


def test_each_write_restarts_the_quiet_period(user, settings):
    settings.KNOWLEDGE_VECTOR_SEAL_DELAY = 1.5
    store = get_vector_store()
    base = knowledge_base_create(owner=user, name="burst")
    started = time.monotonic()
    for name, text in DOCS.items():
        ingest(base, user, name, text.encode())
    wait_for(lambda: store.unsealed_rows(_collection()) == 0, timeout=15, interval=0.05)
    # Sealed once, after the last write: not before a full quiet period had passed.
    assert time.monotonic() - started >= 1.5


def test_bulk_writes_seal_at_once_past_the_row_limit(monkeypatch, settings):
    settings.KNOWLEDGE_VECTOR_SEAL_DELAY = 3600
    monkeypatch.setattr(vectorstore, "LITE_SEAL_ROWS", 4)
    store = get_vector_store()
    collection = _collection()
    vector = [1.0] + [0.0] * 383
    rows = [VectorRow(900_000 + i, 9_999, 9_999, "bulk row", vector) for i in range(3)]
    store.upsert(collection=collection, rows=rows)
    assert store.unsealed_rows(collection) == 3
    more = [VectorRow(900_010 + i, 9_999, 9_999, "bulk row", vector) for i in range(2)]
    store.upsert(collection=collection, rows=more)
    assert store.unsealed_rows(collection) == 0
    found = store.search_vector(collection=collection, vector=vector, kb_ids=[9_999], limit=10)
    assert {chunk_id for chunk_id, _ in found} == {row.chunk_id for row in rows + more}


def test_the_sweep_seals_what_a_writer_left_unsealed(user, settings):
    settings.KNOWLEDGE_VECTOR_SEAL_DELAY = 3600  # the writer's timer never fires here
    store = get_vector_store()
    base = knowledge_base_create(owner=user, name="left over")
    document = ingest(base, user, "comets.txt", DOCS["comets.txt"].encode())
    assert store.unsealed_rows(_collection()) > 0
    knowledge_sweep()
    assert store.unsealed_rows(_collection()) == 0
    assert _ranking(base, "comet tail", "keyword")[0][0] == document.id
