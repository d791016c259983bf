"""Version counters: the invalidation that cannot miss.

A cached value's key embeds the current value of every counter it depends on (everything,
its namespace, and its scopes such as ("user", 42)). A write moves the counters of what it
changed forward after its transaction commits, so from then on every reader, in any process,
builds a different key and recomputes from the committed rows. Nothing is scanned or deleted
on the hot path; superseded values simply expire.

Why readers can never see a write's old value: a reader reads the counters before it reads
the database, and the bump happens after the commit. A reader that saw the old counter may
store an old value, but only under the old key, which no one reads again."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from . import backend, stats
from .keys import (
    Scope,
    global_version_key,
    namespace_version_key,
    scope_version_key,
    scopes_normalize,
)


def cache_bump(*, scope: Scope | None = None, scopes: Iterable[Scope] = (), using=None) -> None:
    """Invalidate everything cached under these scopes once the current transaction commits
    (at once outside a transaction). Call it in the same service function as the write."""
    names = scopes_normalize(scope) + scopes_normalize(list(scopes))
    if not names:
        return
    transaction.on_commit(lambda: cache_bump_now(scopes=names), using=using, robust=True)


def cache_bump_now(*, scopes: Iterable[Scope]) -> None:
    """Bump at once; for callers that are not inside the writing transaction."""
    keys = [scope_version_key(name) for name in scopes_normalize(list(scopes))]
    _bump(keys)


def namespace_bump(namespace: str) -> None:
    _bump([namespace_version_key(namespace)])


def _bump(keys: list[str]) -> None:
    if not keys:
        return
    try:
        backend.run(backend.BUMP, keys, [backend.VERSION_TTL])
    except backend.Unavailable:
        # The write is committed; what may be cached is not known any more, so everything
        # is invalidated as soon as Redis answers again (see backend._recovered).
        backend.bump_missed()
        stats.record_bump(failed=True)
    else:
        stats.record_bump(failed=False)


def cache_scope_versions(*, scopes: Iterable[Scope]) -> dict[str, str] | None:
    """The current version of each scope (by its name, e.g. "kb:3"), creating the counters
    that do not exist yet; None when Redis cannot answer. A version changes at every bump of
    its scope (and of everything: the global counter is part of it), so it can name a
    generation of whatever the scope covers."""
    names = scopes_normalize(list(scopes))
    if not names:
        return {}
    keys = [global_version_key(), *(scope_version_key(name) for name in names)]
    try:
        values = backend.run(backend.VERSIONS, keys, [backend.VERSION_TTL])
    except backend.Unavailable:
        return None
    everything, *own = (value.decode() for value in values)
    return {name: f"{everything}.{value}" for name, value in zip(names, own, strict=True)}
