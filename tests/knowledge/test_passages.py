"""The citation view: a cited passage with its neighbours, read through the `document_content`
cache (the operations issue: the namespace the plan names was configured but unused), from
bases the caller may read only; and the retrieval cache going through the same cache layer, so
its statistics and purge see it."""

import pytest
from rest_framework.test import APIClient

from knowledge import retrieval
from knowledge.models import Chunk
from knowledge.services import knowledge_base_create, knowledge_base_update
from openspark.core.cache import cache_purge, stats_get
from openspark.core.cache.warmup import cache_warm_hot_documents_run
from tests.knowledge.conftest import ingest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("embedder")]

TEXT = (
    b"The lighthouse keeper climbs the stairs at dusk. He lights the lamp and winds the clock. "
    b"At midnight he logs the weather in the book. At dawn he puts the lamp out and sleeps. "
    b"Visitors may climb the tower on Sundays. The gift shop sells postcards of the lamp."
)


def _stats(name: str) -> dict:
    return next(ns for ns in stats_get()["namespaces"] if ns["name"] == name)


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def base(user):
    base = knowledge_base_create(owner=user, name="Lighthouse")
    base.chunk_size, base.chunk_overlap = 100, 0
    base.save(update_fields=["chunk_size", "chunk_overlap"])
    ingest(base, user, "keeper.txt", TEXT)
    return base


def test_a_passage_comes_with_its_neighbours_and_from_the_cache(user, base):
    chunks = list(Chunk.objects.filter(knowledge_base=base).order_by("ordinal"))
    assert len(chunks) >= 3
    middle = chunks[1]
    first = _client(user).get(f"/api/v1/knowledge/chunks/{middle.id}/")
    assert first.status_code == 200, first.content
    body = first.json()
    assert body["text"] == middle.text and body["document_title"] == "keeper.txt"
    assert [p["chunk_id"] for p in body["before"]] == [chunks[0].id]
    assert [p["chunk_id"] for p in body["after"]] == [chunks[2].id]
    misses = _stats("document_content")["misses"]
    again = _client(user).get(f"/api/v1/knowledge/chunks/{chunks[0].id}/").json()
    assert again["before"] == [] and again["after"][0]["chunk_id"] == middle.id
    content = _stats("document_content")
    assert content["hits"] >= 1 and content["misses"] == misses  # the same document, cached


def test_another_users_passage_is_not_found_and_anonymous_is_refused(user, other_user, base):
    chunk = Chunk.objects.filter(knowledge_base=base).first()
    response = _client(other_user).get(f"/api/v1/knowledge/chunks/{chunk.id}/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert "lighthouse" not in response.content.decode().lower()
    assert APIClient().get(f"/api/v1/knowledge/chunks/{chunk.id}/").status_code == 401


def test_re_chunking_the_base_replaces_the_cached_passages(
    user, base, django_capture_on_commit_callbacks
):
    old = Chunk.objects.filter(knowledge_base=base).order_by("ordinal").first()
    assert _client(user).get(f"/api/v1/knowledge/chunks/{old.id}/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        knowledge_base_update(
            knowledge_base=base, user=user, data={"chunk_size": 400, "chunk_overlap": 0}
        )
    ingest_again = base.documents.get()
    from knowledge.services import document_vectorize

    with django_capture_on_commit_callbacks(execute=True):
        document_vectorize(document_id=ingest_again.id)
    new = Chunk.objects.filter(knowledge_base=base).order_by("ordinal").first()
    body = _client(user).get(f"/api/v1/knowledge/chunks/{new.id}/").json()
    assert body["text"] == new.text and len(body["text"]) > len(old.text)
    assert _client(user).get(f"/api/v1/knowledge/chunks/{old.id}/").status_code == 404


def test_hot_documents_are_warmed_into_document_content(user, base):
    chunk = Chunk.objects.filter(knowledge_base=base).first()
    _client(user).get(f"/api/v1/knowledge/chunks/{chunk.id}/")  # read: now a hot document
    cache_purge("document_content")
    assert cache_warm_hot_documents_run() >= 1
    misses = _stats("document_content")["misses"]
    _client(user).get(f"/api/v1/knowledge/chunks/{chunk.id}/")
    assert _stats("document_content")["misses"] == misses  # served warm


def test_retrieval_results_are_in_the_cache_layer(user, base):
    hits = _stats("retrieval")["hits"]
    for _ in range(2):
        retrieval.search(knowledge_bases=[base], query="when does he log the weather", top_k=3)
    assert _stats("retrieval")["hits"] == hits + 1
    assert cache_purge("retrieval") >= 1  # staff purge reaches it
