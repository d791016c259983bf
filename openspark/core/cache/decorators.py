"""`@cached` for selectors (keyword-only functions returning plain data)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .keys import Scope
from .namespaces import NAMESPACES, UnknownNamespace
from .service import cache_get_or_set


def cached(
    namespace: str,
    *,
    key: Callable[..., Any],
    version_of: Callable[..., Scope | list[Scope]] | None = None,
    hot: Callable[..., str] | None = None,
):
    """Cache a selector's result in `namespace` (TTL from settings).

    key(**kwargs)        what identifies the result inside the namespace, e.g. (user.id, page);
    version_of(**kwargs) the scope(s) whose writes must invalidate it, e.g. ("user", user.id)
                         or [("user", user.id), "plans"]; writers call cache_bump(scope=...);
    hot(**kwargs)        optional member counted as read, for warm-up of the most read ones.

    The selector must return msgpack-able data (dicts, lists, str, numbers, dates, UUIDs).
    `fn.uncached` is the original function."""
    if namespace not in NAMESPACES:
        raise UnknownNamespace(f"Unknown cache namespace: {namespace!r}")

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if args:
                raise TypeError(f"{fn.__name__}() takes keyword arguments only")
            return cache_get_or_set(
                namespace,
                key=key(**kwargs),
                compute=lambda: fn(**kwargs),
                scopes=version_of(**kwargs) if version_of else (),
                hot=str(hot(**kwargs)) if hot else None,
            )

        wrapper.uncached = fn
        return wrapper

    return decorator
