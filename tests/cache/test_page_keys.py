"""Cached pages are keyed by the page and page size DRF's paginator reads, not by how the
query string spells them: every spelling of one page shares one cache entry."""

import pytest
from django_redis import get_redis_connection

from conversations.models import Conversation
from openspark.core.cache import stats_get
from tests.cache.conftest import ns_stats

pytestmark = pytest.mark.django_db

LIST = "/api/v1/conversations/"


def _entries(namespace: str) -> set[bytes]:
    return set(get_redis_connection("default").scan_iter(f"*:c:{namespace}:*", count=1000))


def _counts(namespace: str) -> tuple[int, int]:
    stats = ns_stats(stats_get(), namespace)
    return stats["misses"], stats["hits"]


def test_every_spelling_of_a_page_shares_one_cache_entry(auth_client, user):
    Conversation.objects.bulk_create(
        Conversation(owner=user, title=f"c{n}") for n in range(25)
    )  # fmt: skip
    first_page = [
        "", "?page=1", "?page=001", "?page=+1", "?page_size=20&page=1", "?page=1&page_size=20",
        "?page_size=020", "?page_size=0", "?page_size=-5", "?page_size=abc",  # DRF: the default
    ]  # fmt: skip
    bodies = []
    for query in first_page:
        response = auth_client.get(LIST + query)
        assert response.status_code == 200, (query, response.content)
        bodies.append(response.json()["results"])
    assert all(body == bodies[0] for body in bodies) and len(bodies[0]) == 20
    assert _counts("user_conversations") == (1, len(first_page) - 1)
    assert len(_entries("user_conversations")) == 1

    # Sizes past the paginator's maximum are its maximum (DRF cuts them off): one entry.
    for query in ("?page_size=200", "?page_size=99999", "?page_size=00200&page=01"):
        assert len(auth_client.get(LIST + query).json()["results"]) == 25
    assert _counts("user_conversations") == (2, len(first_page) + 1)
    assert len(_entries("user_conversations")) == 2


def test_pages_that_are_not_page_numbers_get_drfs_404_without_touching_the_cache(auth_client, user):
    Conversation.objects.create(owner=user, title="only")
    for query in ("?page=0", "?page=-1", "?page=abc", "?page=1.0", "?page="):
        response = auth_client.get(LIST + query)
        expected = 200 if query == "?page=" else 404  # empty: DRF's page 1
        assert response.status_code == expected, query
        if expected == 404:
            assert response.json()["error"]["code"] == "not_found"
    assert _counts("user_conversations") == (1, 0)  # only the empty one, page 1
    # A page past the end is a page number: looked up, computed, refused, and not kept.
    assert auth_client.get(LIST + "?page=2").status_code == 404
    assert _counts("user_conversations") == (2, 0)
    assert len(_entries("user_conversations")) == 1
