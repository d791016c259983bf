"""Throttling benchmark: our one-round-trip limiter side by side with a bare EVALSHA through
redis-py's public client, DRF's stock UserRateThrottle (django-redis cache) and
django-ratelimit, against the same private Redis, in the same run.

    .venv/bin/python bench/throttle.py      # a private redis-server; or set REDIS_URL

1. Admitted beyond the limit (limit 100/min, 2,000 attempts) with 10, 50 and 200 concurrent
   clients spread over 2, 5 and 8 processes, against the bound docs/throttling.md gives for a
   token bucket over the blast's t seconds: 100 + 100*t/60 (+1).
2. Cost per check at limits 100, 2,000 and 10,000/min: p50/p99 µs, Redis round trips per
   check (INFO stats total_reads_processed) and EVALSHA calls per check (INFO commandstats
   cmdstat_evalsha), next to a bare `Redis.evalsha` of `return 1` (the floor the goals are
   stated against).
3. Throughput of a throttled no-op API view through uvicorn (Django's own ASGI handler, the
   project's middleware, API-key authentication), limiter on vs off: two servers side by
   side, loaded in alternating 2-s slices (8 keep-alive connections), loss = median of the
   per-pair ratios; and p50 latency of sequential requests on one connection.
Not a test: it prints figures and ratios (record them in docs/performance.md).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import start_private_redis  # noqa: E402

BENCH_PATH = "/api/v1/messages/bench/"
HUGE = 10**9


def _configure_env() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openspark.settings.test")
    os.environ.setdefault("REDIS_KEY_PREFIX", "osbench")
    if "DATABASE_URL" not in os.environ:
        os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp(prefix='osbench-')}/db.sqlite3"


# --- The ASGI app used by part 3 (uvicorn imports this module: bench.throttle) -------------


def asgi_application():
    """uvicorn factory: the project with BENCH_PATH as a no-op view; BENCH_LIMITER=off
    removes the limiter (middleware and throttle classes) before Django loads."""
    _configure_env()
    from django.conf import settings

    settings.ROOT_URLCONF = "bench.throttle"
    settings.DEBUG = False
    if os.environ.get("BENCH_LIMITER") == "off":
        settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "RateLimit" not in m]
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}
    from django.core.asgi import get_asgi_application  # as openspark/asgi.py serves HTTP

    return get_asgi_application()


def __getattr__(name):
    # The urlconf is built lazily: defining a DRF view needs configured settings.
    if name != "urlpatterns":
        raise AttributeError(name)
    from django.urls import path
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class NoopApi(APIView):
        def get(self, request):
            return Response({"ok": True})

    return [path(BENCH_PATH.lstrip("/"), NoopApi.as_view())]


# --- Helpers --------------------------------------------------------------------------------


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    return ordered[len(ordered) // 2] / 1000, ordered[int(len(ordered) * 0.99)] / 1000


def _round_trips(client) -> int:
    """Requests read from clients (INFO stats; commands a Lua script runs are not requests)."""
    return client.info("stats")["total_reads_processed"]


def _evalsha_calls(client) -> int:
    """EVALSHA commands executed (INFO commandstats cmdstat_evalsha)."""
    return client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


def _cleanup(client) -> None:
    keys = list(client.scan_iter(match="osbench*", count=5000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])


class Implementations:
    """The three contenders, each a `check(user_id, ip, limit) -> bool` (True = admitted)."""

    def __init__(self) -> None:
        from django_ratelimit.core import is_ratelimited
        from rest_framework.throttling import UserRateThrottle

        from throttling.limiter import Rule, limiter_consume, limiter_redis, script_call, script_sha

        self._is_ratelimited = is_ratelimited
        self._drf_classes: dict[int, type] = {}
        self._user_rate_throttle = UserRateThrottle
        self._rule = Rule
        self._consume = limiter_consume
        self._script_call = script_call
        self._script_sha = script_sha()
        self._redis = limiter_redis()
        # The cost table varies the per-client limits; a shared global layer at that limit
        # would turn most measured checks into (cheaper) refusals, so it gets its own.
        self.global_limit: int | None = None

    def ours(self, user_id: int, ip: str, limit: int) -> bool:
        rules = self._rules(user_id, ip, limit)
        return self._consume(rules=rules, who=f"u:{user_id}").allowed

    def _rules(self, user_id: int, ip: str, limit: int) -> list:
        rule = self._rule
        who = f"u:{user_id}"
        return [rule("global", "all", self.global_limit or limit), rule("ip", f"ip:{ip}", limit),
                rule("plan", who, limit), rule("endpoint:messages", who, limit)]  # fmt: skip

    def script_alone(self, user_id: int, ip: str, limit: int) -> bool:
        """limiter.lua with ours' four rules, sent with a bare `Redis.evalsha`: the script's
        own cost in Redis, without the limiter's Python around it."""
        keys, args = self._script_call(rules=self._rules(user_id, ip, limit))
        return self._redis.evalsha(self._script_sha, len(keys), *keys, *args)[0] == 1

    def ours_one_layer(self, user_id: int, ip: str, limit: int) -> bool:
        return self._consume(rules=[self._rule("plan", f"u:{user_id}", limit)]).allowed

    def drf(self, user_id: int, ip: str, limit: int) -> bool:
        klass = self._drf_classes.get(limit)
        if klass is None:
            klass = type("BenchUserThrottle", (self._user_rate_throttle,), {"rate": f"{limit}/min"})
            self._drf_classes[limit] = klass
        request = SimpleNamespace(
            user=SimpleNamespace(pk=user_id, is_authenticated=True),
            META={"REMOTE_ADDR": ip},
        )
        return klass().allow_request(request, None)

    def django_ratelimit(self, user_id: int, ip: str, limit: int) -> bool:
        """The same four layers as ours (global, IP, user, endpoint group), one call each."""
        request = SimpleNamespace(
            user=SimpleNamespace(pk=user_id, is_authenticated=True),
            META={"REMOTE_ADDR": ip},
            method="GET",
        )
        rate = f"{limit}/m"
        global_rate = f"{self.global_limit or limit}/m"
        limited = False
        for group, key in (("global", lambda g, r: "all"), ("ip", "ip"),
                           ("plan", "user"), ("endpoint:messages", "user")):  # fmt: skip
            limited |= self._is_ratelimited(
                request, group=f"osbench-{group}", key=key,
                rate=global_rate if group == "global" else rate, increment=True,
            )  # fmt: skip
        return not limited

    def django_ratelimit_one_layer(self, user_id: int, ip: str, limit: int) -> bool:
        request = SimpleNamespace(
            user=SimpleNamespace(pk=user_id, is_authenticated=True),
            META={"REMOTE_ADDR": ip},
            method="GET",
        )
        return not self._is_ratelimited(
            request, group="osbench-plan", key="user", rate=f"{limit}/m", increment=True
        )


# --- 1. Admitted beyond the limit -----------------------------------------------------------


def _client_process(name, user_id, threads, attempts, barrier, out):
    impl = getattr(Implementations(), name)

    admitted = []
    spans = []

    def client():
        barrier.wait()
        start = time.time()
        admitted.append(sum(impl(user_id, "10.0.0.1", 100) for _ in range(attempts)))
        spans.append((start, time.time()))

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((sum(admitted), min(s[0] for s in spans), max(s[1] for s in spans)))


def over_admission(client) -> list[tuple]:
    rows = []
    context = multiprocessing.get_context("fork")
    for clients, processes in ((10, 2), (50, 5), (200, 8)):
        threads = clients // processes
        attempts = 2000 // clients
        for name in ("ours", "drf", "django_ratelimit"):
            _cleanup(client)
            user_id = 7_000_000 + clients
            barrier = context.Barrier(processes * threads)
            out = context.Queue()
            procs = [
                context.Process(
                    target=_client_process, args=(name, user_id, threads, attempts, barrier, out)
                )
                for _ in range(processes)
            ]
            for proc in procs:
                proc.start()
            results = [out.get(timeout=300) for _ in procs]
            for proc in procs:
                proc.join()
            admitted = sum(r[0] for r in results)
            span = max(r[2] for r in results) - min(r[1] for r in results)
            # Our documented bound for a token bucket over a span of t s: limit + limit*t/60.
            bound = 100 + int(100 * span / 60) + 1
            rows.append((clients, name, admitted, clients * attempts, span, bound))
    return rows


# --- 2. Cost per check ----------------------------------------------------------------------


class _Contender:
    """Checks for one contender at one limit: each key (user) is warmed to half its limit,
    then checked while it stays under it, so every measured check is an admitted one on a
    half-full history; a fresh key is taken when one is used up."""

    def __init__(self, client, fn, limit: int, user_base: int) -> None:
        self.client, self.fn, self.limit = client, fn, limit
        self.user_id = user_base
        self.left = 0
        self.timings: list[int] = []
        self.trips = 0
        self.evalshas = 0

    def run(self, samples: int) -> None:
        done = 0
        while done < samples:
            if self.left == 0:
                self.user_id += 1
                for _ in range(self.limit // 2):
                    self.fn(self.user_id, self._ip(), self.limit)
                self.left = max(1, self.limit // 2 - 1)
            batch = min(self.left, samples - done)
            trips, evalshas = _round_trips(self.client), _evalsha_calls(self.client)
            for _ in range(batch):
                started = time.perf_counter_ns()
                self.fn(self.user_id, self._ip(), self.limit)
                self.timings.append(time.perf_counter_ns() - started)
            # Minus the INFO calls in between (each INFO counts itself in `stats`).
            self.trips += _round_trips(self.client) - trips - 2
            self.evalshas += _evalsha_calls(self.client) - evalshas
            self.left -= batch
            done += batch

    def _ip(self) -> str:
        return f"10.1.{self.user_id // 250 % 250}.{self.user_id % 250}"


def cost_per_check(client, samples: int = 3000, blocks: int = 6) -> list[tuple]:
    """Contenders are measured in interleaved blocks, so machine noise hits them alike."""
    impls = Implementations()
    impls.global_limit = HUGE
    bare_sha = client.script_load("return 1")

    def bare(user_id, ip, limit):
        return client.evalsha(bare_sha, 0)

    impls.ours(0, "10.0.0.0", HUGE)  # limiter.lua is loaded (script_alone sends its SHA)
    named = (
        ("bare EVALSHA", bare),
        ("limiter.lua alone (4 rules)", impls.script_alone),
        ("ours (4 layers)", impls.ours),
        ("ours (1 layer)", impls.ours_one_layer),
        ("DRF UserRateThrottle (1 layer)", impls.drf),
        ("django-ratelimit (4 layers)", impls.django_ratelimit),
        ("django-ratelimit (1 layer)", impls.django_ratelimit_one_layer),
    )
    rows = []
    for limit in (100, 2000, 10_000):
        _cleanup(client)
        contenders = [
            (name, _Contender(client, fn, limit, 1_000_000 * (i + 1)))
            for i, (name, fn) in enumerate(named)
        ]
        for _block in range(blocks):
            for _name, contender in contenders:
                contender.run(samples // blocks)
        for name, contender in contenders:
            p50, p99 = _percentiles(contender.timings)
            count = len(contender.timings)
            rows.append(
                (limit, name, p50, p99, contender.trips / count, contender.evalshas / count)
            )
    return rows


# --- 3. Throughput through the ASGI server --------------------------------------------------


async def _load(
    port: int, headers: bytes, seconds: float, connections: int, latencies: list | None = None
) -> tuple[int, int]:
    request = (f"GET {BENCH_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n").encode() + headers + b"\r\n"
    deadline = time.monotonic() + seconds
    done = [0, 0]

    async def connection():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if latencies is not None:
                latencies.append(time.perf_counter() - started)
            done[0 if b" 200 " in status_line else 1] += 1
        writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return done[0], done[1]


def _start_server(limiter: str, port: int) -> subprocess.Popen:
    env = dict(os.environ, BENCH_LIMITER=limiter, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.throttle:asgi_application", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("uvicorn did not start")


def throughput(raw_key: str, slices: int = 12, seconds: float = 2.0) -> tuple[dict, dict]:
    """Both servers run side by side (one uvicorn worker each, idle while the other is
    measured); the load alternates between them in short slices, in alternating order, so
    drifting machine load hits both alike. Returns req/s per slice for each, and the
    latencies of sequential requests on one connection (half a second per slice)."""
    headers = f"Authorization: Bearer {raw_key}\r\n".encode()
    results: dict[str, list[float]] = {"off": [], "on": []}
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    ports, procs = {}, []
    try:
        for limiter in results:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                ports[limiter] = sock.getsockname()[1]
            procs.append(_start_server(limiter, ports[limiter]))
        for limiter in results:
            asyncio.run(_load(ports[limiter], headers, 1.0, 8))  # warm-up
        for index in range(slices):
            for limiter in ("off", "on") if index % 2 == 0 else ("on", "off"):
                ok, other = asyncio.run(_load(ports[limiter], headers, seconds, 8))
                if other:
                    print(f"  warning: {other} non-200 answers with limiter {limiter}")
                results[limiter].append(ok / seconds)
                asyncio.run(_load(ports[limiter], headers, 0.5, 1, latencies[limiter]))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    return results, latencies


# --- Main -----------------------------------------------------------------------------------


def report_over_admission(client) -> None:
    print("\n1. Admitted of 2,000 attempts against a limit of 100/min")
    print(f"{'clients':>7}  {'implementation':<18} {'admitted':>8}  {'beyond':>6}  "
          f"{'span s':>6}  our bound")  # fmt: skip
    for clients, name, admitted, _attempts, span, bound in over_admission(client):
        within = "  (within)" if name == "ours" and admitted <= bound else ""
        print(f"{clients:>7}  {name:<18} {admitted:>8}  {admitted - 100:>6}  {span:>6.2f}  "
              f"{bound}{within}")  # fmt: skip


def report_cost(client) -> None:
    print("\n2. Cost per admitted check (p50/p99 µs), Redis round trips and EVALSHAs per check")
    rows = cost_per_check(client)
    floor = {row[0]: row[2] for row in rows if row[1] == "bare EVALSHA"}
    ours = {row[0]: row[2] for row in rows if row[1] == "ours (4 layers)"}
    print(f"{'limit':>6}  {'implementation':<32} {'p50':>7} {'p99':>7} {'trips':>5} "
          f"{'evalsha':>7}  {'p50/bare':>8}  {'p50/ours(4)':>11}")  # fmt: skip
    for limit, name, p50, p99, trips, evalshas in rows:
        print(f"{limit:>6}  {name:<32} {p50:>7.1f} {p99:>7.1f} {trips:>5.2f} {evalshas:>7.2f}  "
              f"{p50 / floor[limit]:>7.2f}x  {p50 / ours[limit]:>10.2f}x")  # fmt: skip
    low, high = min(ours), max(ours)
    print("  ours (4 layers) / bare EVALSHA: "
          + ", ".join(f"{ours[limit] / floor[limit]:.2f}x at {limit}" for limit in sorted(ours))
          + f" (goal <= 1.5x); flat: {high}/min costs {ours[high] / ours[low]:.2f}x {low}/min "
          f"(bare: {floor[high] / floor[low]:.2f}x)")  # fmt: skip


def report_throughput() -> None:
    from accounts.services import api_key_create
    from tests.factories import UserFactory
    from throttling.models import LayerPolicy, Plan

    print("\n3. Throughput of a throttled no-op API view through uvicorn (1 worker, req/s)")
    plan = Plan.objects.get(tier="enterprise")
    Plan.objects.filter(pk=plan.pk).update(requests_per_minute=HUGE, messages_per_minute=HUGE)
    LayerPolicy.objects.filter(layer="global").update(limit=HUGE)
    user = UserFactory(username="bench", plan=plan)
    _key, raw_key = api_key_create(user=user, name="bench")
    results, latencies = throughput(raw_key, slices=int(os.environ.get("BENCH_SLICES", "12")))
    off, on = results["off"], results["on"]
    print(f"  without limiter: {[round(x) for x in off]} → median {statistics.median(off):.0f}")
    print(f"  with limiter   : {[round(x) for x in on]} → median {statistics.median(on):.0f}")
    paired = [1 - b / a for a, b in zip(off, on, strict=True)]
    print(f"  throughput loss with the limiter: {100 * statistics.median(paired):.1f}% "
          f"(median of {len(paired)} side-by-side slice pairs; quartiles "
          f"{100 * statistics.quantiles(paired, n=4)[0]:.1f}% .. "
          f"{100 * statistics.quantiles(paired, n=4)[2]:.1f}%; goal <= 10%)")  # fmt: skip
    p50 = {name: 1000 * statistics.median(values) for name, values in latencies.items()}
    print(f"  one connection, sequential: p50 {p50['off']:.2f} ms without, {p50['on']:.2f} ms "
          f"with the limiter (+{p50['on'] - p50['off']:.2f} ms, {p50['on'] / p50['off']:.2f}x; "
          f"{len(latencies['on'])} requests)")  # fmt: skip


def main() -> None:
    redis_server = None if "REDIS_URL" in os.environ else start_private_redis()
    _configure_env()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from throttling.limiter import limiter_redis

    client = limiter_redis()
    print(f"Redis {client.info('server')['redis_version']} at {settings.REDIS_URL}; "
          f"{os.cpu_count()} cores; prefix {settings.REDIS_KEY_PREFIX}")  # fmt: skip
    call_command("migrate", verbosity=0)
    parts = os.environ.get("BENCH_PARTS", "123")  # e.g. BENCH_PARTS=2 for the cost table only
    try:
        if "1" in parts:
            report_over_admission(client)
        if "2" in parts:
            report_cost(client)
        if "3" in parts:
            report_throughput()
    finally:
        _cleanup(client)
        if redis_server is not None:
            redis_server.terminate()


if __name__ == "__main__":
    main()
