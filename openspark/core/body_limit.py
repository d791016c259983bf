"""Request bodies are counted as they arrive and refused with 413 past a limit.

Django's ASGI handler reads the whole body into a temporary file (on disk past
FILE_UPLOAD_MAX_MEMORY_SIZE) before any middleware or view runs, and uvicorn sets no limit,
so a view's own size check comes after the disk is already full. This ASGI middleware sits
in front of the HTTP app:
- a Content-Length over the limit is answered at once, and the app is never called (nothing
  of the body is read);
- otherwise (chunked bodies, or a Content-Length the client does not keep to) the bytes are
  counted as the app receives them; past the limit the client gets the 413 and the app gets
  `http.disconnect`, on which Django's `read_body` drops its temporary file and `handle`
  returns without sending anything. Whatever the app still sends after that is dropped, so
  only one response ever goes out.
The 413 says `Connection: close`: uvicorn then closes the connection instead of reading (and
discarding) the rest of the body to reuse it.

The limit is REQUEST_BODY_MAX_BYTES, except for the views in REQUEST_BODY_UPLOAD_VIEWS (the
knowledge uploads), whose limit is what one upload may hold: KNOWLEDGE_MAX_FILES_PER_UPLOAD
files of KNOWLEDGE_MAX_UPLOAD_BYTES plus REQUEST_BODY_MULTIPART_OVERHEAD. The view is found
the way Django will find it: `resolve()` on the decoded path less the script prefix, as
ASGIRequest builds `path_info`; so percent-encoding, `//` or extra segments never reach the
upload limit without also reaching the upload view."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.handlers.asgi import get_script_prefix
from django.urls import Resolver404, resolve

from .errors import error_body


def upload_body_limit() -> int:
    return (
        settings.KNOWLEDGE_MAX_UPLOAD_BYTES * settings.KNOWLEDGE_MAX_FILES_PER_UPLOAD
        + settings.REQUEST_BODY_MULTIPART_OVERHEAD
    )


def _is_upload_view(scope) -> bool:
    path_info = scope["path"].removeprefix(get_script_prefix(scope))
    try:
        match = resolve(path_info)
    except Resolver404:
        return False
    return match.view_name in settings.REQUEST_BODY_UPLOAD_VIEWS


def _declared_length(scope) -> tuple[int | None, bool]:
    """(Content-Length, chunked). The server has already refused a malformed or repeated
    Content-Length; no length and no chunked coding means an empty body."""
    length, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    return length, chunked


async def _refuse(send, limit: int) -> None:
    body = json.dumps(
        error_body(
            "file_too_large",
            f"The request body is larger than {limit} bytes.",
            {"max_bytes": limit},
        )
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared, chunked = _declared_length(scope)
        limit = settings.REQUEST_BODY_MAX_BYTES
        # The server never hands the app more than a declared Content-Length (the parser
        # reads exactly that many bytes), so small declared bodies need no counting.
        if not chunked and (declared is None or declared <= limit):
            return await self.app(scope, receive, send)
        if _is_upload_view(scope):
            limit = upload_body_limit()
        if declared is not None and declared > limit:
            return await _refuse(send, limit)
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope, receive, send, limit: int) -> None:
        received = 0
        started = refused = False

        async def counted_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:
                return  # the app was told the client left; the 413 was its answer
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
