"""Whole API responses kept for replay ahead of Django (`openspark/edge.py` serves them).

A response is kept only when its view said it may be (`edge_allow()`) and every cached read it
was built from was versioned: the entry records the version counters those reads saw, and the
read script replays it only while every one of them still holds that value. So a write that
invalidates any of the reads invalidates the entry too, at the same moment and by the same
bump; nothing is ever scanned or deleted to invalidate it. The entry's key is the caller's
credential, the path and the query string; the request's other parts that can change the
response (host, scheme, Accept, Accept-Language…) are recorded and must match. So an entry is
only ever replayed to the caller it was made for, for the same request.

Collection: the edge puts an `EdgeEntry` in a context variable for the request; the cache
service notes each read's counters in it (`edge_read_noted`); after the response is sent the
edge stores it (`edge_store`) if the view allowed it, no read went around the cache, and the
response is a plain 200."""

from __future__ import annotations

import contextvars
import hashlib
import json
from dataclasses import dataclass, field
from typing import NamedTuple

import msgpack
from rest_framework.renderers import JSONRenderer

from . import backend
from .backend import Prefetch
from .keys import edge_key, stats_key
from .namespaces import namespace_get


@dataclass(slots=True)
class EdgeEntry:
    key: str  # the caller's credential, the path and the query string
    vary: bytes = b""  # the request's other parts that can change the response
    query: bytes = b""
    allowed: bool = False
    # A read answered without versions (cache off, Redis down, a value that would not decode):
    # what the response holds cannot be tied to counters, so it is not kept.
    spoiled: bool = False
    counters: dict[str, str] = field(default_factory=dict)  # counter key → value seen
    namespace: str | None = None  # the first read's: where hits are counted
    ttl: int | None = None  # the shortest of the reads' namespaces' TTLs
    live: str = ""  # the response's live part (see `edge_allow`)
    canonical: bytes = b""  # the query string spelt as the view reads it (see `edge_allow`)

    def keepable(self) -> bool:
        return (
            self.allowed
            and not self.spoiled
            and bool(self.counters)
            and self.query == self.canonical
        )


_current: contextvars.ContextVar[EdgeEntry | None] = contextvars.ContextVar(
    "cache_edge_entry", default=None
)


def edge_collect(entry: EdgeEntry) -> contextvars.Token:
    """Make `entry` collect the cache reads of the request run in this context (asgiref
    copies the context into the thread that runs Django for it)."""
    return _current.set(entry)


def edge_allow(*, ttl: int | None = None, live: str = "", query: str = "") -> None:
    """Called by a view whose response is fully determined by its cached reads and the
    request's key: it may be replayed while those reads stay valid (the view class says
    `edge_keeps = True`, so the edge looks for kept responses of it at all). `ttl` caps how long.
    `live`: the response's last field is computed afresh for each request (the edge knows
    how: openspark/edge.py); the rest is kept. `query`: the request's query string in the one
    spelling of what the view read from it (its parameters, in its order, with the values it
    used). Responses are kept per query string, and only for a request spelt that way, so a
    caller cannot add kept copies of one response by respelling (`page=01`, another order,
    an out-of-range size) or by adding parameters the view ignores."""
    entry = _current.get()
    if entry is not None:
        entry.allowed = True
        entry.live = live
        entry.canonical = query.encode()
        if ttl is not None:
            entry.ttl = ttl if entry.ttl is None else min(entry.ttl, ttl)


def edge_read_noted(namespace: str, vkeys: list[str], versions: str | None) -> None:
    """The cache service's note of one read: its counters and the values it saw (None: the
    read did not go through versioned keys)."""
    entry = _current.get()
    if entry is None:
        return
    if versions is None:
        entry.spoiled = True
        return
    values = versions.split(".")
    if len(values) != len(vkeys):
        entry.spoiled = True
        return
    for vkey, value in zip(vkeys, values, strict=True):
        # Two reads that saw one counter at different values straddled a write.
        if entry.counters.setdefault(vkey, value) != value:
            entry.spoiled = True
    ttl = namespace_get(namespace).ttl
    entry.ttl = ttl if entry.ttl is None else min(entry.ttl, ttl)
    if entry.namespace is None:
        entry.namespace = namespace


def edge_entry_key(credential: str, shape: bytes) -> str:
    digest = hashlib.blake2b(shape, digest_size=16, key=credential.encode()[:64]).hexdigest()
    return edge_key(digest)


def edge_read_prefetch(entry_key: str, *, vary: bytes) -> Prefetch | None:
    """The entry's read, packed to ride another module's round trip (the limiter's). A hit
    is counted only for a request with the headers the entry was made for (`vary`)."""
    if not backend.healthy():
        return None
    packed = backend.pack(backend.EDGE_READ, [entry_key], [vary])
    return Prefetch(backend.location(), packed, backend.EDGE_READ)


class Kept(NamedTuple):
    headers: tuple
    body: bytes
    namespace: str
    live: str


def edge_read_result(prefetch: Prefetch | None) -> Kept | None:
    """A valid entry, or None."""
    if prefetch is None or not isinstance(prefetch.reply, list) or prefetch.reply[0] != 1:
        return None
    _hit, headers, body, namespace, live = prefetch.reply
    headers = msgpack.unpackb(headers, use_list=False)
    return Kept(headers, body, namespace.decode(), live.decode())


def edge_join_live(kept: bytes, live: str, value) -> bytes:
    """A kept body with its live part put back: what DRF's JSONRenderer renders for the whole
    object, the live part being its last field."""
    separator = b"," if kept != b"{" else b""
    return b"%s%s%s:%s}" % (kept, separator, json.dumps(live).encode(), _render(value))


def _render(value) -> bytes:
    return JSONRenderer().render(value)


def _live_split(body: bytes, live: str) -> bytes | None:
    """The body without its live part (and without the closing brace), or None unless
    joining it back gives exactly `body`."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not data or list(data)[-1] != live:
        return None
    value = data.pop(live)
    kept = _render(data)[:-1]
    return kept if edge_join_live(kept, live, value) == body else None


def edge_store(entry: EdgeEntry, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Keep a sent response under `entry`; False when it cannot be (see `keepable`) or a
    counter moved since its reads (a write committed while it was being built)."""
    if not entry.keepable():
        return False
    if entry.live:
        body = _live_split(body, entry.live)
        if body is None:
            return False
    vkeys = list(entry.counters)
    try:
        return bool(
            backend.run(
                backend.EDGE_STORE,
                vkeys,
                [
                    len(vkeys),
                    ".".join(entry.counters.values()),
                    entry.key,
                    entry.ttl,
                    stats_key(entry.namespace),
                    entry.namespace,
                    msgpack.packb(headers),
                    body,
                    entry.live,
                    entry.vary,
                ],
            )
        )
    except backend.Unavailable:
        return False
