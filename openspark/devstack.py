"""`make run`: the whole product on one machine with embedded defaults.

Starts, as needed: an embedded Redis (unless REDIS_URL is set), Milvus Lite's gRPC server
(unless MILVUS_URI is set), migrations, demo users, the ASGI server (HTTP + websockets), a
Celery worker and beat. Prints the URL once /readyz answers 200. Ctrl-C (or SIGTERM) stops
everything it started; children also die with it if it is killed outright. While it runs,
var/redis.url holds the broker's URL for `make flower`; every process writes its metrics to
var/prometheus/, which the web server's /metrics adds up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from openspark.embedded import Service, die_with_parent, port_open, start_milvus_lite, start_redis

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def _log(message: str) -> None:
    print(f"[openspark] {message}", flush=True)


def metrics_dir_wipe(path: Path) -> None:
    """Start from no samples: files of a previous run's processes would be added to this one's
    (pids are reused). Only prometheus_client's own files are removed."""
    path.mkdir(parents=True, exist_ok=True)
    for file in path.glob("*.db"):
        file.unlink()


class Stack:
    def __init__(self, var_dir: Path, port: int, host: str):
        self.var_dir = var_dir
        self.port = port
        self.host = host
        self.services: list[Service] = []
        self.env = dict(os.environ)
        self.env.setdefault("DJANGO_SETTINGS_MODULE", "openspark.settings.local")
        self.env["OPENSPARK_VAR_DIR"] = str(var_dir)
        self.env.setdefault("NO_PROXY", "127.0.0.1,localhost")
        self.logs = var_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # Every process started here writes its metrics to one folder of its own, so the web
        # server's /metrics covers the worker and beat too (prometheus_client's multiprocess
        # mode). Always this stack's folder: one inherited from elsewhere is not ours to wipe.
        self.env["PROMETHEUS_MULTIPROC_DIR"] = str(var_dir / "prometheus")
        metrics_dir_wipe(var_dir / "prometheus")
        self.redis_url_file = var_dir / "redis.url"

    def start_embedded(self) -> None:
        if not self.env.get("REDIS_URL"):
            redis = start_redis(self.var_dir / "redis")
            self.services.append(redis)
            self.env["REDIS_URL"] = redis.url
            _log(f"embedded Redis at {redis.url}")
        if not self.env.get("MILVUS_URI"):
            milvus = start_milvus_lite(self.var_dir / "milvus")
            self.services.append(milvus)
            self.env["MILVUS_URI"] = milvus.url
            _log(f"Milvus Lite server at {milvus.url}")
        # For `make flower`, which watches this stack's broker (the URL may hold a password).
        self.redis_url_file.unlink(missing_ok=True)
        fd = os.open(self.redis_url_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(self.env["REDIS_URL"] + "\n")

    def manage(self, *args: str) -> None:
        subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=self.env, check=True)

    def spawn(self, name: str, args: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        self.services.append(Service(name, "", process))

    def start_app(self) -> None:
        pool = self.env.get("CELERY_WORKER_POOL", "threads")
        concurrency = self.env.get("CELERY_WORKER_CONCURRENCY", "8")
        self.spawn(
            "web",
            [PY, "-m", "uvicorn", "openspark.asgi:application", "--host", self.host,
             "--port", str(self.port), "--no-access-log", "--ws", "websockets"],
        )  # fmt: skip
        # Background work yields the CPU to the web server: measured under a 200-reply load on
        # 2 cores, the API's p95 fell from 300 to 122 ms with the workers at nice 10
        # (docs/performance.md, "Chat, 2026-11-27 evening").
        nice = int(self.env.get("CELERY_WORKER_NICE", "10"))
        niced = ["nice", "-n", str(nice)] if nice else []
        self.spawn(
            "worker",
            [*niced, PY, "-m", "celery", "-A", "openspark", "worker", "--loglevel", "INFO",
             "--pool", pool, "--concurrency", concurrency, "-n", "worker@%h"],
        )  # fmt: skip
        beat_schedule = str(self.var_dir / "celerybeat-schedule")
        self.spawn(
            "beat",
            [PY, "-m", "celery", "-A", "openspark", "beat", "--loglevel", "INFO",
             "--schedule", beat_schedule],
        )  # fmt: skip

    def wait_ready(self, timeout: float = 180) -> None:
        url = f"http://127.0.0.1:{self.port}/readyz"
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_children()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except Exception as exc:  # not up yet: connection refused or 503
                last = str(exc)
            time.sleep(0.5)
        raise RuntimeError(f"not ready after {timeout:.0f}s ({last}); see {self.logs}")

    def check_children(self) -> None:
        for service in self.services:
            if service.process.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with code {service.process.returncode}; "
                    f"see {self.logs / (service.name + '.log')}"
                )

    def stop(self) -> None:
        self.redis_url_file.unlink(missing_ok=True)
        for service in reversed(self.services):
            if service.process.poll() is None:
                service.process.terminate()
        deadline = time.monotonic() + 15
        for service in reversed(self.services):
            try:
                service.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait(5)


def _ignore_stop_signals() -> None:
    # A second Ctrl-C (or one SIGINT delivered twice) must not abort the orderly stop
    # halfway; stop() kills whatever has not exited within 15 s anyway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main() -> int:
    var_dir = Path(os.environ.get("OPENSPARK_VAR_DIR", ROOT / "var")).resolve()
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    if port_open(port):
        _log(f"port {port} is already in use; set PORT=... to choose another")
        return 1
    stack = Stack(var_dir, port, host)

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        stack.start_embedded()
        stack.manage("migrate", "--noinput", "-v", "0")
        stack.manage("seed_demo")
        stack.start_app()
        stack.wait_ready()
        _log(
            f"OpenSpark is running at http://{host}:{port}/  (admin: /admin/, API docs: /api/docs/)"
        )
        _log(f"logs: {stack.logs}; press Ctrl-C to stop")
        while True:
            stack.check_children()
            time.sleep(1)
    except KeyboardInterrupt:
        _ignore_stop_signals()
        _log("stopping…")
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        _log(f"error: {exc}")
        return 1
    finally:
        _ignore_stop_signals()
        stack.stop()
        _log("stopped")


if __name__ == "__main__":
    sys.exit(main())
