"""A collection another process is creating (created, not yet indexed: creation takes several
calls) is skipped by sweeps and deletes until it has its index, and finished by whoever needs
it if its creator died before indexing it (found by the scale-out test: the knowledge sweep
failed with "index not found" while a web server created the collection)."""

import pytest

from knowledge.services import vectors_remove_orphans
from knowledge.vectorstore import VectorRow, get_vector_store


@pytest.mark.django_db
def test_an_unindexed_collection_is_skipped_then_finished():
    store = get_vector_store()
    name = store.collection_name(model="creation-race", dimension=8)
    store.client.create_collection(name, schema=store.collection_schema(8))  # no index yet
    try:
        assert store.load(name) is False
        store.delete_document(1)  # no "index not found"
        assert vectors_remove_orphans() == 0

        assert store.ensure_collection(model="creation-race", dimension=8, creator_wait=0.3) == name
        assert store.load(name) is True
        vector = [1.0] + [0.0] * 7
        store.upsert(collection=name, rows=[VectorRow(7, 1, 3, "text", vector)])
        assert store.search_vector(collection=name, vector=vector, kb_ids=[1], limit=1)[0][0] == 7
    finally:
        store.client.drop_collection(name)
