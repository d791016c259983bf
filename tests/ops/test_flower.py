"""`make flower` (python -m openspark.flower): Flower on the test Redis, behind basic auth with
a password generated once and kept under var/."""

import subprocess
import sys
import time

import httpx
import pytest
from django.conf import settings

from openspark.embedded import free_port
from tests.live import ROOT, subprocess_env


def _start(var_dir, **env):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "openspark.flower"],
        cwd=ROOT,
        env=subprocess_env(OPENSPARK_VAR_DIR=str(var_dir), FLOWER_PORT=str(port), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, f"http://127.0.0.1:{port}"


def _wait_up(process, url) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            httpx.get(f"{url}/healthcheck", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    pytest.fail("Flower did not start in 60 s")


def _stop(process) -> str:
    process.terminate()
    try:
        output, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate(timeout=5)
    return output


def test_flower_asks_for_the_generated_password(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWER_PASSWORD", raising=False)
    process, url = _start(tmp_path, REDIS_URL=settings.REDIS_URL)
    try:
        _wait_up(process, url)
        password = (tmp_path / "flower.password").read_text().strip()
        assert (tmp_path / "flower.password").stat().st_mode & 0o777 == 0o600
        assert httpx.get(f"{url}/workers", timeout=10).status_code == 401
        wrong = httpx.get(f"{url}/workers", auth=("admin", "guess"), timeout=10)
        assert wrong.status_code == 401
        right = httpx.get(f"{url}/workers", auth=("admin", password), timeout=10)
        assert right.status_code == 200 and "Flower" in right.text
    finally:
        output = _stop(process)
    assert output.count(password) == 1  # printed once, at generation

    again, url = _start(tmp_path, REDIS_URL=settings.REDIS_URL)
    try:
        _wait_up(again, url)
        assert httpx.get(f"{url}/workers", auth=("admin", password), timeout=10).status_code == 200
    finally:
        assert password not in _stop(again)  # kept, not shown again


def test_flower_finds_the_broker_of_make_run_or_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    process, _url = _start(tmp_path)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 1 and "start `make run` first" in output

    (tmp_path / "redis.url").write_text(settings.REDIS_URL + "\n")  # what make run leaves
    process, url = _start(tmp_path, FLOWER_PASSWORD="s3cret-pass")
    try:
        _wait_up(process, url)
        response = httpx.get(f"{url}/workers", auth=("admin", "s3cret-pass"), timeout=10)
        assert response.status_code == 200
    finally:
        _stop(process)
    assert not (tmp_path / "flower.password").exists()
