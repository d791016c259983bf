"""Our retry policy, on top of provider clients that never retry by themselves.

Only retryable `LLMError`s (rate limits, 5xx, timeouts, connection errors) are retried, with
exponential backoff and jitter, bounded both by attempts and by total elapsed time. A stream is
retried only before its first event reached the caller: once text has been shown to a user,
restarting silently would show them a different answer glued onto the first one.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import TypeVar

from .base import ChatEvent, ChatMessage, ChatProvider, LLMError, Passage
from .metrics import StreamObservation

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    # No new attempt starts once waiting for it would pass this many seconds since the first.
    max_seconds: float = 60.0
    base_delay: float = 1.0
    max_delay: float = 8.0
    # Each delay is drawn from [delay * (1 - jitter), delay] so that many workers hit by the
    # same 429 do not come back in lockstep.
    jitter: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    rand: Callable[[], float] = field(default=random.random, repr=False)

    def delay_before(self, attempt: int, error: LLMError) -> float:
        """Delay before attempt number `attempt` (2 for the first retry)."""
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 2))
        backoff *= 1 - self.jitter * self.rand()
        # A server that says when to come back knows better than our backoff.
        return max(backoff, error.retry_after or 0.0)


NO_RETRY = RetryPolicy(max_attempts=1)


def _wait_or_raise(error: LLMError, *, attempt: int, started: float, policy: RetryPolicy) -> None:
    """Sleep before attempt `attempt + 1`, or re-raise `error` when the policy says stop."""
    if not error.retryable or attempt >= policy.max_attempts:
        raise error
    delay = policy.delay_before(attempt + 1, error)
    if policy.clock() - started + delay > policy.max_seconds:
        raise error
    logger.warning(
        "LLM call failed (%s, attempt %d/%d), retrying in %.2fs: %s",
        error.code.value,
        attempt,
        policy.max_attempts,
        delay,
        error.detail,
    )
    policy.sleep(delay)


def call_with_retry(fn: Callable[[], T], *, policy: RetryPolicy | None = None) -> T:
    policy = policy or RetryPolicy()
    started = policy.clock()
    attempt = 1
    while True:
        try:
            return fn()
        except LLMError as error:
            _wait_or_raise(error, attempt=attempt, started=started, policy=policy)
        attempt += 1


def stream_with_retry(
    provider: ChatProvider,
    messages: Sequence[ChatMessage],
    *,
    passages: Sequence[Passage] = (),
    temperature: float | None = None,
    max_tokens: int | None = None,
    policy: RetryPolicy | None = None,
) -> Iterator[ChatEvent]:
    events = _stream_attempts(
        provider,
        messages,
        passages=passages,
        temperature=temperature,
        max_tokens=max_tokens,
        policy=policy or RetryPolicy(),
    )
    with StreamObservation(provider) as seen, closing(events):
        for event in events:
            seen.event(event)
            yield event


def _stream_attempts(
    provider: ChatProvider,
    messages: Sequence[ChatMessage],
    *,
    passages: Sequence[Passage],
    temperature: float | None,
    max_tokens: int | None,
    policy: RetryPolicy,
) -> Iterator[ChatEvent]:
    started = policy.clock()
    attempt = 1
    while True:
        yielded = False
        events = provider.stream(
            messages, passages=passages, temperature=temperature, max_tokens=max_tokens
        )
        # closing(): when our caller stops early, the provider's HTTP response is released now
        # rather than whenever the generator is garbage-collected.
        with closing(events):
            try:
                for event in events:
                    yielded = True
                    yield event
                return
            except LLMError as error:
                if yielded:
                    raise
                _wait_or_raise(error, attempt=attempt, started=started, policy=policy)
        attempt += 1
