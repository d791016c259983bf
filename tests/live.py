"""Real servers for end-to-end tests: the ASGI server and a Celery worker as subprocesses,
on the test database (pytest-django's) and the test Redis. Tests that use them must commit
their data (`transactional_db`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from openspark.embedded import die_with_parent, free_port

ROOT = Path(__file__).resolve().parent.parent


def redis_delete_matching(pattern: str) -> None:
    """Delete this run's keys matching `pattern` (under settings.REDIS_KEY_PREFIX)."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{settings.REDIS_KEY_PREFIX}:{pattern}", count=1000))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass  # tests that stop Redis on purpose restore it themselves
    finally:
        client.close()


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="openspark.settings.test",
        OPENSPARK_USE_TEST_DB="1",
        PYTHONUNBUFFERED="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


@dataclass
class LiveProcess:
    name: str
    process: subprocess.Popen
    log_path: Path
    url: str = ""
    extra: dict = field(default_factory=dict)
    ready: Callable[[LiveProcess], bool] = lambda _process: True

    def wait_ready(self, timeout: float = 60) -> LiveProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()}")
            if self.ready(self):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{self.log()}")

    def log(self, tail: int | None = 4000) -> str:
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no shutdown, no acknowledgements."""
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _spawn(name: str, args: list[str], log_dir: Path, env: dict) -> LiveProcess:
    # The child gets SIGTERM when the *thread* that spawns it ends (PR_SET_PDEATHSIG), so
    # spawn from a thread that lives as long as the process should: start several with
    # `wait=False`, then `wait_ready()` each, rather than starting them from a thread pool.
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
    )
    return LiveProcess(name, process, log_path)


def _serving(server: LiveProcess) -> bool:
    try:
        return httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def start_asgi_server(
    log_dir: Path, *, env: dict | None = None, workers: int = 1, wait: bool = True
) -> LiveProcess:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "openspark.asgi:application",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            "--ws", "websockets", "--workers", str(workers)]  # fmt: skip
    server = _spawn(f"asgi-{port}", args, log_dir, env or subprocess_env())
    server.url = f"http://127.0.0.1:{port}"
    server.ready = _serving
    return server.wait_ready() if wait else server


def all_queues() -> list[str]:
    """Every queue tasks are routed to (chat, ingest, default), named as in these settings."""
    from django.conf import settings

    names = [
        settings.CHAT_TASK_QUEUE,
        settings.INGEST_TASK_QUEUE,
        settings.CELERY_TASK_DEFAULT_QUEUE,
    ]
    return [name for name in dict.fromkeys(names) if name]


def _logged(text: str) -> Callable[[LiveProcess], bool]:
    return lambda process: text in process.log(tail=None)


def purge_task_queues() -> None:
    """Drop every task waiting in the queues, so that requests a test made with no worker
    running are not run later, by another test's worker, against rows that are gone."""
    from openspark.celery import app

    with app.connection_for_write() as connection:
        for queue in all_queues():
            connection.default_channel.queue_purge(queue)


def start_celery_worker(
    log_dir: Path,
    *,
    env: dict | None = None,
    concurrency: int = 8,
    pool: str = "threads",
    queues: list[str] | None = None,
    wait: bool = True,
) -> LiveProcess:
    """A worker consuming `queues` (default: all of them, as one worker of a small deployment
    would). `pool="prefork"` gives the ingest worker's hard time and memory limits."""
    name = f"worker-{free_port()}"
    args = [sys.executable, "-m", "celery", "-A", "openspark", "worker", "--loglevel", "INFO",
            "--pool", pool, "--concurrency", str(concurrency), "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-Q", ",".join(queues or all_queues())]  # fmt: skip
    worker = _spawn(name, args, log_dir, env or subprocess_env())
    worker.ready = _logged(" ready.")
    return worker.wait_ready() if wait else worker


def start_celery_beat(log_dir: Path, *, env: dict | None = None, wait: bool = True) -> LiveProcess:
    """Celery beat on CELERY_BEAT_SCHEDULE, its state in a file of its own rather than the
    database scheduler's tables (which transactional tests flush under it)."""
    name = f"beat-{free_port()}"
    args = [sys.executable, "-m", "celery", "-A", "openspark", "beat", "--loglevel", "INFO",
            "--scheduler", "celery.beat:PersistentScheduler",
            "--schedule", str(log_dir / f"{name}-schedule")]  # fmt: skip
    beat = _spawn(name, args, log_dir, env or subprocess_env())
    beat.ready = _logged("beat: Starting...")
    return beat.wait_ready() if wait else beat
