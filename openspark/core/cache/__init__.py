"""The cache layer (Redis through django-redis): namespaces with the plan's TTLs, versioned
keys, `@cached` selectors, get-or-set with stampede protection, warm-up and stats.
Usage: docs/caching.md."""

from .ai_response import (
    ai_response_context_fingerprint,
    ai_response_get,
    ai_response_key,
    ai_response_set,
    ai_response_user_scope,
    fingerprint,
)
from .decorators import cached
from .keys import PLANS_SCOPE, api_key_scope, conversation_scope, user_scope
from .namespaces import (
    AI_RESPONSE,
    API_KEY,
    CONVERSATION_HISTORY,
    DOCUMENT_CONTENT,
    NAMESPACES,
    RATE_LIMIT,
    RETRIEVAL,
    USER_CONVERSATIONS,
    USER_PROFILE,
    namespace_get,
)
from .pagination import cached_page_response
from .service import (
    cache_enabled,
    cache_get_or_set,
    cache_hot_members,
    cache_purge,
    cache_value_get,
    cache_value_read,
    cache_value_set,
)
from .stats import stats_get
from .versions import cache_bump, cache_bump_now, cache_scope_versions

__all__ = [
    "AI_RESPONSE",
    "API_KEY",
    "CONVERSATION_HISTORY",
    "DOCUMENT_CONTENT",
    "NAMESPACES",
    "PLANS_SCOPE",
    "RATE_LIMIT",
    "RETRIEVAL",
    "USER_CONVERSATIONS",
    "USER_PROFILE",
    "ai_response_context_fingerprint",
    "ai_response_get",
    "ai_response_key",
    "ai_response_set",
    "ai_response_user_scope",
    "api_key_scope",
    "cache_bump",
    "cache_bump_now",
    "cache_enabled",
    "cache_get_or_set",
    "cache_hot_members",
    "cache_purge",
    "cache_scope_versions",
    "cache_value_get",
    "cache_value_read",
    "cache_value_set",
    "cached",
    "cached_page_response",
    "conversation_scope",
    "fingerprint",
    "namespace_get",
    "stats_get",
    "user_scope",
]
