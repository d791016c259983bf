"""The retry policy in isolation: scripted providers, a fake clock, recorded sleeps."""

import pytest

from openspark.llm.base import ChatProvider, Delta, ErrorCode, Finish, LLMError, Usage
from openspark.llm.retry import RetryPolicy, call_with_retry, stream_with_retry

from .conftest import RecordingSleep

USAGE = Usage(prompt_tokens=1, completion_tokens=2)
MESSAGES = [{"role": "user", "content": "hi"}]


class ScriptedProvider(ChatProvider):
    """Attempt i runs script[i]: a list of texts to stream, optionally ending in an error."""

    name = "scripted"
    model = "scripted"

    def __init__(self, *script):
        self.script = list(script)
        self.attempts = 0
        self.closed = 0
        # Held here so that only an explicit close(), not garbage collection, can close them.
        self.streams = []

    def stream(self, messages, *, passages=(), temperature=None, max_tokens=None):
        self.streams.append(self._run(self.script[self.attempts]))
        self.attempts += 1
        return self.streams[-1]

    def _run(self, steps):
        try:
            for step in steps:
                if isinstance(step, LLMError):
                    raise step
                yield Delta(step)
            yield Finish(finish_reason="stop", usage=USAGE)
        finally:
            self.closed += 1


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def policy(**overrides):
    clock = FakeClock()
    sleep = RecordingSleep()

    def advancing_sleep(seconds):
        sleep(seconds)
        clock.now += seconds

    options = {
        "max_attempts": 3,
        "max_seconds": 60.0,
        "base_delay": 1.0,
        "max_delay": 8.0,
        "sleep": advancing_sleep,
        "clock": clock,
        "rand": lambda: 0.0,
    }
    options.update(overrides)
    return RetryPolicy(**options), sleep.calls


def rate_limited(**kw):
    return LLMError(ErrorCode.RATE_LIMITED, **kw)


def test_retries_retryable_errors_with_exponential_backoff():
    provider = ScriptedProvider([rate_limited()], [rate_limited()], ["ok"])
    retry_policy, sleeps = policy()

    events = list(stream_with_retry(provider, MESSAGES, policy=retry_policy))

    assert events == [Delta("ok"), Finish(finish_reason="stop", usage=USAGE)]
    assert sleeps == [1.0, 2.0]
    assert provider.attempts == 3


def test_gives_up_after_max_attempts_with_the_last_error():
    last = LLMError(ErrorCode.UNAVAILABLE, detail="third")
    provider = ScriptedProvider([rate_limited()], [rate_limited()], [last], ["never"])
    retry_policy, sleeps = policy()

    with pytest.raises(LLMError) as caught:
        list(stream_with_retry(provider, MESSAGES, policy=retry_policy))

    assert caught.value is last
    assert provider.attempts == 3
    assert len(sleeps) == 2


def test_does_not_retry_once_a_delta_was_yielded():
    provider = ScriptedProvider(["partial ", LLMError(ErrorCode.TIMEOUT)], ["never"])
    retry_policy, sleeps = policy()
    received = []

    with pytest.raises(LLMError) as caught:
        for event in stream_with_retry(provider, MESSAGES, policy=retry_policy):
            received.append(event)

    assert received == [Delta("partial ")]
    assert caught.value.code == ErrorCode.TIMEOUT
    assert provider.attempts == 1
    assert sleeps == []


def test_does_not_retry_non_retryable_errors():
    provider = ScriptedProvider([LLMError(ErrorCode.AUTH_FAILED)], ["never"])
    retry_policy, sleeps = policy()

    with pytest.raises(LLMError):
        list(stream_with_retry(provider, MESSAGES, policy=retry_policy))

    assert provider.attempts == 1
    assert sleeps == []


def test_total_time_bound_stops_retrying_before_max_attempts():
    provider = ScriptedProvider(*([[rate_limited()]] * 10))
    retry_policy, sleeps = policy(max_attempts=10, max_seconds=10.0)

    with pytest.raises(LLMError):
        list(stream_with_retry(provider, MESSAGES, policy=retry_policy))

    # Waits 1, 2, 4 (7 s in all); the next 8 s wait would end past 10 s, so it stops.
    assert sleeps == [1.0, 2.0, 4.0]
    assert provider.attempts == 4


def test_retry_after_from_the_server_wins_over_a_shorter_backoff():
    provider = ScriptedProvider([rate_limited(retry_after=5.0)], ["ok"])
    retry_policy, sleeps = policy()

    list(stream_with_retry(provider, MESSAGES, policy=retry_policy))

    assert sleeps == [5.0]


def test_jitter_shortens_the_delay_within_bounds():
    retry_policy = RetryPolicy(base_delay=2.0, jitter=0.5, rand=lambda: 1.0)
    assert retry_policy.delay_before(2, rate_limited()) == 1.0
    assert retry_policy.delay_before(3, rate_limited()) == 2.0
    assert RetryPolicy(max_delay=8.0, rand=lambda: 0.0).delay_before(10, rate_limited()) == 8.0


def test_closing_the_stream_closes_the_provider_stream():
    provider = ScriptedProvider(["a", "b", "c"])
    retry_policy, _ = policy()
    events = stream_with_retry(provider, MESSAGES, policy=retry_policy)

    assert next(events) == Delta("a")
    events.close()

    assert provider.closed == 1


def test_call_with_retry_returns_the_first_success():
    outcomes = [rate_limited(), LLMError(ErrorCode.TIMEOUT), "done"]
    retry_policy, sleeps = policy()

    def flaky():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert call_with_retry(flaky, policy=retry_policy) == "done"
    assert sleeps == [1.0, 2.0]


def test_call_with_retry_lets_other_exceptions_through():
    retry_policy, sleeps = policy()

    def broken():
        raise KeyError("bug")

    with pytest.raises(KeyError):
        call_with_retry(broken, policy=retry_policy)
    assert sleeps == []
