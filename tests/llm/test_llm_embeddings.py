"""Zhipu embeddings through the real SDK against the GLM test server."""

import math

import pytest
from zhipuai import APIRequestFailedError, ZhipuAI

from openspark.llm.base import ErrorCode, LLMError
from openspark.llm.embeddings import ZhipuEmbeddingProvider
from openspark.llm.retry import RetryPolicy
from openspark.llm.zhipu import map_zhipu_error

from .conftest import TEST_KEY


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture
def embedder(glm_server):
    provider = ZhipuEmbeddingProvider(api_key=TEST_KEY, base_url=glm_server.base_url, timeout=5)
    yield provider
    provider.close()


def test_vectors_have_the_requested_dimension_and_unit_length(embedder, glm_server):
    vectors = embedder.embed(["annual leave policy", "年假政策"])

    assert embedder.dimension == 1024
    assert [len(v) for v in vectors] == [1024, 1024]
    assert all(math.isclose(math.sqrt(cosine(v, v)), 1.0, abs_tol=1e-3) for v in vectors)
    body = glm_server.requests[0].json
    assert body["model"] == "embedding-3"
    assert body["dimensions"] == 1024


@pytest.mark.parametrize(("model", "dimension"), [("embedding-3", 256), ("embedding-2", 1024)])
def test_other_models_and_sizes(glm_server, model, dimension):
    provider = ZhipuEmbeddingProvider(
        api_key=TEST_KEY, base_url=glm_server.base_url, model=model, dimension=dimension
    )

    assert len(provider.embed(["hello"])[0]) == dimension
    assert ("dimensions" in glm_server.requests[0].json) is (model == "embedding-3")


def test_more_than_64_texts_are_sent_in_batches_in_order(embedder, glm_server):
    texts = [f"document number {i}" for i in range(130)]

    vectors = embedder.embed(texts)

    assert [len(r.json["input"]) for r in glm_server.requests] == [64, 64, 2]
    assert len(vectors) == 130
    assert vectors[100] == embedder.embed(["document number 100"])[0]


def test_texts_sharing_words_are_closer_than_unrelated_ones(embedder):
    leave, leave_again, unrelated = embedder.embed(
        [
            "employees get twenty days of annual leave",
            "how many days of annual leave do employees get",
            "the server room temperature alarm",
        ]
    )
    zh_leave, zh_leave_again, zh_unrelated = embedder.embed(
        ["员工每年有二十天年假", "员工的年假有多少天", "服务器机房温度报警"]
    )

    assert cosine(leave, leave_again) > 0.5 > abs(cosine(leave, unrelated))
    assert cosine(zh_leave, zh_leave_again) > 0.3 > abs(cosine(zh_leave, zh_unrelated))


def test_embeddings_are_deterministic(embedder):
    assert embedder.embed(["same text"]) == embedder.embed(["same text"])


def test_a_rate_limited_batch_is_retried_alone(glm_server):
    provider = ZhipuEmbeddingProvider(
        api_key=TEST_KEY,
        base_url=glm_server.base_url,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.01),
    )
    texts = [f"text {i}" for i in range(100)]
    glm_server.fail_next(1, status=429, code="1302")

    vectors = provider.embed(texts)

    assert len(vectors) == 100
    # The first batch fails once and is re-sent; the second batch is sent once.
    assert [len(r.json["input"]) for r in glm_server.requests] == [64, 64, 36]


def test_server_rejects_more_than_64_items_as_bad_request(glm_server):
    client = ZhipuAI(api_key=TEST_KEY, base_url=glm_server.base_url, max_retries=0)

    with pytest.raises(APIRequestFailedError) as caught:
        client.embeddings.create(input=["x"] * 65, model="embedding-3")

    error = map_zhipu_error(caught.value)
    assert error.code == ErrorCode.BAD_REQUEST
    assert error.provider_code == "1214"


def test_server_rejects_unsupported_dimensions(glm_server):
    client = ZhipuAI(api_key=TEST_KEY, base_url=glm_server.base_url, max_retries=0)

    with pytest.raises(APIRequestFailedError):
        client.embeddings.create(input=["x"], model="embedding-3", dimensions=300)


def test_invalid_configuration_is_refused_before_any_call():
    with pytest.raises(ValueError):
        ZhipuEmbeddingProvider(api_key=TEST_KEY, dimension=300)
    with pytest.raises(ValueError):
        ZhipuEmbeddingProvider(api_key=TEST_KEY, model="embedding-2", dimension=256)
    with pytest.raises(ValueError):
        ZhipuEmbeddingProvider(api_key=TEST_KEY, max_batch=65)


def test_auth_failure_is_mapped(glm_server):
    glm_server.api_key = "right"
    provider = ZhipuEmbeddingProvider(api_key="wrong", base_url=glm_server.base_url)

    with pytest.raises(LLMError) as caught:
        provider.embed(["x"])

    assert caught.value.code == ErrorCode.AUTH_FAILED
