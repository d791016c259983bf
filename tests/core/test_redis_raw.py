"""Script calls on raw connections: pipelined replies in order, NOSCRIPT recovered per
command, a script error returned without spoiling the connection, TLS and AUTH as redis-py
opens them."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time

import pytest
import redis
from django.conf import settings

from openspark.core.redis_raw import ScriptConnections, pack_command, script_sha
from openspark.embedded import free_port, start_redis
from throttling import limiter
from throttling.limiter import Rule, limiter_consume

ECHO = "return ARGV[1]"
FAIL = "return redis.error_reply('nope')"


def _call(script: str, arg: str = "") -> tuple[bytes, str]:
    return pack_command("EVALSHA", script_sha(script), 0, arg), script


def test_pipelined_calls_come_back_in_order_and_survive_script_flush_and_errors():
    client = redis.Redis.from_url(settings.REDIS_URL)
    scripts = ScriptConnections(lambda _url: client)
    url = settings.REDIS_URL
    client.script_flush()  # neither script is loaded: both replies are NOSCRIPT first
    assert scripts.evalsha_many(url, [_call(ECHO, "a"), _call(ECHO, "b")]) == [b"a", b"b"]
    first, second = scripts.evalsha_many(url, [_call(FAIL), _call(ECHO, "c")])
    assert isinstance(first, redis.exceptions.ResponseError) and "nope" in str(first)
    assert second == b"c"
    # The connection went back to the stack with nothing unread on it.
    assert len(scripts._idle[url]) == 1
    assert scripts.evalsha(url, *_call(ECHO, "d")) == b"d"
    try:
        scripts.evalsha(url, *_call(FAIL))
    except redis.exceptions.ResponseError as error:
        assert "nope" in str(error)
    else:
        raise AssertionError("a script error must raise from evalsha")
    assert scripts.evalsha(url, *_call(ECHO, "e")) == b"e"


@pytest.fixture
def tls_redis_url(tmp_path):
    """A Redis of the test's own that takes only TLS and a password: the raw links write and
    read on the socket redis-py opened, so the handshake, AUTH and SELECT must all be its."""
    binary, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if not binary or not openssl:
        pytest.skip("needs the system's redis-server (built with TLS) and openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    server = start_redis(
        tmp_path / "redis", port=port, persist=False, binary=binary,
        # Plain port off: the only way in is TLS, on the port waited for.
        extra_args=["--port", 0, "--tls-port", port, "--tls-cert-file", cert,
                    "--tls-key-file", key, "--tls-ca-cert-file", cert,
                    "--tls-auth-clients", "no", "--requirepass", "s3cret"],
    )  # fmt: skip
    yield f"rediss://:s3cret@127.0.0.1:{port}/3?ssl_ca_certs={cert}", server
    server.stop()


def test_links_speak_tls_with_auth_and_a_database_and_fail_as_redis_errors(tls_redis_url):
    url, server = tls_redis_url
    client = redis.Redis.from_url(url, socket_timeout=2)
    scripts = ScriptConnections(lambda _url: client)
    store = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])"
    packed = pack_command("EVALSHA", script_sha(store), 1, "raw-tls", "kept")
    assert scripts.evalsha_many(url, [(packed, store), _call(ECHO, "x")]) == [b"kept", b"x"]
    assert isinstance(scripts._idle[url][0].sock, ssl.SSLSocket)
    assert client.get("raw-tls") == b"kept"  # in database 3, where the URL points
    assert client.execute_command("SELECT", 0) and client.get("raw-tls") is None
    server.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        scripts.evalsha(url, *_call(ECHO, "y"))


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of the test's own, allowed DEBUG (to reload its data slowly, as a restarted
    server does), so the shared one is never paused."""
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("needs the system's redis-server")
    server = start_redis(
        tmp_path / "redis", persist=False, binary=binary,
        extra_args=["--enable-debug-command", "yes",
                    "--loading-process-events-interval-bytes", 1024],
    )  # fmt: skip
    yield server.url
    server.stop()


def test_a_server_still_loading_its_data_raises_instead_of_answering(private_redis, settings):
    """`-LOADING` is redis-py's BusyLoadingError, a connection error: raised (the limiter fails
    open on it) rather than handed back as if it were the script's reply."""
    url = private_redis
    client = redis.Redis.from_url(url, socket_timeout=5)
    scripts = ScriptConnections(lambda _url: client)
    assert scripts.evalsha(url, *_call(ECHO, "a")) == b"a"  # the link is open before
    client.execute_command("DEBUG", "POPULATE", 2000, "filler", 100)
    client.save()
    client.config_set("key-load-delay", 1000)  # µs per key: ~2 s of loading
    reload = threading.Thread(
        target=lambda: redis.Redis.from_url(url).execute_command("DEBUG", "RELOAD")
    )
    reload.start()
    try:
        deadline = time.monotonic() + 5
        while not redis.Redis.from_url(url).info("persistence")["loading"]:
            assert time.monotonic() < deadline, "the server did not start loading"
            time.sleep(0.02)
        with pytest.raises(redis.exceptions.ConnectionError, match="loading"):
            scripts.evalsha(url, *_call(ECHO, "b"))
        settings.REDIS_URL = url
        decision = limiter_consume(rules=[Rule("plan", "u:loading", limit=5)])
        assert decision.allowed and decision.degraded  # failed open, not a 500
    finally:
        reload.join(30)
        limiter.health.down_until = 0
    assert scripts.evalsha(url, *_call(ECHO, "c")) == b"c"
