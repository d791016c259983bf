"""`manage.py rebuild_vectors`: the vector store is derived data, rebuilt from Chunk rows."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from knowledge import retrieval
from knowledge.services import knowledge_base_create
from knowledge.vectorstore import get_vector_store
from tests.knowledge.conftest import ingest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("embedder")]


def test_rebuild_vectors_restores_search_after_vector_loss(user):
    base = knowledge_base_create(owner=user, name="Ops")
    document = ingest(base, user, "runbook.md", b"# Restart\n\nRestart the queue with make bounce.")
    store = get_vector_store()
    collection = store.collection_name(model=base.embedding_model, dimension=384)
    store.delete_knowledge_base(base.id)  # the vector store lost its data
    assert store.count(collection=collection, expression=f"kb_id == {base.id}") == 0
    assert retrieval.search(knowledge_bases=[base], query="restart queue", top_k=3, mode="vector",
                            use_cache=False) == []  # fmt: skip

    out = io.StringIO()
    call_command("rebuild_vectors", stdout=out)
    assert f"{document.chunk_count} vectors written" in out.getvalue()
    assert store.count(collection=collection, expression=f"kb_id == {base.id}") == (
        document.chunk_count
    )
    hits = retrieval.search(
        knowledge_bases=[base], query="how to restart the queue", top_k=3, use_cache=False
    )
    assert hits[0].chunk.document_id == document.id
