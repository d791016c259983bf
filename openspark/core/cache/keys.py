"""Key building. Every key goes through Django's `make_key`, so it carries REDIS_KEY_PREFIX
(and a test run's prefix) like every other cache key of the project.

Layout (after the prefix):
    c:<namespace>:<key>|<global>.<namespace>.<scope versions…>   a cached value
    c:…|….lock                                                     its compute lock
    v#g, v#ns:<namespace>, v:<scope>                               version counters
    s:<namespace>  (hash), h:<namespace>  (sorted set)             stats, hot members
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

from django.core.cache import caches

Scope = str | tuple

_MAX_READABLE = 100

# Every user profile depends on plans (a user without a plan gets the default one, and staff
# can move the default), so a plan write invalidates them all with one counter.
PLANS_SCOPE = "plans"


def user_scope(user_id: int) -> tuple[str, int]:
    """The scope of everything cached about one user (profile, conversation list…)."""
    return ("user", user_id)


def conversation_scope(conversation_id: int) -> tuple[str, int]:
    """The scope of a conversation's cached history."""
    return ("conversation", conversation_id)


def api_key_scope(key_hash: str) -> tuple[str, str]:
    """The scope of one API key's cached authentication (its row and its user's)."""
    return ("api_key", key_hash)


def _make(raw: str) -> str:
    return str(caches["default"].make_key(raw))


_UNREADABLE = re.compile(r"[\s|:]")  # \s is str.isspace() for str patterns


def scope_name(scope: Scope) -> str:
    """("user", 42) → "user:42"; a string is taken as it is."""
    if isinstance(scope, str):
        return scope
    return ":".join(str(part) for part in scope)


def scopes_normalize(value: Scope | Iterable[Scope] | None) -> list[str]:
    """What `version_of` returned: one scope (a string or a tuple) or a list of them."""
    if value is None:
        return []
    if isinstance(value, (str, tuple)):
        return [scope_name(value)]
    return [scope_name(scope) for scope in value]


def key_part(key) -> str:
    """A readable key when it is short and unambiguous, else a digest of its JSON form."""
    parts = list(key) if isinstance(key, (tuple, list)) else [key]
    text = ":".join(str(part) for part in parts)
    readable = len(text) <= _MAX_READABLE and not any(
        _UNREADABLE.search(str(part)) for part in parts
    )
    if readable:
        return text
    payload = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return "#" + hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def value_base_key(namespace: str, key) -> str:
    return _make(f"c:{namespace}:{key_part(key)}")


def version_keys(namespace: str, scopes: Iterable[str]) -> list[str]:
    """The counters a value's key embeds: everything, its namespace, then its scopes."""
    return [
        _make("v#g"),
        _make(f"v#ns:{namespace}"),
        *(_make(f"v:{scope}") for scope in scopes),
    ]


def scope_version_key(scope: str) -> str:
    return _make(f"v:{scope}")


def global_version_key() -> str:
    return _make("v#g")


def namespace_version_key(namespace: str) -> str:
    return _make(f"v#ns:{namespace}")


def stats_key(namespace: str) -> str:
    return _make(f"s:{namespace}")


def hot_key(namespace: str) -> str:
    return _make(f"h:{namespace}")


def login_warm_keys() -> tuple[str, str]:
    """(users waiting for a warm-up, "a warm-up task is queued" flag). Outside the versioned
    key space on purpose: purging the cache must not forget that a task is already queued."""
    prefix = caches["default"].key_prefix
    return f"{prefix}:cachewarm:pending", f"{prefix}:cachewarm:scheduled"


def namespace_pattern(namespace: str) -> str:
    """For purging a namespace's values (staff action, never on the hot path)."""
    return f"c:{namespace}:*"
