"""A bounded per-process memo for values derived on the hot path from a few recurring inputs
(client addresses, callers' rules, paths' view classes, packed reads)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")

MEMO_MAX = 10_000
_MISSING = object()


def memoised(store: dict, key: Hashable, build: Callable[[], T], *, limit: int = MEMO_MAX) -> T:
    """`store[key]`, built by `build()` the first time (None is a value like any other). The
    store is emptied when it reaches `limit`, so inputs a caller controls (paths, addresses)
    cannot grow it without bound; dict operations keep it safe across threads."""
    value = store.get(key, _MISSING)
    if value is _MISSING:
        value = build()
        if len(store) >= limit:
            store.clear()
        store[key] = value
    return value
