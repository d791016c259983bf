"""Cache benchmark: the same API through two real uvicorn servers side by side, one with the
cache layer on and one with CACHE_ENABLED=0, on one database and one private Redis.

    .venv/bin/python bench/cache.py                  # SQLite file DB in a temp folder
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/openspark_bench .venv/bin/python bench/cache.py

Data set: 1,000 users; the measured user has 100 conversations of 200 messages each (the
others 3 conversations of 10 messages).
1. p50/p95 latency (sequential, interleaved rounds; with httpx and with a raw-socket
   client, whose own cost is next to nothing, so its figure is the server's time) and req/s
   (8 concurrent httpx clients) of GET conversations/, GET conversations/{id}/messages/
   (default page and page_size=200) and GET me/: cached, a `304` revalidation
   (`If-None-Match` with the page's ETag, cached server) and caching off.
2. Stale reads: writes through either server (PATCH a title, POST feedback), each followed by
   a read through the cached server, plain and conditional (`If-None-Match` with the ETag
   from before the write); a read that misses the write, or a 304 after it, is stale.
3. A repeated identical question: ai_response hit (key + lookup) vs a model call against the
   GLM test server at its default latency (first token 0.2 s, 0.02 s per token) and at zero.
Not a test: it prints figures and ratios (record them in docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openspark.embedded import die_with_parent, free_port, port_open, start_redis  # noqa: E402

USERS = 1000
CONVERSATIONS = 100
MESSAGES = 200
OTHER_CONVERSATIONS = 3
OTHER_MESSAGES = 10
TEXT = (
    "OpenSpark 的知识库支持 PDF、DOCX 和 Markdown。The reply cites its sources [1] and keeps "
    "the conversation history in a sliding window so that long chats stay within budget. "
)


def loadavg() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Stack:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="osbench-cache-"))
        self.redis = start_redis(self.tmp / "redis", persist=False)
        self.procs: list[subprocess.Popen] = []
        self.env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="openspark.settings.local",
            DEBUG="0",
            OPENSPARK_VAR_DIR=str(self.tmp),
            REDIS_URL=self.redis.url,
            REDIS_KEY_PREFIX="osbench",
            THROTTLE_GLOBAL_LIMIT=str(10**9),
            LOG_LEVEL="WARNING",
            NO_PROXY="127.0.0.1,localhost",
            CELERY_TASK_ALWAYS_EAGER="0",
        )
        os.environ.update(self.env)

    def server(self, *, cache: bool) -> str:
        port = free_port()
        env = dict(self.env, CACHE_ENABLED="1" if cache else "0")
        log = open(self.tmp / f"uvicorn-{port}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "openspark.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while not port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.tmp / f"uvicorn-{port}.log").read_text()[-3000:])
            time.sleep(0.1)
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)
        self.redis.stop()


def seed() -> dict:
    """Bulk-load the data set; returns what the measurements need."""
    import django

    django.setup()
    from django.contrib.auth.hashers import make_password
    from django.core.management import call_command

    from accounts.models import User
    from accounts.services import api_key_create
    from conversations.models import Conversation, Message
    from throttling.models import Plan

    call_command("migrate", verbosity=0)
    started = time.monotonic()
    password = make_password("bench-password")
    User.objects.bulk_create(
        [
            User(username=f"bench{n}", email=f"bench{n}@example.com", password=password)
            for n in range(USERS)
        ],
        batch_size=500,
    )
    users = list(User.objects.order_by("id"))
    measured = users[0]
    plan = Plan.objects.get(tier=Plan.Tier.ENTERPRISE)
    plan.requests_per_minute = plan.conversations_per_minute = plan.messages_per_minute = 10**9
    plan.save()
    measured.plan = plan
    measured.save(update_fields=["plan"])

    def conversations_for(user, count: int, messages: int) -> None:
        convs = Conversation.objects.bulk_create(
            [Conversation(owner=user, title=f"Conversation {n}") for n in range(count)]
        )
        rows = []
        for conv in convs:
            for n in range(messages):
                assistant = n % 2 == 1
                rows.append(
                    Message(
                        conversation=conv,
                        role="assistant" if assistant else "user",
                        content=TEXT * (3 if assistant else 1),
                        citations=[
                            {
                                "index": 1,
                                "document_id": 1,
                                "document_title": "Handbook",
                                "chunk_id": 7,
                                "snippet": TEXT[:80],
                                "score": 0.83,
                            }
                        ]
                        if assistant
                        else [],
                        prompt_tokens=420 if assistant else 0,
                        completion_tokens=180 if assistant else 0,
                        provider="zhipuai" if assistant else "",
                        model="glm-4" if assistant else "",
                    )
                )
        Message.objects.bulk_create(rows, batch_size=2000)

    conversations_for(measured, CONVERSATIONS, MESSAGES)
    for user in users[1:]:
        conversations_for(user, OTHER_CONVERSATIONS, OTHER_MESSAGES)
    _key, raw = api_key_create(user=measured, name="bench")
    conversation = Conversation.objects.filter(owner=measured).order_by("-updated_at").first()
    reply = conversation.messages.filter(role="assistant").order_by("id").first()
    print(
        f"data: {User.objects.count()} users, {Conversation.objects.count()} conversations, "
        f"{Message.objects.count()} messages (seeded in {time.monotonic() - started:.0f} s)"
    )
    return {"key": raw, "conversation": conversation.id, "reply": reply.id}


class RawClient:
    """A keep-alive HTTP/1.1 client on a plain blocking socket: next to nothing of its own in
    the time it measures (httpx adds ~1 ms per request here, more than a replayed response
    costs the server), so its figures are the server's response time."""

    def __init__(self, url: str, key: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host = f"{host}:{port}".encode()
        self.key = key.encode()
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def get(self, path: str, etag: str = "") -> tuple[int, dict[str, str], bytes]:
        condition = b"If-None-Match: %s\r\n" % etag.encode() if etag else b""
        self.sock.sendall(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n%s\r\n"
            % (path.encode(), self.host, self.key, condition)
        )
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if status in (204, 304) else int(headers["content-length"])
        while len(self.buffer) < length:
            self.buffer += self._recv()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    def latencies(self, path: str, n: int, etag: str = "") -> list[float]:
        out = []
        for _ in range(n):
            started = time.perf_counter()
            status, _headers, body = self.get(path, etag)
            out.append((time.perf_counter() - started) * 1000)
            assert status == (304 if etag else 200), (status, body[:500])
        return out

    def close(self) -> None:
        self.sock.close()


async def _latencies(client: httpx.AsyncClient, path: str, n: int, etag: str = "") -> list:
    headers = {"If-None-Match": etag} if etag else {}
    out = []
    for _ in range(n):
        started = time.perf_counter()
        response = await client.get(path, headers=headers)
        out.append((time.perf_counter() - started) * 1000)
        assert response.status_code == (304 if etag else 200), response.text[:500]
    return out


async def _throughput(client: httpx.AsyncClient, path: str, seconds: float, etag: str) -> float:
    headers = {"If-None-Match": etag} if etag else {}
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker():
        nonlocal done
        while time.perf_counter() < deadline:
            response = await client.get(path, headers=headers)
            assert response.status_code == (304 if etag else 200)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(8)))
    return done / (time.perf_counter() - started)


def saving(part: float, whole: float) -> str:
    return f"{1 - part / whole:.0%}"


async def measure(urls: dict[str, str], key: str, paths: list[str], args) -> dict:
    """Latency and throughput per path of: `cached`, `304` (the cached server, If-None-Match
    with the ETag it gave) and `off` (caching off). Returns p50 savings for the summary."""
    headers = {"Authorization": f"Bearer {key}"}
    clients = {
        name: httpx.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=30,
            limits=httpx.Limits(max_connections=16, keepalive_expiry=3),
        )
        for name, url in urls.items()
    }
    print(
        f"\n1. latency: {args.rounds} interleaved rounds x {args.per_round} sequential "
        f"requests per variant; throughput: 8 concurrent clients, 2 x {args.seconds:.0f} s"
    )
    print(
        f"{'endpoint':44} {'':7} {'httpx p50':>9} {'p95 ms':>7} {'req/s':>7}"
        f"   {'raw-socket p50':>14} / p95 ms"
    )
    savings = {}
    for path in paths:
        for client in clients.values():  # warm-up (fills the cache)
            await _latencies(client, path, 20)
        etag = (await clients["cached"].get(path)).headers.get("ETag", "")
        variants = {"cached": ("cached", ""), "off": ("off", "")}
        if etag:
            variants["304"] = ("cached", etag)
        lat = {name: [] for name in variants}
        raw = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (server, tag) in variants.items():
                lat[name] += await _latencies(clients[server], path, args.per_round, tag)
                # A new connection per batch: the server closes idle ones after 5 s.
                raw_client = RawClient(urls[server], key)
                raw[name] += raw_client.latencies(path, args.per_round, tag)
                raw_client.close()
        rps = {name: [] for name in variants}
        for _ in range(2):
            for name, (server, tag) in variants.items():
                rps[name].append(await _throughput(clients[server], path, args.seconds, tag))
        rows = {}
        for name in variants:
            rows[name] = (
                percentile(lat[name], 0.5),
                percentile(lat[name], 0.95),
                statistics.mean(rps[name]),
                percentile(raw[name], 0.5),
                percentile(raw[name], 0.95),
            )
            p50, p95, rate, raw50, raw95 = rows[name]
            print(
                f"{path:44} {name:7} {p50:9.2f} {p95:7.2f} {rate:7.0f}",
                f"  {raw50:14.2f} / {raw95:.2f}",
            )
        off = rows["off"]
        for name in ("cached", "304"):
            if name not in rows:
                continue
            row = rows[name]
            savings[(path, name)] = (1 - row[3] / off[3], 1 - row[0] / off[0], off[3])
            print(
                f"{'':44} {name + '/off':7} {saving(row[0], off[0]):>9} {saving(row[1], off[1]):>7}"
                f" {row[2] / off[2]:6.1f}x   {saving(row[3], off[3]):>14} / "
                f"{saving(row[4], off[4])}  less than off"
            )
    # The floor: what any request through this stack costs before a view does anything.
    floor = await _latencies(clients["cached"], "/healthz", 300)
    raw_client = RawClient(urls["cached"], key)
    raw_floor = raw_client.latencies("/healthz", 300)
    raw_client.close()
    print(
        f"{'/healthz (no auth, no view work: the floor)':44} {'':7} "
        f"{percentile(floor, 0.5):9.2f} {percentile(floor, 0.95):7.2f} {'':7}   "
        f"{percentile(raw_floor, 0.5):14.2f} / {percentile(raw_floor, 0.95):.2f}"
    )
    for client in clients.values():
        await client.aclose()
    return savings, percentile(raw_floor, 0.5)


def stale_reads(urls: dict[str, str], key: str, conversation: int, reply: int, n: int) -> int:
    """Each write is followed by a plain read and a conditional one (If-None-Match with the
    ETag the cached server gave just before the write) through the cached server: a plain
    read without the write, or a 304 to the conditional one, is a stale read."""
    headers = {"Authorization": f"Bearer {key}"}
    cached = httpx.Client(base_url=urls["cached"], headers=headers, timeout=30)
    clients = {"cached": cached, "off": httpx.Client(base_url=urls["off"], headers=headers)}
    stale = stale_304 = checks = 0
    listing = "/api/v1/conversations/"
    history = f"/api/v1/conversations/{conversation}/messages/"

    def etag(path: str) -> str:
        response = cached.get(path)
        assert response.headers.get("ETag"), "no ETag on a cached page"
        return response.headers["ETag"]

    for i in range(n):
        writer = clients["cached" if i % 2 else "off"]  # same process, and across processes
        # Conditional reads first when i is odd, plain reads first otherwise: either may be
        # the read that (re)fills the cache after the write.
        conditional_first = bool(i % 2)
        before = etag(listing), etag(history)
        title = f"renamed {i}"
        assert writer.patch(
            f"/api/v1/conversations/{conversation}/", json={"title": title}
        ).is_success
        rating = 1 if i % 2 else -1
        for step in ("cond", "plain") if conditional_first else ("plain", "cond"):
            if step == "plain":
                first = cached.get(listing).json()["results"][0]
                stale += first["id"] != conversation or first["title"] != title
            else:
                response = cached.get(listing, headers={"If-None-Match": before[0]})
                stale_304 += response.status_code == 304
                if response.status_code == 200:
                    first = response.json()["results"][0]
                    stale += first["id"] != conversation or first["title"] != title
            checks += 1
        assert writer.post(f"/api/v1/messages/{reply}/feedback", json={"rating": rating}).is_success
        for step in ("cond", "plain") if conditional_first else ("plain", "cond"):
            if step == "plain":
                results = cached.get(history).json()["results"]
            else:
                response = cached.get(history, headers={"If-None-Match": before[1]})
                stale_304 += response.status_code == 304
                results = response.json()["results"] if response.status_code == 200 else None
            if results is not None:
                shown = next(m for m in results if m["id"] == reply)
                stale += shown["feedback"]["rating"] != rating
            checks += 1
    print(
        f"\n2. stale reads: {stale + stale_304} of {checks} reads right after a write "
        f"({stale} with old content, {stale_304} 304s to the pre-write ETag; half the reads "
        f"conditional; writes alternate between the cached server and the other process)"
    )
    return stale + stale_304


def ai_response(args) -> None:
    from django.conf import settings

    from openspark.core.cache import ai_response_get, ai_response_key, ai_response_set
    from openspark.llm import get_chat_provider
    from openspark.llm.testserver import GLMTestServer

    messages = [
        {"role": "system", "content": "You are OpenSpark."},
        {"role": "user", "content": "What is our refund policy? Answer with the sources."},
    ]
    model_settings = {"temperature": 0.7, "max_tokens": 512}

    def key() -> str:
        return ai_response_key(
            model="glm-4",
            settings=model_settings,
            messages=messages,
            context_fingerprint="ctx",
            user_scope="kb:bench",
        )

    print("\n3. a repeated identical question")
    for first_token, per_token in ((0.2, 0.02), (0.0, 0.0)):
        with GLMTestServer(first_token_delay=first_token, token_delay=per_token) as server:
            settings.LLM_PROVIDER = "zhipuai"
            settings.ZHIPUAI_API_KEY = "bench.key"
            settings.ZHIPUAI_BASE_URL = server.base_url
            provider = get_chat_provider()
            calls = []
            for _ in range(args.model_calls):
                started = time.perf_counter()
                text, usage = provider.complete(messages)
                calls.append((time.perf_counter() - started) * 1000)
            usage = {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
            }
            ai_response_set(key(), content=text, citations=[], usage=usage, pace=[[0, len(text)]])
            hits = []
            for _ in range(200):
                started = time.perf_counter()
                assert ai_response_get(key())["content"] == text
                hits.append((time.perf_counter() - started) * 1000)
        model_p50, hit_p50 = percentile(calls, 0.5), percentile(hits, 0.5)
        print(
            f"   test server first token {first_token:.2f} s, {per_token:.2f} s/token "
            f"({len(text)} chars): model call p50 {model_p50:8.2f} ms, "
            f"ai_response hit p50 {hit_p50:.3f} ms (p95 {percentile(hits, 0.95):.3f}) "
            f"→ {model_p50 / hit_p50:,.0f}x cheaper, 0 tokens"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--stale-checks", type=int, default=200)
    parser.add_argument("--model-calls", type=int, default=10)
    args = parser.parse_args()
    stack = Stack()
    print(f"{os.cpu_count()} CPUs, load average {loadavg()}")
    try:
        data = seed()
        urls = {"cached": stack.server(cache=True), "off": stack.server(cache=False)}
        paths = [
            "/api/v1/conversations/",
            f"/api/v1/conversations/{data['conversation']}/messages/",
            f"/api/v1/conversations/{data['conversation']}/messages/?page_size=200",
            "/api/v1/me/",
        ]
        savings, floor = asyncio.run(measure(urls, data["key"], paths, args))
        stale = stale_reads(
            urls, data["key"], data["conversation"], data["reply"], args.stale_checks
        )
        ai_response(args)
        print(f"\nsummary (p50 less than caching off, raw socket / httpx; load {loadavg()}):")
        for (path, name), (raw_saving, httpx_saving, off_raw) in savings.items():
            goal = 0.90 if name == "304" else 0.75
            verdict = "met" if raw_saving >= goal else "MISSED"
            if "conversations" in path:  # the goals: conversation list, history
                verdict = f"goal >= {goal:.0%} in server time: {verdict}"
            else:
                verdict = "context, no goal"
            print(
                f"  {name:6} {path:58} {raw_saving:6.1%} / {httpx_saving:6.1%}  ({verdict}; "
                f"/healthz, the floor of any request, is {1 - floor / off_raw:.0%} below off)"
            )
        print(f"  stale reads: {stale} (goal 0: {'met' if stale == 0 else 'MISSED'})")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
