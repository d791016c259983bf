"""The edge: cached API responses answered ahead of Django.

A cached GET still paid for Django's middleware chain, the hop to a request thread, DRF's
dispatch and rendering — more than the cached read itself (docs/performance.md). Here, on the
event loop, a GET to /api/v1/ with an API key and no cookies is checked and answered in one
Redis round trip: the rate limiter's check (the view's layers, the caller's identity, exactly
as `RateLimitMiddleware` would make it), the key's cached row and the response kept for this
caller and request (`openspark.core.cache.edge`) are pipelined together. The response is
replayed only when all three say so: the limiter admits, the key and its user are active
(with no last-use write due), and every cached read the response was built from is still
valid. In every other case the request goes on to Django with the limiter's decision and the
key's row (so nothing is counted or read twice), and Django answers as always; a 200 from a
view that allows it (`edge_allow`) is then kept for next time.

Nothing here may touch the database (the event loop): whatever would need it (an identity
or a limiter configuration not yet in this process's memory) sends the request on to Django,
which loads it for the next one."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import NamedTuple

from django.conf import settings
from django.urls import Resolver404, resolve

from accounts.authentication import (
    api_key_last_use_due,
    api_key_prefetch,
    api_key_prefetched,
)
from accounts.keys import api_key_hash
from openspark.core.asgi import REQUEST_ATTRS
from openspark.core.cache import stats
from openspark.core.cache.edge import (
    EdgeEntry,
    edge_collect,
    edge_entry_key,
    edge_join_live,
    edge_read_prefetch,
    edge_read_result,
    edge_store,
)
from openspark.core.memo import memoised
from throttling.limiter import health as limiter_health
from throttling.middleware import API_PREFIX, view_layers
from throttling.responses import decision_headers
from throttling.selectors import LimiterConfig, limiter_config_peek
from throttling.services import (
    Identity,
    api_key_cache,
    client_ip,
    limiter_check,
    limiter_usage_prefetch,
    limiter_usage_prefetched,
)

# Request headers that can change a response of these views (the rest, the key and the
# cookies aside, cannot). A kept response records them and is replayed only to a request
# with the same ones; they are not part of its key, so a caller varying them (any string
# goes in Accept-Language) replaces their one kept response instead of adding more.
_VARY_HEADERS = frozenset(
    {
        b"host",
        b"accept",
        b"accept-language",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-proto",
        b"forwarded",
    }
)
# Per request, never kept: the rate-limit headers are the request's own, the length is set
# when sending.
_UNKEPT_HEADERS = frozenset(
    {
        b"content-length",
        b"ratelimit",
        b"ratelimit-policy",
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
        b"retry-after",
    }
)


# A larger response is sent but not kept (the largest page, 200 long messages, is far below).
_KEEP_MAX_BYTES = 8 * 1024 * 1024

# Live parts a kept response may have (a view's `edge_live`): how to read one in the same
# round trip as the check, and how to make its value from the reply.
_LIVE_PARTS = {"usage": (limiter_usage_prefetch, limiter_usage_prefetched)}


class _Prepared(NamedTuple):
    raw_key: str
    identity: Identity
    config: LimiterConfig
    layers: frozenset[str]
    entry_key: str
    live: str  # the view's live part, if any (`edge_live`)
    vary: bytes  # the request's parts, besides path and query, that can change the response
    query: bytes


_view_classes: dict[tuple[str, str], type | None] = {}


def _view_class(path: str) -> type | None:
    """The DRF view class a path resolves to (memoised: resolving costs more than the whole
    replay)."""

    def build() -> type | None:
        try:
            return getattr(resolve(path).func, "cls", None)
        except Resolver404:
            return None

    return memoised(_view_classes, (settings.ROOT_URLCONF, path), build)


def _prepare(scope) -> _Prepared | None:
    """What the check needs, from memory only; None when this request is not the edge's."""
    path = scope["path"]
    if not path.startswith(API_PREFIX) or scope.get("root_path"):
        return None  # (mounted under a prefix, Django's path would not be this one)
    authorization = None
    forwarded_for = []
    query = scope.get("query_string", b"")
    vary = [scope.get("scheme", "http").encode()]
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value
        elif name == b"cookie":
            return None  # a browser: session authentication and CSRF are Django's
        elif name == b"x-forwarded-for":
            forwarded_for.append(value.decode("latin-1"))
        elif name in _VARY_HEADERS:
            vary.append(name + b":" + value)
    if authorization is None or authorization[:7].lower() != b"bearer ":
        return None
    raw_key = authorization[7:].strip().decode("latin-1")
    if len(raw_key.split()) != 1:
        return None  # DRF answers the malformed header
    known = api_key_cache.peek(raw_key)
    config = limiter_config_peek()
    if known is None or known[0] is None or config is None:
        return None
    view_class = _view_class(path)
    if not getattr(view_class, "edge_keeps", False):
        return None  # a view whose responses are never kept: nothing to look for
    layers = view_layers(view_class)
    if not layers:
        return None
    client = scope.get("client")
    meta = {
        "REMOTE_ADDR": client[0] if client else "",
        "HTTP_X_FORWARDED_FOR": ",".join(forwarded_for),
    }
    ip = client_ip(SimpleNamespace(META=meta))
    entry_key = edge_entry_key(api_key_hash(raw_key), path.encode() + b"?" + query)
    live = getattr(view_class, "edge_live", "")
    identity = Identity(known[0], known[1], ip)
    return _Prepared(raw_key, identity, config, layers, entry_key, live, b"\n".join(vary), query)


class EdgeApp:
    """ASGI middleware in front of Django's HTTP handler (openspark/asgi.py)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        prepared = None
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and settings.CACHE_EDGE_ENABLED
            and settings.CACHE_ENABLED
            # Its Redis call runs on the event loop: after a failure (a Redis that hangs
            # costs a whole timeout), Django's threads make the calls for a while instead.
            and not limiter_health.failed_within(settings.CACHE_EDGE_QUIET_SECONDS)
        ):
            prepared = _prepare(scope)
        if prepared is None:
            return await self.app(scope, receive, send)

        started = time.perf_counter()
        api_key_read = api_key_prefetch(prepared.raw_key)
        entry_read = edge_read_prefetch(prepared.entry_key, vary=prepared.vary)
        if api_key_read is None or entry_read is None:
            return await self.app(scope, receive, send)  # the cache is off or recovering
        reads = [api_key_read, entry_read]
        live_read = None
        if prepared.live:
            live_read = _LIVE_PARTS[prepared.live][0](
                config=prepared.config, identity=prepared.identity
            )
            if live_read is not None:
                reads.append(live_read)  # after the check: it sees what the check left
        decision = limiter_check(
            identity=prepared.identity,
            path=scope["path"],
            layers=prepared.layers,
            also=reads,
            config=prepared.config,
        )
        handed = {
            "limiter_decision": decision,
            "api_key_prefetch": (prepared.raw_key, api_key_read),
        }
        entry = None
        if decision.allowed and not decision.degraded:
            kept = edge_read_result(entry_read)
            active = api_key_prefetched(api_key_read)
            if (
                kept is not None
                and active is not None
                and active.user_id == prepared.identity.user_id
            ):
                body = kept.body
                if kept.live:
                    value = None
                    if kept.live == prepared.live:
                        value = _LIVE_PARTS[kept.live][1](live_read)
                    body = None if value is None else edge_join_live(body, kept.live, value)
                if body is not None:
                    stats.record_latency(kept.namespace, time.perf_counter() - started)
                    await _send(send, kept.headers, body, decision)
                    if api_key_last_use_due(active.last_used_at):
                        await asyncio.to_thread(active.touch)
                    return None
            # Django answers; a 200 for this key is its user's (no cookies, the key is
            # authenticated first), so it may be kept for the key whatever was checked here.
            entry = EdgeEntry(prepared.entry_key, vary=prepared.vary, query=prepared.query)
        await self._to_django(dict(scope, **{REQUEST_ATTRS: handed}), receive, send, entry)
        return None

    async def _to_django(self, scope, receive, send, entry: EdgeEntry | None) -> None:
        if entry is None:
            await self.app(scope, receive, send)
            return
        sent: dict = {"keep": False, "headers": (), "body": [], "size": 0, "complete": False}

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                # The view has run by now: collect only what may be kept (a stream, say an
                # SSE reply, never is, and is not held in memory).
                sent["keep"] = message["status"] == 200 and entry.keepable()
                sent["headers"] = message.get("headers", ())
            elif message["type"] == "http.response.body" and sent["keep"]:
                body = message.get("body", b"")
                sent["size"] += len(body)
                sent["keep"] = sent["size"] <= _KEEP_MAX_BYTES
                sent["body"].append(body)
                sent["complete"] = not message.get("more_body", False)
            await send(message)

        token = edge_collect(entry)
        try:
            await self.app(scope, receive, capture)
        finally:
            token.var.reset(token)
        headers = [(bytes(n).lower(), bytes(v)) for n, v in sent["headers"]]
        if (
            sent["keep"]
            and sent["complete"]
            and not any(name == b"set-cookie" for name, _value in headers)
        ):
            kept = [(n, v) for n, v in headers if n not in _UNKEPT_HEADERS]
            await asyncio.to_thread(edge_store, entry, kept, b"".join(sent["body"]))


async def _send(send, headers, body: bytes, decision) -> None:
    out = list(headers)
    out += [(k.lower().encode(), v.encode()) for k, v in decision_headers(decision).items()]
    out.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": out})
    await send({"type": "http.response.body", "body": body})
