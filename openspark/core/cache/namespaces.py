"""The cache's namespaces. Their TTLs are the plan's requirements and live in settings
(`CACHE_TTLS`), read on every use so an override (or a test's `settings`) takes effect at once."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

USER_PROFILE = "user_profile"
USER_CONVERSATIONS = "user_conversations"
CONVERSATION_HISTORY = "conversation_history"
DOCUMENT_CONTENT = "document_content"
AI_RESPONSE = "ai_response"
RETRIEVAL = "retrieval"
RATE_LIMIT = "rate_limit"
API_KEY = "api_key"

NAMESPACES: tuple[str, ...] = (
    USER_PROFILE,
    USER_CONVERSATIONS,
    CONVERSATION_HISTORY,
    DOCUMENT_CONTENT,
    AI_RESPONSE,
    RETRIEVAL,
    RATE_LIMIT,
    API_KEY,
)


class UnknownNamespace(ValueError):
    pass


@dataclass(frozen=True)
class Namespace:
    name: str
    ttl: int


def namespace_get(name: str) -> Namespace:
    if name not in NAMESPACES:
        raise UnknownNamespace(f"Unknown cache namespace: {name!r}")
    return Namespace(name=name, ttl=int(settings.CACHE_TTLS[name]))


def namespace_list() -> list[Namespace]:
    return [namespace_get(name) for name in NAMESPACES]
