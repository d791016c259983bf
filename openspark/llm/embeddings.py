"""Embedding providers: the interface lives in `base.EmbeddingProvider`; this module holds the
remote (Zhipu) client. The local-model embedder implements the same interface elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

from zhipuai import ZhipuAI

from .base import EmbeddingProvider, ErrorCode, LLMError
from .retry import NO_RETRY, RetryPolicy, call_with_retry
from .zhipu import DEFAULT_TIMEOUT, SDK_ERRORS, make_zhipu_client, map_zhipu_error

__all__ = ["EmbeddingProvider", "ZhipuEmbeddingProvider"]

# Zhipu's limits: embedding-2 is fixed at 1024; embedding-3 takes one of these sizes.
EMBEDDING_2_DIMENSION = 1024
EMBEDDING_3_DIMENSIONS = (256, 512, 1024, 2048)
ZHIPU_MAX_BATCH = 64


class ZhipuEmbeddingProvider(EmbeddingProvider):
    name = "zhipuai"

    def __init__(
        self,
        *,
        api_key: str,
        model: str = "embedding-3",
        dimension: int = 1024,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_batch: int = ZHIPU_MAX_BATCH,
        retry: RetryPolicy = NO_RETRY,
        client: ZhipuAI | None = None,
    ) -> None:
        if model == "embedding-2":
            if dimension != EMBEDDING_2_DIMENSION:
                raise ValueError("embedding-2 vectors always have 1024 dimensions.")
        elif dimension not in EMBEDDING_3_DIMENSIONS:
            raise ValueError(f"{model} dimension must be one of {EMBEDDING_3_DIMENSIONS}.")
        if not 1 <= max_batch <= ZHIPU_MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {ZHIPU_MAX_BATCH}.")
        self.model = model
        self.dimension = dimension
        self.max_batch = max_batch
        # Retried per batch, so a 429 on batch 7 does not re-send batches 1-6.
        self._retry = retry
        self._client = client or make_zhipu_client(
            api_key=api_key, base_url=base_url, timeout=timeout
        )

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.max_batch):
            batch = list(texts[start : start + self.max_batch])
            vectors.extend(
                call_with_retry(lambda b=batch: self._embed_batch(b), policy=self._retry)
            )
        return vectors

    def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        options = {} if self.model == "embedding-2" else {"dimensions": self.dimension}
        try:
            response = self._client.embeddings.create(input=batch, model=self.model, **options)
        except SDK_ERRORS as exc:
            raise map_zhipu_error(exc) from exc
        data = sorted(response.data, key=lambda item: item.index or 0)
        if len(data) != len(batch) or any(len(d.embedding) != self.dimension for d in data):
            raise LLMError(
                ErrorCode.ERROR,
                detail=f"expected {len(batch)} vectors of {self.dimension} dims, "
                f"got {[len(d.embedding) for d in data]}",
            )
        return [d.embedding for d in data]

    def close(self) -> None:
        self._client.close()
