"""Capacity: the ceilings that decide when one machine (one Redis, one Milvus) is not enough
(docs/operations.md, "Past one machine"). Each part drives the product's own code from
several processes against a private server and reports what it sustained, and the server's
own CPU time per operation, from which the ceiling of one server core follows.

    .venv/bin/python bench/capacity.py                  # all three parts
    BENCH_PARTS=1 .venv/bin/python bench/capacity.py    # 1 limiter, 2 channel layer, 3 Milvus
    BENCH_SECONDS=10 BENCH_PROCS=1,2,4 ...               # per measurement; client processes

1. Limiter checks/s one Redis sustains: `throttling.services.limiter_check` (the function
   every API request and websocket frame calls: config, rules, one EVALSHA of limiter.lua,
   monitoring), four layers (global, plan, endpoint `messages`), 5,000 users, so every check
   also touches the one hot global key. Redis CPU per check: INFO cpu of the main thread.
2. Channel-layer messages/s: `channels.layers.get_channel_layer()` (the product's
   CHANNEL_LAYERS, channels-redis), each process a reply stream's shape — `group_send` to a
   conversation group with two open pages, both `receive` it.
3. Milvus server searches/s: the `milvus` package's standalone server (2.3) through
   `knowledge.vectorstore.get_vector_store()` (the product's store, its collection schema,
   HNSW index and Strong consistency), 20,000 chunks of dimension 384 in 50 bases,
   `search_vector` top 5 filtered to one base, from 2 processes with 1, 8, 32 and 64 threads each
   (BENCH_MILVUS_THREADS); server CPU from its process tree (psutil).
Not a test: record the figures in docs/performance.md ("Capacity").
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import start_private_redis  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
PROCS = [int(n) for n in os.environ.get("BENCH_PROCS", "1,2,4").split(",")]
USERS = 5000
CHUNKS, DIMENSION, BASES = 20_000, 384, 50
MILVUS_THREADS = [int(n) for n in os.environ.get("BENCH_MILVUS_THREADS", "1,8,32,64").split(",")]


def _configure_env() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openspark.settings.test")
    os.environ.setdefault("REDIS_KEY_PREFIX", "osbench")
    # The global layer admits everything: the bench measures checks, not refusals.
    os.environ.setdefault("THROTTLE_GLOBAL_LIMIT", str(10**9))
    if "DATABASE_URL" not in os.environ:
        os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp(prefix='osbench-')}/db.sqlite3"


def _redis_main_cpu(client) -> float:
    """CPU seconds of Redis's main thread (the one that runs commands and scripts)."""
    info = client.info("cpu")
    if "used_cpu_user_main_thread" in info:
        return info["used_cpu_user_main_thread"] + info["used_cpu_sys_main_thread"]
    return info["used_cpu_user"] + info["used_cpu_sys"]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _run_processes(target, procs: int, *args) -> tuple[int, float]:
    """Start `procs` forked processes running target(barrier, out, *args) together; returns
    (operations summed, wall seconds of the slowest)."""
    context = multiprocessing.get_context("fork")
    barrier, out = context.Barrier(procs), context.Queue()
    workers = [context.Process(target=target, args=(barrier, out, n, *args)) for n in range(procs)]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=SECONDS * 10 + 120) for _ in workers]
    for worker in workers:
        worker.join()
    return sum(r[0] for r in results), max(r[1] for r in results)


def _report(label: str, ops: int, seconds: float, server_cpu: float, unit: str) -> None:
    rate = ops / seconds
    per_op = 1e6 * server_cpu / ops if ops else float("nan")
    ceiling = 1e6 / per_op if per_op else float("nan")
    busy = 100 * server_cpu / seconds
    print(f"  {label}: {rate:,.0f} {unit}/s; server {per_op:.1f} µs CPU per op "
          f"({busy:.0f} % of a core) -> one server core: {ceiling:,.0f}/s; load {_load()}",
          flush=True)  # fmt: skip


# --- 1. The limiter -------------------------------------------------------------------------


def _limiter_process(barrier, out, n: int, plan_id: int) -> None:
    from django.db import connections

    connections.close_all()  # the parent's SQLite handle is not the child's
    from throttling.identity import Identity
    from throttling.rules import ALL_LAYERS
    from throttling.services import limiter_check

    identities = [
        Identity(user_id=1_000_000 + u, plan_id=plan_id, ip=f"10.1.{u // 250}.{u % 250}")
        for u in range(n, USERS, max(1, len(PROCS)))
    ]
    check = {"path": "/api/v1/messages/", "method": "POST", "layers": ALL_LAYERS}
    limiter_check(identity=identities[0], **check)  # config loaded, script cached
    barrier.wait()
    count, started = 0, time.perf_counter()
    deadline = started + SECONDS
    while time.perf_counter() < deadline:
        decision = limiter_check(identity=identities[count % len(identities)], **check)
        assert decision.allowed or decision.layer != "global", decision
        count += 1
    out.put((count, time.perf_counter() - started))


def report_limiter(client) -> None:
    from throttling.models import Plan

    plan_id = Plan.objects.order_by("id").values_list("id", flat=True).first()
    print(f"1. limiter_check, 4 layers, {USERS} users ({SECONDS:.0f} s each):", flush=True)
    for procs in PROCS:
        client.flushdb()
        before = _redis_main_cpu(client)
        ops, seconds = _run_processes(_limiter_process, procs, plan_id)
        _report(f"{procs} processes", ops, seconds, _redis_main_cpu(client) - before, "checks")


# --- 2. The channel layer -------------------------------------------------------------------


def _channel_process(barrier, out, n: int) -> None:
    from channels.layers import get_channel_layer

    async def run() -> tuple[int, float]:
        layer = get_channel_layer()
        group = f"bench.conversation.{n}"
        pages = [await layer.new_channel() for _ in range(2)]  # two open pages
        for channel in pages:
            await layer.group_add(group, channel)
        received = 0
        stop = asyncio.Event()

        async def page(channel: str) -> None:
            nonlocal received
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(layer.receive(channel), 1.0)
                    received += 1

        readers = [asyncio.create_task(page(channel)) for channel in pages]
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        started = time.perf_counter()
        deadline, sent = started + SECONDS, 0
        while time.perf_counter() < deadline:
            await layer.group_send(group, {"type": "chat.delta", "delta": "x" * 40, "seq": sent})
            sent += 1
            if sent - received / 2 > 50:  # a worker streaming deltas never runs far ahead
                await asyncio.sleep(0)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(1.5)  # let the readers drain
        stop.set()
        await asyncio.gather(*readers)
        return received, elapsed

    out.put(asyncio.run(run()))


def report_channel_layer(client) -> None:
    print(f"2. channel layer: group_send to 2 pages, receive ({SECONDS:.0f} s each):", flush=True)
    for procs in PROCS:
        client.flushdb()
        before = _redis_main_cpu(client)
        ops, seconds = _run_processes(_channel_process, procs)
        _report(f"{procs} processes", ops, seconds, _redis_main_cpu(client) - before,
                "messages received")  # fmt: skip


# --- 3. Milvus server -----------------------------------------------------------------------


def _start_milvus(workdir: Path):
    """The server's embedded etcd listens on fixed ports (2380, 9092): while another run's
    server holds them this one exits at once, so wait for it, a few times."""
    for attempt in range(10):
        try:
            return _start_milvus_once(workdir / f"try-{attempt}")
        except PortTaken:
            print("  (Milvus: another server holds its fixed ports; waiting 30 s)", flush=True)
            time.sleep(30)
    raise RuntimeError("Milvus: its fixed ports stayed taken")


class PortTaken(RuntimeError):
    pass


def _start_milvus_once(workdir: Path):
    from milvus import MilvusServer

    from openspark.embedded import free_port

    server = MilvusServer()
    server.set_base_dir(str(workdir))
    server.listen_port = free_port()
    server.wait_for_started = False
    with contextlib.redirect_stdout(io.StringIO()):
        server.start()
    # As tests/knowledge/conftest.py: fail fast on a dead server, wait long on a busy box.
    health = f"http://127.0.0.1:{server.webservice_port}/healthz"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.server_proc.poll() is not None:
            text = (workdir / "logs" / "milvus-stdout.log").read_text(errors="replace")
            if "address already in use" in text:
                raise PortTaken(text[-500:])
            raise RuntimeError(f"Milvus exited:\n{text[-2000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=5) as response:
            if b"OK" in response.read():
                time.sleep(1)
                return server
        time.sleep(0.5)
    server.stop()
    raise RuntimeError("Milvus server did not become healthy in 600 s")


def _milvus_cpu(pid: int) -> float:
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _milvus_process(barrier, out, n: int, collection: str, threads: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from knowledge.vectorstore import forget_vector_stores, get_vector_store

    forget_vector_stores()  # the parent's gRPC channel does not survive a fork
    store = get_vector_store()  # one client per process, shared by its threads (as web's)
    rng = random.Random(n)
    queries = [[rng.gauss(0, 1) for _ in range(DIMENSION)] for _ in range(50)]
    store.search_vector(collection=collection, vector=queries[0], kb_ids=[1], limit=5)

    def searcher(t: int) -> int:
        count = 0
        while time.perf_counter() < deadline:
            k = t + count
            hits = store.search_vector(
                collection=collection, vector=queries[k % 50], kb_ids=[1 + k % BASES], limit=5
            )
            assert hits, "no hits"
            count += 1
        return count

    barrier.wait()
    started = time.perf_counter()
    deadline = started + SECONDS
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(searcher, range(threads)))
    out.put((total, time.perf_counter() - started))


def _wait_indexed(client, collection: str) -> None:
    """Until the server has built the HNSW index over every row: a build running during a
    measurement takes the CPU the searches are measured on."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        index = client.describe_index(collection, "vector")
        if index.get("indexed_rows", 0) >= CHUNKS and not index.get("pending_index_rows"):
            return
        time.sleep(2)
    raise RuntimeError(f"index not built in 900 s: {index}")


def report_milvus(workdir: Path) -> None:
    from django.conf import settings

    from knowledge.vectorstore import VectorRow, forget_vector_stores, get_vector_store

    server = _start_milvus(workdir)
    try:
        settings.MILVUS_URI = os.environ["MILVUS_URI"] = f"http://127.0.0.1:{server.listen_port}"
        store = get_vector_store()
        collection = store.ensure_collection(model="bench", dimension=DIMENSION)
        rng = random.Random(0)
        for start in range(0, CHUNKS, 2000):
            rows = [
                VectorRow(i, 1 + i % BASES, i // 10, f"chunk {i}",
                          [rng.gauss(0, 1) for _ in range(DIMENSION)])
                for i in range(start, start + 2000)
            ]  # fmt: skip
            store.upsert(collection=collection, rows=rows)
        store.client.flush(collection)
        _wait_indexed(store.client, collection)
        forget_vector_stores()
        print(f"3. Milvus {store.server_version} server: search_vector top 5 in one of "
              f"{BASES} bases, {CHUNKS:,} chunks x {DIMENSION} ({SECONDS:.0f} s each):",
              flush=True)  # fmt: skip
        # Strong consistency makes each search wait for the server's time tick (~200 ms in
        # 2.3), so one caller alone measures that wait; concurrent callers find the ceiling.
        # The server works in the background too (time ticks, compaction checks): its idle
        # CPU rate, measured first, is taken off before dividing by the searches.
        pid = server.server_proc.pid
        before = _milvus_cpu(pid)
        time.sleep(SECONDS)
        idle = (_milvus_cpu(pid) - before) / SECONDS
        print(f"  idle server: {100 * idle:.0f} % of a core", flush=True)
        for threads in MILVUS_THREADS:
            before = _milvus_cpu(pid)
            ops, seconds = _run_processes(_milvus_process, 2, collection, threads)
            cpu = max(0.0, _milvus_cpu(pid) - before - idle * seconds)
            latency = 1000 * 2 * threads * seconds / max(ops, 1)
            _report(f"2 processes x {threads} threads (mean {latency:.0f} ms per search)", ops,
                    seconds, cpu, "searches")  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            server.stop()


def main() -> None:
    redis_server = None if "REDIS_URL" in os.environ else start_private_redis()
    _configure_env()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from openspark.core.redis import redis_client
    from throttling.plans import seed_default_plans

    call_command("migrate", verbosity=0)
    seed_default_plans()
    client = redis_client(settings.REDIS_URL)
    print(f"Redis {client.info('server')['redis_version']} at {settings.REDIS_URL}; "
          f"{os.cpu_count()} cores; load {_load()}", flush=True)  # fmt: skip
    parts = os.environ.get("BENCH_PARTS", "123")
    workdir = Path(tempfile.mkdtemp(prefix="osbench-capacity-"))
    try:
        if "1" in parts:
            report_limiter(client)
        if "2" in parts:
            report_channel_layer(client)
        if "3" in parts:
            report_milvus(workdir / "milvus")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if redis_server is not None:
            redis_server.terminate()


if __name__ == "__main__":
    main()
