"""The `retrieval` cache namespace: query → ranked chunk ids, invalidated per base.

Every base has a generation token; a cached result's key includes the tokens of all the bases
it searched, so bumping one base's token (upload, re-index, delete, settings change) makes
every result that touched it unreachable at once. Cached values hold only ids and scores:
texts are always read from the database, so even a result cached a moment before a delete
cannot show the deleted text.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid

from django.conf import settings
from django.core.cache import cache

NAMESPACE = "retrieval"


def _generation_key(kb_id: int) -> str:
    return f"{NAMESPACE}:gen:{int(kb_id)}"


def generations(kb_ids: list[int]) -> dict[int, str]:
    keys = {_generation_key(i): i for i in kb_ids}
    found = cache.get_many(list(keys))
    result = {}
    for key, kb_id in keys.items():
        token = found.get(key)
        if token is None:
            # Unknown (first use, eviction, or Redis down): a fresh token can only cause a miss.
            token = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
            cache.add(key, token, timeout=None)
            token = cache.get(key) or token
        result[kb_id] = token
    return result


def bump(kb_id: int) -> None:
    cache.set(_generation_key(kb_id), f"{time.time_ns()}-{uuid.uuid4().hex[:8]}", timeout=None)


def result_key(*, parts: dict) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f"{NAMESPACE}:q:{digest}"


def get(key: str):
    return cache.get(key)


def put(key: str, value) -> None:
    cache.set(key, value, timeout=settings.KNOWLEDGE_RETRIEVAL_CACHE_TTL)
