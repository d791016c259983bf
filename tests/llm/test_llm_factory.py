"""Provider choice from settings, read at call time."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from openspark.llm.base import Delta
from openspark.llm.embeddings import ZhipuEmbeddingProvider
from openspark.llm.factory import (
    get_chat_provider,
    get_embedding_provider_for_remote,
    get_retry_policy,
    provider_status,
)
from openspark.llm.offline import OfflineChatProvider
from openspark.llm.openai_compat import OpenAICompatChatProvider
from openspark.llm.zhipu import ZhipuChatProvider

# Every test states all the settings the factory reads, so the machine's env cannot leak in.
UNCONFIGURED = {
    "LLM_PROVIDER": "auto",
    "ZHIPUAI_API_KEY": "",
    "ZHIPUAI_BASE_URL": None,
    "GLM_MODEL": "glm-4",
    "OPENAI_COMPAT_BASE_URL": "",
    "OPENAI_COMPAT_MODEL": "glm-4-9b-chat",
    "OPENAI_COMPAT_API_KEY": "",
    "LLM_REQUEST_TIMEOUT": 5.0,
}


def settings_with(**overrides):
    return override_settings(**{**UNCONFIGURED, **overrides})


def test_no_key_and_no_url_means_offline():
    with settings_with():
        provider = get_chat_provider()
        status = provider_status()

    assert isinstance(provider, OfflineChatProvider)
    assert status == {"name": "offline", "model": "offline", "offline": True}


def test_a_zhipu_key_selects_glm_and_the_provider_reaches_the_configured_url(glm_server):
    with settings_with(
        ZHIPUAI_API_KEY="k", ZHIPUAI_BASE_URL=glm_server.base_url, GLM_MODEL="glm-4-air"
    ):
        provider = get_chat_provider()
        status = provider_status()

    assert isinstance(provider, ZhipuChatProvider)
    assert status == {"name": "zhipuai", "model": "glm-4-air", "offline": False}
    events = list(provider.stream([{"role": "user", "content": "ping"}]))
    assert "".join(e.text for e in events if isinstance(e, Delta)).startswith("Echo: ping.")
    assert glm_server.requests[0].json["model"] == "glm-4-air"


def test_zhipu_wins_over_an_openai_compatible_url_in_auto_mode():
    with settings_with(ZHIPUAI_API_KEY="k", OPENAI_COMPAT_BASE_URL="http://127.0.0.1:1/v1"):
        assert provider_status()["name"] == "zhipuai"


def test_an_openai_compatible_url_without_zhipu_key(glm_server):
    with settings_with(OPENAI_COMPAT_BASE_URL=glm_server.openai_base_url):
        provider = get_chat_provider()

    assert isinstance(provider, OpenAICompatChatProvider)
    assert provider.model == "glm-4-9b-chat"
    assert provider.complete([{"role": "user", "content": "hi"}])[0].startswith("Echo: hi.")


def test_explicit_offline_ignores_a_configured_key():
    with settings_with(LLM_PROVIDER="offline", ZHIPUAI_API_KEY="k"):
        assert isinstance(get_chat_provider(), OfflineChatProvider)


@pytest.mark.parametrize(
    "overrides",
    [
        {"LLM_PROVIDER": "zhipuai"},
        {"LLM_PROVIDER": "openai_compatible"},
        {
            "LLM_PROVIDER": "openai_compatible",
            "OPENAI_COMPAT_BASE_URL": "http://x/v1",
            "OPENAI_COMPAT_MODEL": "",
        },
        {"LLM_PROVIDER": "gpt"},
    ],
)
def test_explicit_choice_without_its_settings_is_a_configuration_error(overrides):
    with settings_with(**overrides), pytest.raises(ImproperlyConfigured):
        get_chat_provider()


def test_providers_are_reused_per_configuration():
    with settings_with(ZHIPUAI_API_KEY="k", ZHIPUAI_BASE_URL="http://127.0.0.1:1/api/paas/v4"):
        first = get_chat_provider()
        second = get_chat_provider()
    with settings_with(ZHIPUAI_API_KEY="k", ZHIPUAI_BASE_URL="http://127.0.0.1:2/api/paas/v4"):
        third = get_chat_provider()

    assert first is second
    assert third is not first


def test_remote_embeddings_need_a_zhipu_key(glm_server):
    with settings_with():
        assert get_embedding_provider_for_remote() is None
    with settings_with(ZHIPUAI_API_KEY="k", ZHIPUAI_BASE_URL=glm_server.base_url):
        embedder = get_embedding_provider_for_remote()

    assert isinstance(embedder, ZhipuEmbeddingProvider)
    assert (embedder.model, embedder.dimension, embedder.max_batch) == ("embedding-3", 1024, 64)
    assert len(embedder.embed(["hello"])[0]) == 1024


def test_retry_policy_from_settings():
    with settings_with(LLM_RETRY_MAX_ATTEMPTS=5, LLM_RETRY_MAX_SECONDS=12):
        policy = get_retry_policy()

    assert (policy.max_attempts, policy.max_seconds) == (5, 12.0)
