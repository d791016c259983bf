"""`GET /api/v1/messages/{id}/stream`: a reply as server-sent events, from its first delta
even if it began earlier, then live until it ends.

An async view (a sync one would be buffered whole by Django under ASGI, or hold a thread per
reader). It reads the reply log, not the channel group: the log starts at seq 1 and XREAD
BLOCK follows it, so the reader needs no group membership. Events:

    id: <seq>            event: delta   data: {"message_id", "seq", "delta"}
                         event: done    data: <the saved message>   (completed or stopped)
                         event: error   data: {"message_id", "code", "message", "reply"}

A reconnecting EventSource sends `Last-Event-ID` and gets only what follows it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.translation import gettext as _
from rest_framework import exceptions

from accounts.authentication import ApiKeyAuthentication
from openspark.core.errors import ApplicationError, error_response

from . import realtime
from .models import Message
from .selectors import message_get, message_get_for_user
from .serializers import reply_final_event


def _authenticate_sync(request: HttpRequest):
    """Bearer API key first (like the DRF API), else the session; None when neither. The
    user is set on the request, as DRF does, so the rate limiter counts this caller."""
    result = ApiKeyAuthentication().authenticate(request)
    if result is not None:
        request.user = result[0]
    return request.user if request.user.is_authenticated else None


def _sse(event: str, data: dict, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _final_event(message: Message) -> str:
    event = reply_final_event(message)
    if event["type"] == "reply.error":
        return _sse("error", {key: value for key, value in event.items() if key != "type"})
    return _sse("done", event["message"])


def _last_event_id(request: HttpRequest) -> int:
    raw = request.headers.get("Last-Event-ID", "") or request.GET.get("after_seq", "")
    return int(raw) if raw.isdigit() and len(raw) < 10 else 0


@database_sync_to_async
def _final_chunk(message_id: int) -> str | None:
    message = message_get(message_id=message_id)
    if message is None:
        return _sse(
            "error", {"message_id": message_id, "code": "not_found", "message": _("Not found.")}
        )
    return _final_event(message) if message.is_finished else None


async def _events(message: Message, after_seq: int) -> AsyncIterator[str]:
    keepalive = float(getattr(settings, "CHAT_SSE_KEEPALIVE_SECONDS", 15.0))
    sent = after_seq
    entries, exists = await realtime.reply_log_read(message_id=message.id, after_seq=sent)
    if not exists:
        # No log: the reply is queued, finished long ago, or Redis lost it. The checkpoint
        # stands in for the deltas it covers (only for a reader starting from scratch).
        if message.is_finished:
            yield _final_event(message)
            return
        if sent == 0 and message.last_seq and message.content:
            data = {"message_id": message.id, "seq": message.last_seq, "delta": message.content}
            yield _sse("delta", data, message.last_seq)
            sent = message.last_seq
    while True:
        for entry in entries:
            if entry.end is not None:
                yield await _final_chunk(message.id) or _final_event(message)
                return
            if entry.seq > sent:
                data = {"message_id": message.id, "seq": entry.seq, "delta": entry.delta}
                yield _sse("delta", data, entry.seq)
                sent = entry.seq
        entries = await realtime.reply_log_wait(
            message_id=message.id, after_seq=sent, timeout=keepalive
        )
        if not entries:
            # Quiet for a while: keep proxies from closing us, and notice a reply that ended
            # without an end entry reaching us (its log expired or Redis was flushed).
            yield ": keepalive\n\n"
            if final := await _final_chunk(message.id):
                entries, _exists = await realtime.reply_log_read(
                    message_id=message.id, after_seq=sent
                )
                if not any(entry.end is not None for entry in entries):
                    yield final
                    return


async def message_stream(request: HttpRequest, message_id: int) -> HttpResponse:
    if request.method != "GET":
        return error_response("method_not_allowed", _("Method not allowed."), 405)
    try:
        user = await database_sync_to_async(_authenticate_sync)(request)
    except exceptions.AuthenticationFailed as exc:
        return error_response(
            "not_authenticated", str(exc.detail), 401, headers={"WWW-Authenticate": "Bearer"}
        )
    if user is None:
        return error_response(
            "not_authenticated",
            _("Authentication credentials were not provided."),
            401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        message = await database_sync_to_async(message_get_for_user)(
            user=user, message_id=message_id
        )
    except ApplicationError as exc:
        return error_response(exc.code, exc.message, exc.status_code, exc.details)
    if message.role != Message.Role.ASSISTANT:
        return error_response("validation_error", _("Only replies can be streamed."), 400)
    response = StreamingHttpResponse(
        _events(message, _last_event_id(request)), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through at once
    return response
