"""GLM chat through the real `zhipuai` SDK: the production client, which tests point at the
project's GLM-compatible test server."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import httpx
from zhipuai import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    ZhipuAI,
    ZhipuAIError,
)
from zhipuai.core import StreamResponse

from .base import (
    ChatEvent,
    ChatMessage,
    ChatProvider,
    Delta,
    ErrorCode,
    LLMError,
    Passage,
    Usage,
    build_prompt_messages,
    error_from_provider_code,
    error_from_status,
    parse_error_body,
    parse_retry_after,
    stream_finish,
)

DEFAULT_TIMEOUT = 60.0
# The SDK's own pool allows 50 connections; a worker streaming many replies at once needs more.
DEFAULT_MAX_CONNECTIONS = 256


def make_zhipu_client(
    *,
    api_key: str,
    base_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> ZhipuAI:
    if not api_key:
        raise ValueError("A Zhipu API key is required.")
    # For a stream, the read timeout bounds the wait for the first chunk and between chunks.
    http_timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
    return ZhipuAI(
        api_key=api_key,
        base_url=base_url,  # None: the SDK reads ZHIPUAI_BASE_URL, then uses Zhipu's cloud.
        timeout=http_timeout,
        # Retries are decided by openspark.llm.retry, which knows whether text was shown yet.
        max_retries=0,
        http_client=httpx.Client(
            timeout=http_timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections // 4
            ),
        ),
    )


def map_zhipu_error(exc: Exception) -> LLMError:
    detail = f"{type(exc).__name__}: {exc}"[:1000]
    # Order matters: APITimeoutError < APIConnectionError < APIResponseError.
    if isinstance(exc, APITimeoutError | httpx.TimeoutException):
        return LLMError(ErrorCode.TIMEOUT, detail=detail)
    if isinstance(exc, APIConnectionError | httpx.TransportError):
        return LLMError(ErrorCode.UNAVAILABLE, detail=detail)
    if isinstance(exc, APIStatusError):
        try:
            body: object = exc.response.json()
        except (ValueError, httpx.ResponseNotRead):
            body = None
        provider_code, provider_message = parse_error_body(body)
        return error_from_status(
            exc.status_code,
            provider_code=provider_code,
            retry_after=parse_retry_after(exc.response.headers.get("retry-after")),
            detail=f"{exc.status_code} {provider_code}: {provider_message}"[:1000],
        )
    if isinstance(exc, APIResponseError):
        # An {"error": ...} chunk inside an otherwise successful stream.
        provider_code, provider_message = parse_error_body({"error": exc.json_data})
        detail = f"stream error {provider_code}: {provider_message}"[:1000]
        known = error_from_provider_code(provider_code, detail=detail)
        return known or LLMError(ErrorCode.ERROR, provider_code=provider_code, detail=detail)
    return LLMError(ErrorCode.ERROR, detail=detail)


def error_for_finish_reason(finish_reason: str | None) -> LLMError | None:
    """GLM ends some streams "successfully" with a reason that means the answer is unusable."""
    if finish_reason == "sensitive":
        return LLMError(ErrorCode.CONTENT_FILTERED, detail="finish_reason=sensitive")
    if finish_reason == "network_error":
        return LLMError(ErrorCode.UNAVAILABLE, detail="finish_reason=network_error")
    return None


# What the SDK and its transport may raise while sending or reading; ValueError covers a
# malformed JSON chunk. Anything else is a bug of ours and propagates unchanged.
SDK_ERRORS = (ZhipuAIError, httpx.HTTPError, ValueError)


class ZhipuChatProvider(ChatProvider):
    name = "zhipuai"
    is_offline = False

    def __init__(
        self,
        *,
        api_key: str,
        model: str = "glm-4",
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        client: ZhipuAI | None = None,
    ) -> None:
        self.model = model
        self._client = client or make_zhipu_client(
            api_key=api_key, base_url=base_url, timeout=timeout, max_connections=max_connections
        )

    def _options(self, temperature: float | None, max_tokens: int | None) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if temperature is not None:
            options["temperature"] = temperature  # the SDK clamps it into GLM's (0, 1)
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        return options

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        passages: Sequence[Passage] = (),
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Generator[ChatEvent, None, None]:
        prompt = build_prompt_messages(messages, passages)
        response = None
        finish_reason: str | None = None
        usage: Usage | None = None
        streamed: list[str] = []
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=prompt,
                stream=True,
                **self._options(temperature, max_tokens),
            )
            # The SDK's own stream (its SSE reading and error events) with each chunk as the
            # JSON object it is: building the SDK's pydantic chunk model was ~85 % of the
            # worker's CPU per token (docs/performance.md, "Chat streams").
            chunks = StreamResponse(
                cast_type=object, response=response.response, client=self._client
            )
            for chunk in chunks:
                if not isinstance(chunk, dict):
                    raise ValueError(f"stream chunk is not a JSON object: {chunk!r:.200}")
                if reported := chunk.get("usage"):
                    usage = Usage(
                        prompt_tokens=int(reported.get("prompt_tokens") or 0),
                        completion_tokens=int(reported.get("completion_tokens") or 0),
                    )
                for choice in chunk.get("choices") or ():
                    if text := (choice.get("delta") or {}).get("content"):
                        streamed.append(text)
                        yield Delta(text)
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
        except SDK_ERRORS as exc:
            raise map_zhipu_error(exc) from exc
        finally:
            # Also runs on GeneratorExit (the user pressed stop): free the connection now.
            if response is not None:
                response.response.close()
        yield stream_finish(
            finish_reason=finish_reason,
            usage=usage,
            error=error_for_finish_reason(finish_reason),
            messages=messages,
            passages=passages,
            streamed=streamed,
        )

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        passages: Sequence[Passage] = (),
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> tuple[str, Usage]:
        try:
            completion = self._client.chat.completions.create(
                model=self.model,
                messages=build_prompt_messages(messages, passages),
                stream=False,
                **self._options(temperature, max_tokens),
            )
        except SDK_ERRORS as exc:
            raise map_zhipu_error(exc) from exc
        if not completion.choices:
            raise LLMError(ErrorCode.ERROR, detail="completion without choices")
        choice = completion.choices[0]
        if error := error_for_finish_reason(choice.finish_reason):
            raise error
        return choice.message.content or "", Usage(
            prompt_tokens=completion.usage.prompt_tokens,
            completion_tokens=completion.usage.completion_tokens,
        )

    def close(self) -> None:
        self._client.close()
