"""Chat with any OpenAI-style endpoint (vLLM, Ollama, Xinference serving GLM-4-9B...) over httpx."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import httpx

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
    estimate_prompt_tokens,
    estimate_tokens,
    parse_error_body,
    parse_retry_after,
    stream_finish,
)


def iter_sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The `data` of each server-sent event; an event ends at a blank line."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


def _status_error(response: httpx.Response) -> LLMError:
    try:
        body: object = response.json()
    except ValueError:
        body = response.text
    provider_code, provider_message = parse_error_body(body)
    return error_from_status(
        response.status_code,
        provider_code=provider_code,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        detail=f"{response.status_code} {provider_code}: {provider_message}"[:1000],
    )


def _chunk_error(error: object) -> LLMError:
    provider_code, provider_message = parse_error_body({"error": error})
    detail = f"stream error {provider_code}: {provider_message}"[:1000]
    known = error_from_provider_code(provider_code, detail=detail)
    return known or LLMError(ErrorCode.ERROR, provider_code=provider_code, detail=detail)


def _finish_error(finish_reason: str | None) -> LLMError | None:
    if finish_reason in ("content_filter", "sensitive"):
        return LLMError(ErrorCode.CONTENT_FILTERED, detail=f"finish_reason={finish_reason}")
    return None


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
    )


class OpenAICompatChatProvider(ChatProvider):
    name = "openai_compatible"
    is_offline = False

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "",
        timeout: float = 60.0,
        max_connections: int = 256,
    ) -> None:
        if not base_url or not model:
            raise ValueError("An OpenAI-compatible provider needs a base URL and a model.")
        self.model = model
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            headers=headers,
            # For a stream, the read timeout bounds the wait for the first chunk and between chunks.
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections // 4
            ),
        )

    def _body(
        self,
        messages: Sequence[ChatMessage],
        passages: Sequence[Passage],
        temperature: float | None,
        max_tokens: int | None,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": build_prompt_messages(messages, passages),
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return body

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        passages: Sequence[Passage] = (),
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Generator[ChatEvent, None, None]:
        body = self._body(messages, passages, temperature, max_tokens, stream=True)
        finish_reason: str | None = None
        usage: Usage | None = None
        streamed: list[str] = []
        try:
            with self._client.stream(
                "POST", f"{self.base_url}/chat/completions", json=body
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _status_error(response)
                for data in iter_sse_data(response.iter_lines()):
                    if data.strip() == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        raise _chunk_error(chunk["error"])
                    usage = _usage(chunk.get("usage")) or usage
                    for choice in chunk.get("choices") or ():
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            streamed.append(content)
                            yield Delta(content)
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
        except httpx.TimeoutException as exc:
            raise LLMError(ErrorCode.TIMEOUT, detail=repr(exc)) from exc
        except httpx.TransportError as exc:
            raise LLMError(ErrorCode.UNAVAILABLE, detail=repr(exc)) from exc
        except (ValueError, AttributeError) as exc:
            # Not JSON, or JSON of an unexpected shape: the endpoint is not OpenAI-compatible.
            raise LLMError(ErrorCode.ERROR, detail=f"malformed stream chunk: {exc!r}") from exc
        yield stream_finish(
            finish_reason=finish_reason,
            usage=usage,
            error=_finish_error(finish_reason),
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
        body = self._body(messages, passages, temperature, max_tokens, stream=False)
        try:
            response = self._client.post(f"{self.base_url}/chat/completions", json=body)
            if response.status_code >= 400:
                raise _status_error(response)
            payload = response.json()
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
        except httpx.TimeoutException as exc:
            raise LLMError(ErrorCode.TIMEOUT, detail=repr(exc)) from exc
        except httpx.TransportError as exc:
            raise LLMError(ErrorCode.UNAVAILABLE, detail=repr(exc)) from exc
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMError(ErrorCode.ERROR, detail=f"malformed completion: {exc!r}") from exc
        if error := _finish_error(choice.get("finish_reason")):
            raise error
        usage = _usage(payload.get("usage")) or Usage(
            prompt_tokens=estimate_prompt_tokens(messages, passages),
            completion_tokens=estimate_tokens(text),
        )
        return text, usage

    def close(self) -> None:
        self._client.close()
