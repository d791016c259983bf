"""Django's ASGI handler, with each HTTP request's sync part in one thread hop on a reused
thread.

Stock Django under ASGI (profiled in docs/performance.md, "ASGI request path"):
- starts a new thread per request (`ThreadSensitiveContext()`), and database connections are
  per thread, so every request also opens a new database connection (on PostgreSQL a whole
  login) and CONN_MAX_AGE can never keep one;
- builds an async middleware chain; our middleware and WhiteNoise are sync-only, so a request
  hops event loop → thread → event loop → thread (the view) and again for each sync
  `process_view`: four to six switches, each a few hundred µs on a busy 2-core host.

Here the chain is Django's sync one (as under WSGI) and runs in one `sync_to_async` call, on
a single-thread executor borrowed from a pool for the request and given back after it; the
threads and their connections live on, and Django's own request_started/request_finished
handlers still close a connection that is broken or past CONN_MAX_AGE, in its own thread.
Async views (the SSE stream) still work: Django calls them through `async_to_sync`, which runs
them on the event loop. A request streaming a long response keeps its thread borrowed, so the
pool never blocks: past ASGI_THREADS idle threads a returned one is shut down instead."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import connections

# An ASGI scope key: attributes the Django request is given (the edge, openspark/edge.py,
# hands on what it already did for the request: the limiter's check, the API key's read).
REQUEST_ATTRS = "openspark.request_attrs"


class _ExecutorPool:
    """Single-thread executors, lent one per request; at most `keep` are kept idle."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._idle: list[ThreadPoolExecutor] = []

    def acquire(self) -> ThreadPoolExecutor:
        # Only the event loop's thread calls acquire/release: no lock needed.
        if self._idle:
            return self._idle.pop()
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="asgi-request")

    def release(self, executor: ThreadPoolExecutor) -> None:
        if len(self._idle) < self.keep:
            self._idle.append(executor)
            return
        executor.submit(connections.close_all)  # its connections would outlive it otherwise
        executor.shutdown(wait=False)


class PooledASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self._pool = _ExecutorPool(settings.ASGI_THREADS)
        self._get_response_in_thread = sync_to_async(self.get_response, thread_sensitive=True)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._pool.acquire()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self._pool.release(executor)

    async def get_response_async(self, request):
        for name, value in request.scope.get(REQUEST_ATTRS, {}).items():
            setattr(request, name, value)
        # The whole sync middleware chain and the view in one hop to the request's thread.
        return await self._get_response_in_thread(request)


def get_asgi_application() -> PooledASGIHandler:
    django.setup(set_prefix=False)
    return PooledASGIHandler()
