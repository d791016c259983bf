"""Which providers this deployment uses, decided from Django settings at call time.

Settings are read inside the functions (never at import) so tests can override them; built
providers are cached per configuration so their HTTP connection pools are reused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from openspark.core.state import on_reset

from .base import ChatProvider, EmbeddingProvider
from .retry import RetryPolicy

PROVIDER_NAMES = ("auto", "zhipuai", "openai_compatible", "offline")

_cache: dict[tuple[Any, ...], Any] = {}
_cache_lock = threading.Lock()
on_reset(_cache.clear)  # keyed by the settings a provider was built from


def _setting(name: str, default: Any) -> Any:
    value = getattr(settings, name, default)
    return default if value is None and default is not None else value


def get_retry_policy() -> RetryPolicy:
    return RetryPolicy(
        max_attempts=int(_setting("LLM_RETRY_MAX_ATTEMPTS", 3)),
        max_seconds=float(_setting("LLM_RETRY_MAX_SECONDS", 60.0)),
    )


def chosen_provider_name() -> str:
    name = _setting("LLM_PROVIDER", "auto") or "auto"
    if name not in PROVIDER_NAMES:
        raise ImproperlyConfigured(f"LLM_PROVIDER must be one of {PROVIDER_NAMES}, not {name!r}.")
    if name != "auto":
        return name
    if _setting("ZHIPUAI_API_KEY", ""):
        return "zhipuai"
    if _setting("OPENAI_COMPAT_BASE_URL", ""):
        return "openai_compatible"
    return "offline"


def _chat_config(provider: str = "", model: str = "") -> tuple[Any, ...]:
    name = provider or chosen_provider_name()
    timeout = float(_setting("LLM_REQUEST_TIMEOUT", 60.0))
    if name == "zhipuai":
        api_key = _setting("ZHIPUAI_API_KEY", "")
        if not api_key:
            raise ImproperlyConfigured("LLM_PROVIDER is 'zhipuai' but ZHIPUAI_API_KEY is empty.")
        base_url = _setting("ZHIPUAI_BASE_URL", None)
        return (name, model or _setting("GLM_MODEL", "glm-4"), api_key, base_url, timeout)
    if name == "openai_compatible":
        base_url = _setting("OPENAI_COMPAT_BASE_URL", "")
        model = model or _setting("OPENAI_COMPAT_MODEL", "")
        if not base_url or not model:
            raise ImproperlyConfigured(
                "LLM_PROVIDER is 'openai_compatible' but OPENAI_COMPAT_BASE_URL or "
                "OPENAI_COMPAT_MODEL is empty."
            )
        return (name, model, _setting("OPENAI_COMPAT_API_KEY", ""), base_url, timeout)
    return (name, "offline", "", None, timeout)


def _build_chat_provider(config: tuple[Any, ...]) -> ChatProvider:
    name, model, api_key, base_url, timeout = config
    if name == "zhipuai":
        from .zhipu import ZhipuChatProvider  # the SDK is only imported where it is used

        return ZhipuChatProvider(api_key=api_key, model=model, base_url=base_url, timeout=timeout)
    if name == "openai_compatible":
        from .openai_compat import OpenAICompatChatProvider

        return OpenAICompatChatProvider(
            base_url=base_url, model=model, api_key=api_key, timeout=timeout
        )
    from .offline import OfflineChatProvider

    return OfflineChatProvider()


def _cached(config: tuple[Any, ...], build: Any) -> Any:
    with _cache_lock:
        if config not in _cache:
            _cache[config] = build(config)
        return _cache[config]


def get_chat_provider(*, provider: str = "", model: str = "") -> ChatProvider:
    """The deployment's provider and model, or the named ones (an assistant's choice, checked
    with `chat_model_check` when it was saved); empty names mean the deployment's default."""
    return _cached(("chat", *_chat_config(provider, model)), lambda c: _build_chat_provider(c[1:]))


@dataclass(frozen=True, slots=True)
class ChatModel:
    provider: str
    model: str


class UnknownChatModel(ValueError):
    """A provider or model this deployment cannot serve; `reason` is `unknown_provider`,
    `provider_not_configured` or `unknown_model`."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def _names(*groups: Any) -> list[str]:
    names: list[str] = []
    for group in groups:
        for name in [group] if isinstance(group, str) else group or []:
            if name and name not in names:
                names.append(name)
    return names


def chat_models_available() -> list[ChatModel]:
    """Every model of every configured provider, the defaults first: GLM_MODEL and GLM_MODELS
    when a Zhipu key is set, OPENAI_COMPAT_MODEL and OPENAI_COMPAT_MODELS when an
    OpenAI-compatible server is, and the offline provider always. Builds nothing."""
    models: list[ChatModel] = []
    if _setting("ZHIPUAI_API_KEY", ""):
        glm = _names(_setting("GLM_MODEL", "glm-4"), _setting("GLM_MODELS", []))
        models += [ChatModel("zhipuai", name) for name in glm]
    if _setting("OPENAI_COMPAT_BASE_URL", ""):
        compat = _names(_setting("OPENAI_COMPAT_MODEL", ""), _setting("OPENAI_COMPAT_MODELS", []))
        models += [ChatModel("openai_compatible", name) for name in compat]
    models.append(ChatModel("offline", "offline"))
    return models


def chat_model_check(*, provider: str, model: str) -> None:
    """Raise `UnknownChatModel` unless this deployment serves `model` through `provider`.
    No provider means the deployment's default (no model may be named then); a provider
    without a model means that provider's default model."""
    if not provider:
        if model:
            raise UnknownChatModel("unknown_provider", "A model needs its provider.")
        return
    if provider not in PROVIDER_NAMES or provider == "auto":
        raise UnknownChatModel("unknown_provider", f"Unknown provider {provider!r}.")
    served = [m.model for m in chat_models_available() if m.provider == provider]
    if not served:
        raise UnknownChatModel(
            "provider_not_configured", f"The {provider} provider is not configured."
        )
    if model and model not in served:
        raise UnknownChatModel("unknown_model", f"{provider} does not serve {model!r}.")


def get_embedding_provider_for_remote() -> EmbeddingProvider | None:
    """Zhipu `embedding-3` when a Zhipu key is set, else None (the caller uses the local model).

    Independent of LLM_PROVIDER: chat may run on a local OpenAI-compatible server while
    embeddings still come from Zhipu. Changing the model or dimension requires re-indexing.
    """
    api_key = _setting("ZHIPUAI_API_KEY", "")
    if not api_key:
        return None
    config = (
        "embeddings",
        api_key,
        _setting("ZHIPUAI_EMBEDDING_MODEL", "embedding-3"),
        int(_setting("ZHIPUAI_EMBEDDING_DIMENSION", 1024)),
        _setting("ZHIPUAI_BASE_URL", None),
        float(_setting("LLM_REQUEST_TIMEOUT", 60.0)),
        get_retry_policy(),
    )

    def build(c: tuple[Any, ...]) -> EmbeddingProvider:
        from .embeddings import ZhipuEmbeddingProvider

        _, key, model, dimension, base_url, timeout, retry = c
        return ZhipuEmbeddingProvider(
            api_key=key,
            model=model,
            dimension=dimension,
            base_url=base_url,
            timeout=timeout,
            retry=retry,
        )

    return _cached(config, build)


def provider_status() -> dict[str, Any]:
    """What the UI shows in its offline-mode notice; builds nothing, calls nothing."""
    name, model, *_ = _chat_config()
    return {"name": name, "model": model, "offline": name == "offline"}
