"""Search latency as a client sees it: `POST /api/v1/knowledge/search` through a real uvicorn
with API-key authentication, on a base freshly ingested through the product's own path
(multipart upload through the API, the Celery ingest worker as `make run` starts it, the local
model, Milvus Lite's server). Run: `.venv/bin/python bench/search.py` (~5 minutes on 2 cores).

Side by side, in this process against the same Milvus Lite server and database: the raw
pymilvus calls the store makes (dense search, BM25 search), the query embedding, and
`knowledge.retrieval.search` (uncached) — so the ratio shows where a request's time goes.
Every question is distinct and asked once per mode, so no request hits the retrieval cache.

Documents: Debian's English manual pages (bench/manpages.py), body cut to `--body-chars`, so
240 pages make ~1,000 chunks (the issue's "240 short documents").

Large bases: the local model embeds ~5-30 chunks/s on this box, so 100k chunks would take
hours. `--embedder glm-test` runs the same path with Zhipu `embedding-3` served by the
project's GLM test server (openspark/llm/testserver.py: deterministic feature-hashing vectors
in which texts sharing words are close; `--dimension`, default 512) through the real zhipuai
SDK: the documents, chunks, upload, worker, store and search are the product's, only the
vectors' arithmetic is cheap (and the query is embedded by an HTTP call instead of the local
model). E.g. `--embedder glm-test --pages 6000 --body-chars 20000` for ~100k chunks.
Options: --pages, --body-chars, --queries (per mode), --upload-batch, --ingest-concurrency,
--settle (measure again once Milvus Lite's background work is done), --embedder, --dimension.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import wait_until_idle  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="openspark-bench-search-"))

from openspark.embedded import (  # noqa: E402
    die_with_parent,
    free_port,
    port_open,
    start_milvus_lite,
    start_redis,
)


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=240)
    parser.add_argument("--body-chars", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200, help="per mode, through HTTP")
    parser.add_argument("--upload-batch", type=int, default=20)
    parser.add_argument("--ingest-concurrency", type=int, default=2)
    parser.add_argument("--settle", action="store_true")
    parser.add_argument("--embedder", choices=["local", "glm-test"], default="local")
    parser.add_argument("--dimension", type=int, default=512, choices=[256, 512, 1024, 2048])
    return parser.parse_args()


# Parsed before anything starts: the embedder decides the environment of every process.
ARGS = _options()
REDIS = start_redis(WORK / "redis", persist=False)
MILVUS = start_milvus_lite(WORK / "milvus" / "data")
ENV = dict(
    os.environ,
    DJANGO_SETTINGS_MODULE="openspark.settings.local",
    DEBUG="0",
    OPENSPARK_VAR_DIR=str(WORK),
    REDIS_URL=REDIS.url,
    REDIS_KEY_PREFIX="osbench",
    MILVUS_URI=MILVUS.url,
    KNOWLEDGE_EMBEDDER="local",
    KNOWLEDGE_COLLECTION_PREFIX="bench",
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    THROTTLE_GLOBAL_LIMIT=str(10**9),
    LOG_LEVEL="WARNING",
    NO_PROXY="127.0.0.1,localhost",
    CELERY_TASK_ALWAYS_EAGER="0",
)
ENV.pop("DATABASE_URL", None)
GLM = None
if ARGS.embedder == "glm-test":
    _port = free_port()
    GLM = subprocess.Popen(
        [sys.executable, "-m", "openspark.llm.testserver", "--port", str(_port)],
        cwd=ROOT, stdout=open(WORK / "glm.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        preexec_fn=die_with_parent,
    )  # fmt: skip
    while not port_open(_port):
        time.sleep(0.1)
    ENV.update(
        KNOWLEDGE_EMBEDDER="zhipuai",
        ZHIPUAI_API_KEY="bench",
        ZHIPUAI_BASE_URL=f"http://127.0.0.1:{_port}/api/paas/v4",
        ZHIPUAI_EMBEDDING_MODEL="embedding-3",
        ZHIPUAI_EMBEDDING_DIMENSION=str(ARGS.dimension),
    )
os.environ.clear()
os.environ.update(ENV)

import django  # noqa: E402

django.setup()

from bench.manpages import load_manpages  # noqa: E402


def loadavg() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    from knowledge.evaluation import percentile as interpolated

    return interpolated(values, q)


class Stack:
    """uvicorn (one process) and the ingest worker, started as `make run` starts them."""

    def __init__(self, *, ingest_concurrency: int) -> None:
        self.procs: list[subprocess.Popen] = []
        self.ingest_concurrency = ingest_concurrency

    def _spawn(self, name: str, args: list[str], env: dict) -> subprocess.Popen:
        log = open(WORK / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def web(self) -> str:
        port = free_port()
        proc = self._spawn(
            "uvicorn",
            [sys.executable, "-m", "uvicorn", "openspark.asgi:application", "--host",
             "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
            ENV,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((WORK / "uvicorn.log").read_text()[-3000:])
            time.sleep(0.1)
        return f"http://127.0.0.1:{port}"

    def ingest_worker(self) -> None:
        from openspark.devstack import worker_commands

        env = dict(ENV, CELERY_INGEST_CONCURRENCY=str(self.ingest_concurrency))
        [(name, args)] = [(n, a) for n, a in worker_commands(env) if n == "worker-ingest"]
        self._spawn(name, args, env)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


class RawClient:
    """Keep-alive HTTP/1.1 on a blocking socket (bench/cache.py's client, POST): next to
    nothing of its own, so its figures are the server's time."""

    def __init__(self, url: str, key: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host = f"{host}:{port}".encode()
        self.key = key.encode()
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        self.sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self.host, self.key, len(body), body)
        )
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(self.buffer) < length:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, data

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


def seed() -> tuple[str, object]:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from accounts.services import api_key_create
    from throttling.models import Plan

    call_command("migrate", verbosity=0)
    # The bench measures search, not the plan's limits or quotas (0 = unlimited).
    Plan.objects.update(
        requests_per_minute=10**6, knowledge_per_minute=10**6, storage_quota_bytes=0,
        document_quota=0, knowledge_base_quota=0,
    )  # fmt: skip
    user = get_user_model().objects.create_user(username="bench", password="x" * 20)
    _key, raw = api_key_create(user=user, name="bench")
    return raw, user


def ingest(url: str, key: str, pages, *, batch: int) -> tuple[int, int, float]:
    """Create a base and upload every page through the API; wait until the worker has made
    them all ready. Returns (base id, chunks, seconds)."""
    import httpx

    from knowledge.models import Document

    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        response = client.post("/api/v1/knowledge/bases/", json={"name": "bench"})
        assert response.status_code == 201, response.text
        base_id = response.json()["id"]
        started = time.perf_counter()
        for start in range(0, len(pages), batch):
            files = [
                ("file", (f"{command}.txt", body.encode(), "text/plain"))
                for command, _q, body in pages[start : start + batch]
            ]
            response = client.post(f"/api/v1/knowledge/bases/{base_id}/documents/", files=files)
            assert response.status_code == 202, response.text
    documents = Document.objects.filter(knowledge_base_id=base_id)
    reported = time.monotonic()
    while True:
        pending = documents.exclude(status__in=["ready", "failed"]).count()
        if not pending:
            break
        if time.monotonic() - reported > 60:
            reported = time.monotonic()
            print(f"  ... {len(pages) - pending} of {len(pages)} documents done "
                  f"(load {loadavg()})", flush=True)  # fmt: skip
        time.sleep(0.5)
    elapsed = time.perf_counter() - started
    failed = list(documents.filter(status="failed").values_list("title", "error")[:5])
    assert not failed, failed
    chunks = sum(documents.values_list("chunk_count", flat=True))
    return base_id, chunks, elapsed


def through_http(url: str, key: str, base_id: int, questions: list[str]) -> dict[str, list]:
    """ms per request, per mode; modes interleaved so load drift hits them alike."""
    client = RawClient(url, key)
    times: dict[str, list[float]] = {"hybrid": [], "vector": [], "keyword": []}
    try:
        for question in questions:
            for mode in times:
                payload = {"query": question, "knowledge_base_ids": [base_id], "mode": mode}
                started = time.perf_counter()
                status, data = client.post("/api/v1/knowledge/search", payload)
                times[mode].append(1000 * (time.perf_counter() - started))
                assert status == 200, data[:500]
    finally:
        client.close()
    return times


def in_process(base_id: int, questions: list[str]) -> dict[str, list]:
    """The same work without HTTP: the store's raw calls and `retrieval.search` (uncached)."""
    from knowledge import retrieval
    from knowledge.embedders import get_embedder
    from knowledge.models import KnowledgeBase
    from knowledge.vectorstore import get_vector_store

    store = get_vector_store()
    base = KnowledgeBase.objects.get(id=base_id)
    embedder = get_embedder(base.embedding_model)
    collection = store.ensure_collection(model=base.embedding_model, dimension=embedder.dimension)
    embedder.embed(["warm up"])
    out: dict[str, list[float]] = {
        k: []
        for k in ("embed query", "Milvus dense", "Milvus BM25", "retrieval hybrid",
                  "retrieval vector", "retrieval keyword")
    }  # fmt: skip
    candidates = max(base.top_k * 4, 20)
    for question in questions:
        started = time.perf_counter()
        vector = embedder.embed([question])[0]
        out["embed query"].append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        store.search_vector(collection=collection, vector=vector, kb_ids=[base_id],
                            limit=candidates)  # fmt: skip
        out["Milvus dense"].append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        store.search_keyword(collection=collection, query=question, kb_ids=[base_id],
                             limit=candidates)  # fmt: skip
        out["Milvus BM25"].append(1000 * (time.perf_counter() - started))
        for mode in ("hybrid", "vector", "keyword"):
            # A fresh variant of the question, so the query-vector memo does not help.
            variant = f"{question} {mode}"
            started = time.perf_counter()
            retrieval.search(knowledge_bases=[base], query=variant, top_k=base.top_k, mode=mode,
                             score_threshold=base.score_threshold, use_cache=False)  # fmt: skip
            out[f"retrieval {mode}"].append(1000 * (time.perf_counter() - started))
    return out


def report(label: str, times: dict[str, list[float]]) -> None:
    for name, values in times.items():
        print(
            f"  {label:9} {name:18} p50 {percentile(values, 50):7.1f} ms  "
            f"p95 {percentile(values, 95):7.1f} ms  (n={len(values)})"
        )


def measure(label: str, url: str, key: str, base_id: int, questions: list[str]) -> None:
    print(f"\n## {label} (load average {loadavg()})")
    http = through_http(url, key, base_id, questions)
    inproc = in_process(base_id, questions)
    report("HTTP", http)
    report("in-process", inproc)
    ratio = percentile(http["hybrid"], 50) / percentile(inproc["retrieval hybrid"], 50)
    print(f"  HTTP hybrid p50 / in-process retrieval hybrid p50: {ratio:.2f}x")
    p95 = percentile(http["hybrid"], 95)
    print(f"  hybrid p95 through HTTP: {p95:.1f} ms (load average {loadavg()})")


def main() -> None:
    args = ARGS
    # A stop (SIGTERM) still runs the cleanup below: no server outlives the bench.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"{os.cpu_count()} CPUs, load average {loadavg()}; work folder {WORK}")
    print(f"embedder: {args.embedder}" + (f", {args.dimension} dimensions" if GLM else ""))
    key, _user = seed()
    pages = load_manpages(Path("/usr/share/man/man1"), args.pages, max_body_chars=args.body_chars)
    stack = Stack(ingest_concurrency=args.ingest_concurrency)
    try:
        url = stack.web()
        stack.ingest_worker()
        base_id, chunks, seconds = ingest(url, key, pages, batch=args.upload_batch)
        print(
            f"Ingested {len(pages)} documents, {chunks} chunks through the API and the ingest "
            f"worker in {seconds:.1f} s ({chunks / seconds:.1f} chunks/s; load {loadavg()})"
        )
        # The web process loads the model on its first search (seconds, once per process).
        warm = RawClient(url, key)
        for mode in ("vector", "keyword", "hybrid"):
            warm.post("/api/v1/knowledge/search", {"query": "warm up", "mode": mode})
        warm.close()
        rng = random.Random(7)
        questions = [q for _c, q, _b in pages]
        rng.shuffle(questions)
        questions = (questions * (1 + args.queries // max(1, len(questions))))[: args.queries]
        # Repeats (only with --queries above the page count) get a suffix: still distinct.
        questions = [q if i < len(pages) else f"{q} ({i})" for i, q in enumerate(questions)]
        measure("freshly ingested", url, key, base_id, questions)
        if args.settle:
            waited = wait_until_idle(MILVUS.process.pid, limit_s=600.0)
            variants = [f"{q}?" for q in questions]
            measure(f"settled ({waited:.0f} s later)", url, key, base_id, variants)
    finally:
        stack.stop()
        MILVUS.stop()
        REDIS.stop()
        if GLM is not None:
            GLM.terminate()
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
