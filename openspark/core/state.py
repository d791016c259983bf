"""The one registry of per-process state (memos, breakers, snapshots, batched counters).

Module-level state is allowed only when it registers here: `process_state_reset()` then
forgets all of it at once (tests call it between tests). State derived from settings (memos,
the limiter's configuration snapshot) registers with `derived_from_settings=True` and is also
forgotten when a setting changes (which happens only under test)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from django.core.signals import setting_changed

F = TypeVar("F", bound=Callable)

_resets: list[Callable[[], None]] = []
_derived: list[Callable[[], None]] = []


def on_reset(
    reset: Callable[[], None], *, derived_from_settings: bool = False
) -> Callable[[], None]:
    """Register `reset()`; returns it, so it can decorate a function."""
    _resets.append(reset)
    if derived_from_settings:
        _derived.append(reset)
    return reset


def process_memo(maxsize: int = 4096) -> Callable[[F], F]:
    """`functools.lru_cache` whose entries are forgotten by `process_state_reset()` and when a
    setting changes (a memo may hold values derived from settings)."""

    def decorator(fn: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(fn)
        on_reset(cached.cache_clear, derived_from_settings=True)
        return cached  # type: ignore[return-value]

    return decorator


def process_state_reset() -> None:
    for reset in _resets:
        reset()


def _setting_changed(**_kwargs) -> None:
    for reset in _derived:
        reset()


setting_changed.connect(_setting_changed, dispatch_uid="openspark-process-state")
