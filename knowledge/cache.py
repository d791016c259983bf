"""The knowledge app's cached reads, through the project's cache layer (openspark.core.cache),
so its statistics, purge and warm-up see them:

- `retrieval`: a query's ranked chunk ids and scores, under the version of every base it
  searched (scope `kb:<id>`). A write to a base (upload, re-index, delete, settings) bumps
  its scope after commit, which makes every result that touched the base unreachable.
  Values hold only ids and scores: texts are always read from rows (or `document_content`),
  so a result cached a moment before a delete cannot show the deleted text.
- `document_content`: a document's passages (chunk ids, order, text, page, section), for the
  citation view; under the same base scope, so re-chunking a document (which bumps its
  base) replaces them. Counted as hot per document, for the warm-up of the most read ones.

The same base version names the generation of the in-process keyword index used when the
Milvus server has no BM25 (knowledge/keyword.py)."""

from __future__ import annotations

import hashlib
import json
import uuid

from openspark.core.cache import (
    DOCUMENT_CONTENT,
    RETRIEVAL,
    cache_bump,
    cache_get_or_set,
    cache_scope_versions,
    cache_value_read,
    cache_value_set,
)
from openspark.core.cache.service import Seen


def knowledge_base_scope(kb_id: int) -> tuple[str, int]:
    return ("kb", int(kb_id))


def bump(kb_id: int) -> None:
    """A base's cached reads are stale (after the current transaction commits)."""
    cache_bump(scope=knowledge_base_scope(kb_id))


def generations(kb_ids: list[int]) -> dict[int, str]:
    """Each base's current version; a fresh token when Redis cannot answer (a token no one
    has seen can only cause a rebuild, never a stale read)."""
    versions = cache_scope_versions(scopes=[knowledge_base_scope(i) for i in kb_ids])
    if versions is None:
        token = uuid.uuid4().hex
        return {kb_id: token for kb_id in kb_ids}
    return {kb_id: versions[f"kb:{int(kb_id)}"] for kb_id in kb_ids}


def _scopes(kb_ids: list[int]) -> list[tuple[str, int]]:
    return [knowledge_base_scope(i) for i in kb_ids]


def _digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def results_get(*, kb_ids: list[int], parts: dict) -> tuple[list | None, Seen | None]:
    """The cached ranking for this query (`parts`: everything that shapes it) over these
    bases, or None; and what the read saw, for `results_set`."""
    value, seen = cache_value_read(RETRIEVAL, key=_digest(parts), scopes=_scopes(kb_ids))
    return value, seen


def results_set(*, kb_ids: list[int], parts: dict, value: list, seen: Seen | None) -> None:
    """Store a ranking under the versions its read saw: a base written since then (its
    scope moved) never gets this older ranking back."""
    cache_value_set(RETRIEVAL, key=_digest(parts), value=value, scopes=_scopes(kb_ids), seen=seen)


def document_content_get(*, document_id: int, kb_id: int, compute) -> list[dict]:
    """A document's passages, cached in `document_content`."""
    return cache_get_or_set(
        DOCUMENT_CONTENT,
        key=int(document_id),
        compute=compute,
        scopes=knowledge_base_scope(kb_id),
        hot=str(int(document_id)),
    )
