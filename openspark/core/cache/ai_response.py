"""Answers to identical questions: same model and settings, same conversation messages, same
retrieved context, same readable knowledge → the stored reply instead of a model call.

The key is a digest of all of it, including `user_scope`: users share cached answers only
when the knowledge they may read is identical, so a reply grounded in a base one user can
read is never served to a user who cannot.

An entry keeps what a replay needs to look like the first answer (docs/security/chat.md): the
usage the model reported and the pace at which the answer was streamed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from django.utils import timezone

from .namespaces import AI_RESPONSE
from .service import cache_value_get, cache_value_set


def fingerprint(value) -> str:
    """A stable digest of JSON-able data (key order does not matter)."""
    payload = json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def ai_response_user_scope(*, readable_knowledge_base_ids: Iterable[int]) -> str:
    """The sharing boundary: users with the same set of readable bases share answers."""
    return "kb:" + fingerprint(sorted({int(i) for i in readable_knowledge_base_ids}))[:32]


def ai_response_context_fingerprint(*, chunks: Iterable[tuple[int, str]]) -> str:
    """Digest of the retrieved context as (chunk id, chunk text) pairs, in prompt order;
    the text is included so a re-indexed document never reuses an answer."""
    return fingerprint([[int(chunk_id), text] for chunk_id, text in chunks])


# Part of every key: entries of an older layout (without a pace) are never read.
ENTRY_FORMAT = 2


def ai_response_key(
    *, model: str, settings: dict, messages: list[dict], context_fingerprint: str, user_scope: str
) -> str:
    messages = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
    return fingerprint(
        {
            "format": ENTRY_FORMAT,
            "model": model,
            "settings": settings,
            "messages": messages,
            "context": context_fingerprint,
            "scope": user_scope,
        }
    )


def ai_response_get(key: str) -> dict | None:
    """{"content", "citations", "usage", "pace", "cached_at", "cached": True} or None."""
    value = cache_value_get(AI_RESPONSE, key=key)
    if value is None:
        return None
    return {**value, "cached": True}


def ai_response_set(
    key: str, *, content: str, citations: list, usage: dict, pace: list[list[int]]
) -> None:
    """Store a completed reply (never a failed or stopped one) for 24 h. `pace`: its batches
    as [milliseconds from the start of the reply, characters], in order, covering `content`."""
    cache_value_set(
        AI_RESPONSE,
        key=key,
        value={
            "content": content,
            "citations": citations,
            "usage": usage,
            "pace": pace,
            "cached_at": timezone.now(),
        },
    )
