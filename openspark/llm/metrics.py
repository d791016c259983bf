"""Model calls as Prometheus metrics, by provider and model: time to the first token and to the
end of the stream (what users wait for, retries included), tokens as the provider reported
them, and failures by error code. Measured around `stream_with_retry`, so replies replayed
from the answer cache (no model call) are not counted."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

from .base import ChatEvent, ChatProvider, Delta, Finish, LLMError

LLM_FIRST_TOKEN = Histogram(
    "openspark_llm_time_to_first_token_seconds",
    "From the request to the model's first text, retries included.",
    ["provider", "model"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0),
)
LLM_STREAM = Histogram(
    "openspark_llm_stream_seconds",
    "From the request to the end of the stream, by outcome (completed, stopped, failed).",
    ["provider", "model", "outcome"],
    buckets=(0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0),
)
LLM_TOKENS = Counter(
    "openspark_llm_tokens_total",
    "Tokens the provider reported for completed streams, by kind (prompt, completion).",
    ["provider", "model", "kind"],
)
LLM_ERRORS = Counter(
    "openspark_llm_errors_total",
    "Streams that ended with an error, by its code (provider_rate_limited, ...).",
    ["provider", "model", "code"],
)


class StreamObservation:
    """`with StreamObservation(provider) as seen:` around a stream, `seen.event(e)` per event."""

    def __init__(self, provider: ChatProvider) -> None:
        self.labels = (provider.name, provider.model)
        self.started = time.monotonic()
        self.first_token = False
        self.finished = False

    def __enter__(self) -> StreamObservation:
        return self

    def event(self, event: ChatEvent) -> None:
        if isinstance(event, Delta) and event.text and not self.first_token:
            self.first_token = True
            LLM_FIRST_TOKEN.labels(*self.labels).observe(time.monotonic() - self.started)
        elif isinstance(event, Finish):
            self.finished = True
            LLM_TOKENS.labels(*self.labels, "prompt").inc(event.usage.prompt_tokens)
            LLM_TOKENS.labels(*self.labels, "completion").inc(event.usage.completion_tokens)

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None and self.finished:
            outcome = "completed"
        elif exc_type is GeneratorExit or (exc_type is None and not self.finished):
            outcome = "stopped"  # the reader closed the stream early
        else:
            outcome = "failed"
            code = exc.code.value if isinstance(exc, LLMError) else "internal_error"
            LLM_ERRORS.labels(*self.labels, code).inc()
        LLM_STREAM.labels(*self.labels, outcome).observe(time.monotonic() - self.started)
