"""No stale read under concurrency: this process writes 1,000 times through the service while
it reads the same data 1,000+ times through the ASGI server (another process, which caches).
Every read must show at least every write that had returned before the read was sent."""

import threading

import httpx
import pytest
from django.db import connection

from accounts.services import api_key_create
from conversations.models import Conversation
from conversations.services import conversation_update
from openspark.core.cache import stats_get
from tests.cache.conftest import ns_stats, unlimited

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WRITES = 1000


def test_interleaved_writes_and_reads_never_see_stale_data(asgi_server, user):
    unlimited(user)
    conversation = Conversation.objects.create(owner=user, title="v0")
    _key, raw = api_key_create(user=user, name="race")
    client = httpx.Client(base_url=asgi_server.url, headers={"Authorization": f"Bearer {raw}"})
    written = 0  # the last write whose service call has returned (committed and bumped)
    done = threading.Event()
    errors: list[BaseException] = []

    def writer():
        nonlocal written
        try:
            for n in range(1, WRITES + 1):
                conversation_update(user=user, conversation_id=conversation.id, title=f"v{n}")
                written = n
        except BaseException as error:  # surfaced by the main thread
            errors.append(error)
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads, stale = 0, []
    while not done.is_set() or reads < WRITES:
        floor = written
        response = client.get("/api/v1/conversations/")
        assert response.status_code == 200, response.text
        seen = int(response.json()["results"][0]["title"][1:])
        if seen < floor:
            stale.append((floor, seen))
        reads += 1
    thread.join()
    assert not errors, errors
    assert stale == []
    assert written == WRITES
    assert client.get("/api/v1/conversations/").json()["results"][0]["title"] == f"v{WRITES}"
    listing = ns_stats(stats_get(), "user_conversations")
    # The reads really went through the cache: some were served from it, the rest recomputed.
    assert listing["hits"] > 0 and listing["misses"] > 0
    assert listing["hits"] + listing["misses"] == reads + 1
