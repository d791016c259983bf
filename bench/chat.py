"""Chat pipeline benchmark: real uvicorn, real Celery worker(s), a private Redis, the GLM test
server (its own process) behind the real zhipuai SDK, and real websocket / HTTP clients.

    .venv/bin/python bench/chat.py                      # SQLite file DB in a temp folder
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/openspark_bench .venv/bin/python bench/chat.py

1. Stack overhead to first token: `message.send` → first `reply.delta` on the same socket,
   minus the server's fixed first-token delay; sequential, one reply at a time.
2. N concurrent conversations (one socket each) streaming at once: every delta delivered once
   and in order (lost / duplicated / out-of-order counts, text compared with what the test
   server sent), inter-delta gaps vs the server's own token gap, first-token overhead under
   load; meanwhile API clients `POST /api/v1/messages` at a steady rate: latency to the 202.
   CPU per streamed token: the process CPU time (user + system, children included) that the
   worker(s), the web server(s) and redis-server spent during phase 2, divided by the tokens
   the sockets received; `--post-interval 0` leaves the posting client out, so that every CPU
   second counted went to the streams.
Not a test: it prints figures (record them in docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUEUE = "bench-chat"


def _wait_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not open port {port}")


class Stack:
    """Every process of the run; stopped (children first) when the bench ends."""

    def __init__(self, args: argparse.Namespace) -> None:
        from openspark.embedded import die_with_parent, free_port, redis_server_binary

        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="osbench-chat-"))
        self.procs: list[subprocess.Popen] = []
        self.named: dict[str, subprocess.Popen] = {}
        self._spawn_opts = {"preexec_fn": die_with_parent, "cwd": ROOT}

        redis_port = free_port()
        binary = shutil.which("redis-server") or redis_server_binary()
        redis = self._spawn("redis", [binary, "--bind", "127.0.0.1", "--port", str(redis_port),
                                      "--save", "", "--appendonly", "no",
                                      "--maxclients", "10000"])  # fmt: skip
        _wait_port(redis_port, redis, "redis")

        self.glm_port = free_port()
        glm = self._spawn("glm", [sys.executable, "-m", "openspark.llm.testserver",
                                  "--port", str(self.glm_port),
                                  "--first-token-delay", str(args.first_token_delay),
                                  "--token-delay", str(args.token_delay)])  # fmt: skip
        _wait_port(self.glm_port, glm, "GLM test server")

        self.env = dict(os.environ)
        self.env.update(
            DJANGO_SETTINGS_MODULE="openspark.settings.test",
            OPENSPARK_TEST_RUN_ID="bench",
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            REDIS_KEY_PREFIX="osbenchchat",
            DATABASE_URL=os.environ.get("DATABASE_URL")
            or f"sqlite:///{self.tmp / 'bench.sqlite3'}",
            NO_PROXY="127.0.0.1,localhost",
            PYTHONUNBUFFERED="1",
            LOG_LEVEL="WARNING",
            CHAT_TASK_QUEUE=QUEUE,
            CHAT_DELTA_BATCH_SECONDS=str(args.batch),
            LLM_PROVIDER="zhipuai",
            ZHIPUAI_API_KEY="bench-key.secret",
            ZHIPUAI_BASE_URL=f"http://127.0.0.1:{self.glm_port}/api/paas/v4",
            LLM_REQUEST_TIMEOUT="60",
        )
        os.environ.update(self.env)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            env=self.env, cwd=ROOT, check=True,
        )  # fmt: skip

        self.web_port = free_port()
        web = self._spawn("web", [sys.executable, "-m", "uvicorn", "openspark.asgi:application",
                                  "--host", "127.0.0.1", "--port", str(self.web_port),
                                  "--no-access-log", "--ws", "websockets",
                                  "--workers", str(args.web_workers)])  # fmt: skip
        _wait_port(self.web_port, web, "uvicorn")
        nice = ["nice", "-n", str(args.worker_nice)] if args.worker_nice else []
        for i in range(args.workers):
            self._spawn(f"worker{i}", [*nice, sys.executable, "-m", "celery", "-A", "openspark",
                                       "worker", "--loglevel", "WARNING", "-Q", QUEUE,
                                       "--pool", "threads", "--concurrency", str(args.concurrency),
                                       "-n", f"bench{i}@%h", "--without-gossip",
                                       "--without-mingle", "--without-heartbeat"])  # fmt: skip
        self.url = f"http://127.0.0.1:{self.web_port}"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=getattr(self, "env", None),
            **self._spawn_opts,
        )  # fmt: skip
        self.procs.append(proc)
        self.named[name] = proc
        return proc

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) each part of the stack has used so far: the worker
        processes, the web server (uvicorn's parent and its worker processes), redis-server and
        the GLM test server; "clients" is this process (the websocket clients)."""
        import psutil

        used: dict[str, float] = {}
        for name, proc in self.named.items():
            part = "worker" if name.startswith("worker") else name
            try:
                root = psutil.Process(proc.pid)
                family = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for member in family:
                try:
                    times = member.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                used[part] = used.get(part, 0.0) + times.user + times.system
        times = psutil.Process().cpu_times()
        used["clients"] = times.user + times.system
        return used

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def make_users(n_socket: int, n_api: int) -> tuple[list[str], list[str]]:
    """Session cookies for socket users and API keys for posting users (one user each, so
    per-user limits never throttle the bench)."""
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from accounts.services import api_key_create

    user_model = get_user_model()
    stamp = int(time.time())
    cookies, keys = [], []
    for i in range(n_socket):
        user = user_model.objects.create_user(username=f"ws{stamp}-{i}")
        client = Client()
        client.force_login(user)
        name = settings.SESSION_COOKIE_NAME
        cookies.append(f"{name}={client.cookies[name].value}")
    for i in range(n_api):
        user = user_model.objects.create_user(username=f"api{stamp}-{i}")
        keys.append(api_key_create(user=user, name="bench")[1])
    return cookies, keys


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def loadavg() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def open_socket(url: str, cookie: str):
    from websockets.asyncio.client import connect

    ws = await connect(
        url.replace("http://", "ws://") + "/ws/chat/",
        origin=url,
        additional_headers={"Cookie": cookie},
        proxy=None,
        max_queue=None,
        open_timeout=60,
    )
    ready = json.loads(await ws.recv())
    assert ready["type"] == "ready", ready
    return ws


async def one_reply(ws, content: str) -> dict:
    """Send one message and read its reply to the end; times are time.perf_counter()."""
    sent = time.perf_counter()
    await ws.send(json.dumps({"type": "message.send", "content": content}))
    reply_id = None
    deltas: list[tuple[float, int, str]] = []
    while True:
        event = json.loads(await ws.recv())
        now = time.perf_counter()
        kind = event["type"]
        if kind == "message.created":
            reply_id = event["reply"]["id"]
            created = now
        elif kind == "reply.delta" and event["message_id"] == reply_id:
            # A delta with `from_seq` stands for seqs from_seq..seq (docs/chat.md).
            seqs = range(event.get("from_seq", event["seq"]), event["seq"] + 1)
            deltas.append((now, event["seq"], event["delta"], list(seqs)))
        elif kind == "reply.done" and event["message"]["id"] == reply_id:
            return {"sent": sent, "deltas": deltas, "final": event["message"]["content"],
                    "status": event["message"]["status"], "end": now, "created": created,
                    "timings": event["message"]["timings"]}  # fmt: skip
        elif kind in ("reply.error", "error", "rate_limited"):
            raise RuntimeError(f"unexpected event: {event}")


def delivery_check(result: dict, expected: str) -> dict[str, int]:
    """Every seq from 1 to the last covered exactly once, in order (a merged delta covers
    its from_seq..seq), and the text equal to what the test server sent."""
    covered = [seq for *_rest, seqs in result["deltas"] for seq in seqs]
    text = "".join(d for _t, _s, d, _c in result["deltas"])
    return {
        "duplicated": len(covered) - len(set(covered)),
        "out_of_order": sum(1 for a, b in itertools.pairwise(covered) if b <= a),
        "lost": len(set(range(1, max(covered, default=0) + 1)) - set(covered)),
        "merged": sum(1 for *_rest, seqs in result["deltas"] if len(seqs) > 1),
        "text_mismatch": int(text != expected or result["final"] != expected),
    }


async def phase_first_token(url: str, cookie: str, samples: int, ftd: float) -> tuple:
    """Overheads, and where they go: send → `message.created` (the socket's turn: limiter,
    transaction, enqueue), the reply's queue time (created → a worker claimed it, server
    clocks) and its time to first token (created → first token at the worker)."""
    ws = await open_socket(url, cookie)
    overheads, parts = [], {"send → created": [], "queue (server)": [], "first token (server)": []}
    for i in range(samples + 3):
        result = await one_reply(ws, f"[[tokens:3]] ping {i}")
        if i >= 3:  # warm-up: connection pools, first imports
            overheads.append(result["deltas"][0][0] - result["sent"] - ftd)
            parts["send → created"].append(result["created"] - result["sent"])
            parts["queue (server)"].append(result["timings"]["queue_ms"] / 1000)
            parts["first token (server)"].append(result["timings"]["first_token_ms"] / 1000 - ftd)
    await ws.close()
    return overheads, parts


def _poster_process(url: str, keys: list[str], interval: float, stop, out) -> None:
    out.put(asyncio.run(poster(url, keys, interval, stop)))


async def loop_lag(stop) -> list[float]:
    """How late this process's event loop wakes a 50 ms sleep: the delay any measurement
    taken in it would add."""
    lags = []
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.05)
        lags.append(time.perf_counter() - started - 0.05)
    return lags


async def poster(url: str, keys: list[str], interval: float, stop) -> list:
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            response = await client.post(
                "/api/v1/messages/",
                json={"content": f"[[tokens:3]] api {i}"},
                headers={"Authorization": f"Bearer {keys[i % len(keys)]}"},
            )
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            i += 1
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))
    return [latencies, statuses]


async def phase_concurrent(
    stack: Stack, cookies: list[str], keys: list[str], args: argparse.Namespace
) -> dict:
    from openspark.llm.testserver import reply_text, tokenize

    url = stack.url
    sockets = await asyncio.gather(*(open_socket(url, c) for c in cookies))
    contents = [f"[[tokens:{args.tokens}]] conversation {i}" for i in range(len(sockets))]
    # The API client runs in its own process, as a real one would: this process's event loop
    # is busy with 200 sockets, and a response it reads late would count that delay.
    spawn = multiprocessing.get_context("spawn")
    stop, out = spawn.Event(), spawn.Queue()
    post_proc = None
    if args.post_interval > 0:
        post_proc = spawn.Process(
            target=_poster_process, args=(url, keys, args.post_interval, stop, out), daemon=True
        )
        post_proc.start()
    lag_task = asyncio.create_task(loop_lag(stop))
    cpu_before = stack.cpu_seconds()
    started = time.perf_counter()
    results = await asyncio.gather(
        *(one_reply(ws, c) for ws, c in zip(sockets, contents, strict=True))
    )
    elapsed = time.perf_counter() - started
    cpu_after = stack.cpu_seconds()
    stop.set()
    latencies, statuses = [], {}
    if post_proc is not None:
        latencies, statuses = await asyncio.to_thread(out.get, timeout=60)
        post_proc.join(10)
    lags = await lag_task
    await asyncio.gather(*(ws.close() for ws in sockets))

    totals = {"duplicated": 0, "out_of_order": 0, "lost": 0, "merged": 0, "text_mismatch": 0}
    gaps, first_tokens, durations, deltas, tokens = [], [], [], 0, 0
    for result, content in zip(results, contents, strict=True):
        expected = reply_text([{"role": "user", "content": content}])
        for key, value in delivery_check(result, expected).items():
            totals[key] += value
        times = [t for t, *_rest in result["deltas"]]
        deltas += len(times)
        tokens += len(tokenize(result["final"]))
        gaps += [b - a for a, b in itertools.pairwise(times)]
        first_tokens.append(times[0] - result["sent"] - args.first_token_delay)
        durations.append(result["end"] - result["sent"])
    return {"totals": totals, "gaps": gaps, "first_tokens": first_tokens, "deltas": deltas,
            "durations": durations, "elapsed": elapsed, "post_latencies": latencies,
            "post_statuses": statuses, "loop_lags": lags, "tokens": tokens,
            "cpu": {k: v - cpu_before.get(k, 0.0) for k, v in cpu_after.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=100, help="tokens per reply")
    parser.add_argument("--first-token-delay", type=float, default=0.3)
    parser.add_argument("--token-delay", type=float, default=0.05)
    parser.add_argument("--batch", type=float, default=0.05, help="CHAT_DELTA_BATCH_SECONDS")
    parser.add_argument("--samples", type=int, default=30, help="phase 1 replies")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=260, help="threads per worker")
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=0,
        help="run the Celery workers at this nice level (web stays at 0)",
    )
    parser.add_argument("--web-workers", type=int, default=1, help="uvicorn processes")
    parser.add_argument(
        "--post-interval",
        type=float,
        default=0.1,
        help="seconds between POSTs; 0: no posting client",
    )
    parser.add_argument("--api-users", type=int, default=50)
    args = parser.parse_args()

    stack = Stack(args)
    try:
        cookies, keys = make_users(args.conversations, args.api_users)
        time.sleep(3)  # the worker(s) finish starting
        print(f"# Chat pipeline bench: {args.conversations} conversations, {args.tokens} tokens "
              f"each; GLM test server first-token {ms(args.first_token_delay)}, "
              f"{ms(args.token_delay)}/token; batch {ms(args.batch)}; {args.workers} worker "
              f"process(es) x {args.concurrency} threads; {args.web_workers} uvicorn process(es); "
              f"DB {stack.env['DATABASE_URL'].split(':')[0]}; {os.cpu_count()} CPUs; "
              f"load average {loadavg()}")  # fmt: skip

        overheads, parts = asyncio.run(
            phase_first_token(stack.url, cookies[0], args.samples, args.first_token_delay)
        )
        print(f"\n1. Overhead to first token, idle (n={len(overheads)}): "
              f"p50 {ms(pct(overheads, 50))}, p95 {ms(pct(overheads, 95))}, "
              f"max {ms(max(overheads))}")  # fmt: skip
        print("   of which (p50): " + ", ".join(f"{name} {ms(pct(v, 50))}"
                                                for name, v in parts.items()))  # fmt: skip

        r = asyncio.run(phase_concurrent(stack, cookies, keys, args))
        ideal = args.first_token_delay + (args.tokens - 1) * args.token_delay
        print(
            f"\n2. {args.conversations} concurrent replies, {r['deltas']} deltas, "
            f"all done in {r['elapsed']:.1f} s (ideal {ideal:.1f} s)"
        )
        print(
            f"   delivery: lost {r['totals']['lost']}, duplicated {r['totals']['duplicated']}, "
            f"out of order {r['totals']['out_of_order']}, "
            f"merged (from_seq) deltas {r['totals']['merged']}, "
            f"text mismatches {r['totals']['text_mismatch']}"
        )
        print(
            f"   inter-delta gap: p50 {ms(pct(r['gaps'], 50))}, p95 {ms(pct(r['gaps'], 95))}, "
            f"p99 {ms(pct(r['gaps'], 99))}, max {ms(max(r['gaps']))} "
            f"(server: {ms(args.token_delay)} per token)"
        )
        print(
            f"   overhead to first token under load: p50 {ms(pct(r['first_tokens'], 50))}, "
            f"p95 {ms(pct(r['first_tokens'], 95))}"
        )
        print(
            f"   reply duration (send → done): p50 {pct(r['durations'], 50):.2f} s, "
            f"p95 {pct(r['durations'], 95):.2f} s (ideal {ideal:.2f} s)"
        )
        print(f"   load average at the end: {loadavg()}")
        cpu, tokens = r["cpu"], r["tokens"]
        stack_cpu = sum(cpu.get(part, 0.0) for part in ("worker", "web", "redis"))
        print(
            f"   CPU per streamed token ({tokens} tokens): worker + web + redis "
            f"{stack_cpu / tokens * 1e6:.0f} µs = "
            + " + ".join(
                f"{part} {cpu.get(part, 0.0) / tokens * 1e6:.0f}"
                for part in ("worker", "web", "redis")
            )
            + f"; also GLM test server {cpu.get('glm', 0.0) / tokens * 1e6:.0f}, "
            f"socket clients {cpu['clients'] / tokens * 1e6:.0f} "
            f"(CPU seconds: {', '.join(f'{k} {v:.1f}' for k, v in sorted(cpu.items()))}; "
            f"{'with' if r['post_latencies'] else 'without'} the posting client)"
        )
        lat = r["post_latencies"]
        if lat:
            print(
                f"   POST /api/v1/messages (n={len(lat)}, statuses {r['post_statuses']}): "
                f"p50 {ms(pct(lat, 50))}, p95 {ms(pct(lat, 95))}, max {ms(max(lat))} "
                f"(from a separate client process)"
            )
        lags = r["loop_lags"]
        print(
            f"   the socket clients' event loop woke late by p50 {ms(pct(lags, 50))}, "
            f"p95 {ms(pct(lags, 95))} (what a measurement taken in it would add)"
        )
    except BaseException:
        for log in sorted(stack.tmp.glob("*.log")):
            print(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
