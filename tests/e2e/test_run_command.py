"""Smoke test of `make run`'s program: start it, wait for /readyz, log in, stop it cleanly."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from openspark.embedded import free_port
from tests.prom import Scrape

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run command exited early"
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("not ready in time")


def _role(process: psutil.Process) -> str:
    command = process.cmdline()
    if "uvicorn" in " ".join(command):
        return "web"
    if "celery" in " ".join(command) and "worker" in command:
        return command[command.index("-n") + 1].split("@")[0]
    return ""


def _pool_children_limits(runner: subprocess.Popen) -> dict[str, tuple[int, int]]:
    """RLIMIT_DATA of the workers' pool children (processes whose parent is a worker)."""
    limits = {}
    for process in psutil.Process(runner.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            role = _role(process)
            if role not in ("", "web") and _role(process.parent()) == role:
                limits[role] = process.rlimit(psutil.RLIMIT_DATA)
    return limits


def test_run_command_serves_logs_in_and_stops_without_orphans(tmp_path):
    port = free_port()
    # The run command on its embedded defaults, whatever services the test run itself uses.
    dropped = (
        "DJANGO_SETTINGS_MODULE",
        "DATABASE_URL",
        "REDIS_URL",
        "MILVUS_URI",
        "REDIS_KEY_PREFIX",
    )
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(OPENSPARK_VAR_DIR=str(tmp_path / "var"), PORT=str(port), PYTHONUNBUFFERED="1")
    env.update(METRICS_TOKEN="e2e-metrics-token")
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "openspark.devstack"], cwd=ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 6  # redis, milvus, web, chat and ingest workers, beat
        # Background work yields the CPU to the web server (CELERY_WORKER_NICE, default 10),
        # ingestion to replies as well.
        niceness = {_role(p): p.nice() for p in children if _role(p)}
        assert niceness == {"web": os.nice(0), "chat": os.nice(0) + 10, "ingest": os.nice(0) + 15}
        # The ingest worker's pool children, and only they, have the memory limit (a child
        # sets it as it starts: wait for that, on a busy machine it can take a moment).
        expected = {"ingest": (2048 * 2**20, 2048 * 2**20)}
        deadline = time.monotonic() + 60
        while (limits := _pool_children_limits(proc)) != expected:
            assert time.monotonic() < deadline, f"pool children's limits: {limits}"
            time.sleep(0.5)

        # The runner prints the URL once its own readiness poll succeeds, just after ours.
        deadline = time.monotonic() + 30
        while f"running at http://127.0.0.1:{port}/" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.2)
        output = log_path.read_text()
        password = re.search(r"^\s+pro\s+(\S+)\s+\(pro plan\)", output, re.M).group(1)

        with httpx.Client(base_url=base, follow_redirects=False, timeout=10) as client:
            page = client.get("/accounts/login/")
            csrf = client.cookies["csrftoken"]
            response = client.post(
                "/accounts/login/",
                data={"username": "pro", "password": password, "csrfmiddlewaretoken": csrf},
                headers={"Referer": f"{base}/accounts/login/"},
            )
            assert page.status_code == 200 and response.status_code == 302, response.text[:500]
            home = client.get("/")
            assert 'data-plan-tier="pro"' in home.text
            assert client.get("/api/v1/me/").json()["plan"]["tier"] == "pro"

        # `make flower` finds this broker; the web server's /metrics adds up every process of
        # the stack: the login's warm-up task ran in the worker.
        assert (tmp_path / "var" / "redis.url").read_text().startswith("redis://")
        token = {"Authorization": "Bearer e2e-metrics-token"}
        warmed = {"task": "cache_warm_logins", "state": "SUCCESS"}
        deadline = time.monotonic() + 60
        while True:
            metrics = Scrape(httpx.get(f"{base}/metrics", headers=token, timeout=10).text)
            if metrics.value("openspark_celery_task_duration_seconds_count", **warmed) == 1:
                break
            assert time.monotonic() < deadline, "the worker's task never showed in /metrics"
            time.sleep(0.5)
        login = {"method": "POST", "route": "accounts:login", "status": "302"}
        assert metrics.value("openspark_http_requests_total", **login) == 1
        assert list((tmp_path / "var" / "prometheus").glob("*.db"))
    finally:
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.send_signal(signal.SIGINT)
        # Ctrl-C pressed twice: the second arrives while the stack is stopping.
        deadline = time.monotonic() + 10
        while "stopping" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(60)
        _gone, alive = psutil.wait_procs(children, timeout=20)
        for leftover in alive:
            leftover.kill()
    assert proc.returncode == 0, log_path.read_text()[-2000:]
    assert not alive, f"processes left behind: {alive}"
    assert "stopped" in log_path.read_text()
    assert "Traceback" not in log_path.read_text()
    assert not (tmp_path / "var" / "redis.url").exists()  # the broker is gone with the stack

    # A second run reuses the data: no new demo passwords are printed.
    second = subprocess.run(
        [sys.executable, "manage.py", "seed_demo"], cwd=ROOT, capture_output=True, text=True,
        env={**env, "DJANGO_SETTINGS_MODULE": "openspark.settings.local", "REDIS_URL": "redis://127.0.0.1:1/0"},
        timeout=120,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "Demo users exist" in second.stdout
