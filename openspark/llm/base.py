"""The two provider interfaces (chat, embeddings), their value types and the one error type.

Everything above this package (prompt building, tasks, consumers) talks to these names only;
which concrete provider answers is decided by `openspark.llm.factory`.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypedDict


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved chunk offered to the model; `index` is the 1-based citation number ([1])."""

    index: int
    document_id: int | str
    document_title: str
    chunk_id: int | str
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    """Always the last event of a successful stream, exactly once."""

    finish_reason: str
    usage: Usage


ChatEvent = Delta | Finish


class ErrorCode(StrEnum):
    RATE_LIMITED = "provider_rate_limited"
    UNAVAILABLE = "provider_unavailable"
    TIMEOUT = "provider_timeout"
    AUTH_FAILED = "provider_auth_failed"
    BAD_REQUEST = "provider_bad_request"
    CONTENT_FILTERED = "content_filtered"
    ERROR = "provider_error"


# Shown to end users as-is, so: plain English, no provider internals, says what to do.
_DEFAULT_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.RATE_LIMITED: "The AI service is busy right now. Please try again in a moment.",
    ErrorCode.UNAVAILABLE: "The AI service is temporarily unavailable. Please try again shortly.",
    ErrorCode.TIMEOUT: "The AI service took too long to respond. Please try again.",
    ErrorCode.AUTH_FAILED: (
        "The AI service rejected the configured credentials. "
        "An administrator needs to check the API key."
    ),
    ErrorCode.BAD_REQUEST: "The AI service could not process this request.",
    ErrorCode.CONTENT_FILTERED: (
        "The AI service declined to answer because the content was flagged as sensitive. "
        "Please rephrase your message."
    ),
    ErrorCode.ERROR: "The AI service returned an unexpected error. Please try again.",
}

_RETRYABLE_BY_DEFAULT = {ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE, ErrorCode.TIMEOUT}


class LLMError(Exception):
    """A provider failure, already translated: `message` is safe to show to end users.

    `detail` keeps the provider's own words for logs only.
    """

    def __init__(
        self,
        code: ErrorCode | str,
        *,
        message: str | None = None,
        retryable: bool | None = None,
        status: int | None = None,
        provider_code: str | None = None,
        retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        self.code = ErrorCode(code)
        self.message = message or _DEFAULT_MESSAGES[self.code]
        self.retryable = self.code in _RETRYABLE_BY_DEFAULT if retryable is None else retryable
        self.status = status
        self.provider_code = provider_code
        self.retry_after = retry_after
        self.detail = detail
        super().__init__(self.message)

    def __repr__(self) -> str:
        return (
            f"LLMError(code={self.code.value!r}, retryable={self.retryable}, "
            f"status={self.status}, provider_code={self.provider_code!r}, detail={self.detail!r})"
        )


# Zhipu business codes say more than the HTTP status (1301 arrives with a 400, 1113 with a 429
# that no retry can fix), so they win when we know them: code -> (our code, message, retryable).
_PROVIDER_CODES: dict[str, tuple[ErrorCode, str | None, bool | None]] = {
    **dict.fromkeys(("1000", "1001", "1002", "1003", "1004"), (ErrorCode.AUTH_FAILED, None, None)),
    "1113": (
        ErrorCode.RATE_LIMITED,
        "The AI service account has run out of credit. An administrator needs to top it up.",
        False,
    ),
    "1301": (ErrorCode.CONTENT_FILTERED, None, None),
    **dict.fromkeys(("1302", "1303", "1305"), (ErrorCode.RATE_LIMITED, None, None)),
    "1304": (
        ErrorCode.RATE_LIMITED,
        "The AI service's daily limit has been reached. Please try again later.",
        False,
    ),
    **dict.fromkeys(("1234", "500"), (ErrorCode.UNAVAILABLE, None, None)),
    **dict.fromkeys(("1210", "1211", "1213", "1214", "1261"), (ErrorCode.BAD_REQUEST, None, None)),
}


def error_from_provider_code(
    provider_code: str | None,
    *,
    status: int | None = None,
    retry_after: float | None = None,
    detail: str = "",
) -> LLMError | None:
    if provider_code not in _PROVIDER_CODES:
        return None
    code, message, retryable = _PROVIDER_CODES[provider_code]
    return LLMError(
        code,
        message=message,
        retryable=retryable,
        status=status,
        provider_code=provider_code,
        retry_after=retry_after,
        detail=detail,
    )


def error_from_status(
    status: int,
    *,
    provider_code: str | None = None,
    retry_after: float | None = None,
    detail: str = "",
) -> LLMError:
    known = error_from_provider_code(
        provider_code, status=status, retry_after=retry_after, detail=detail
    )
    if known is not None:
        return known
    if status == 429:
        code = ErrorCode.RATE_LIMITED
    elif status in (401, 403):
        code = ErrorCode.AUTH_FAILED
    elif status == 408:
        code = ErrorCode.TIMEOUT
    elif status >= 500:
        code = ErrorCode.UNAVAILABLE
    elif status in (400, 404, 413, 422):
        code = ErrorCode.BAD_REQUEST
    else:
        code = ErrorCode.ERROR
    return LLMError(
        code, status=status, provider_code=provider_code, retry_after=retry_after, detail=detail
    )


def parse_error_body(body: object) -> tuple[str | None, str]:
    """(provider code, provider message) from Zhipu's and OpenAI's `{"error": {...}}` shapes;
    Zhipu sends codes as strings, some OpenAI-style servers as numbers or not at all."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, str(body)[:500] if body else ""
    code = error.get("code")
    message = error.get("message")
    return (
        str(code) if code not in (None, "") else None,
        message if isinstance(message, str) else "",
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds form only; the HTTP-date form is not used by LLM endpoints."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def stream_finish(
    *,
    finish_reason: str | None,
    usage: Usage | None,
    error: LLMError | None,
    messages: Sequence[ChatMessage],
    passages: Sequence[Passage],
    streamed: Sequence[str],
) -> Finish:
    """A stream's closing event: it must have ended with a finish_reason, a reason that means
    an unusable answer (`error`) is raised, and usage not reported by the provider is estimated."""
    if finish_reason is None:
        raise LLMError(ErrorCode.UNAVAILABLE, detail="stream ended without a finish_reason")
    if error is not None:
        raise error
    return Finish(
        finish_reason=finish_reason,
        usage=usage
        or Usage(
            prompt_tokens=estimate_prompt_tokens(messages, passages),
            completion_tokens=estimate_tokens("".join(streamed)),
        ),
    )


class ChatProvider(abc.ABC):
    name: str
    model: str
    is_offline: bool = False

    @abc.abstractmethod
    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        passages: Sequence[Passage] = (),
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Generator[ChatEvent, None, None]:
        """Yield `Delta`s then exactly one `Finish`, or raise `LLMError`.

        `messages` is the plain conversation (history window + the new user message);
        `passages` are the retrieved sources. The provider turns passages into its prompt
        (remote models) or its answer (offline), so callers never put them into `messages`.
        The request is sent on the first `next()`; closing the iterator early releases it.
        """

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        passages: Sequence[Passage] = (),
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> tuple[str, Usage]:
        parts: list[str] = []
        usage = Usage(prompt_tokens=0, completion_tokens=0)
        for event in self.stream(
            messages, passages=passages, temperature=temperature, max_tokens=max_tokens
        ):
            if isinstance(event, Delta):
                parts.append(event.text)
            else:
                usage = event.usage
        return "".join(parts), usage


class EmbeddingProvider(abc.ABC):
    name: str
    model: str
    dimension: int
    # Largest number of texts one provider call accepts; `embed` splits bigger lists itself.
    max_batch: int

    @abc.abstractmethod
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector of `dimension` floats per text, in input order; raises `LLMError`."""


SOURCES_INSTRUCTIONS = (
    "Answer the user's question using the numbered sources below when they are relevant. "
    "Cite every source you use inline with its number in square brackets, like [1] or [2]. "
    "If the sources do not contain the answer, say so. "
    "Reply in the language of the user's question."
)


def format_sources(passages: Sequence[Passage]) -> str:
    blocks = [f"[{p.index}] {p.document_title}\n{p.text.strip()}" for p in passages]
    return SOURCES_INSTRUCTIONS + "\n\nSources:\n\n" + "\n\n".join(blocks)


def build_prompt_messages(
    messages: Sequence[ChatMessage], passages: Sequence[Passage]
) -> list[ChatMessage]:
    """Fresh dicts (the zhipuai SDK edits message dicts in place), with the sources appended to
    the leading system message, or in a new one when there is none."""
    prompt: list[ChatMessage] = [{"role": m["role"], "content": m["content"]} for m in messages]
    if not passages:
        return prompt
    sources = format_sources(passages)
    if prompt and prompt[0]["role"] == "system":
        prompt[0]["content"] = f"{prompt[0]['content']}\n\n{sources}"
    else:
        prompt.insert(0, {"role": "system", "content": sources})
    return prompt


_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def contains_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def estimate_tokens(text: str) -> int:
    """Rough count for when a provider reports no usage: one token per CJK character, about
    four characters per token otherwise (the usual ratios of BPE tokenizers)."""
    cjk = len(_CJK.findall(text))
    rest = len(text) - cjk
    return cjk + (rest + 3) // 4


def estimate_prompt_tokens(messages: Sequence[ChatMessage], passages: Sequence[Passage]) -> int:
    return sum(estimate_tokens(m["content"]) for m in build_prompt_messages(messages, passages))
