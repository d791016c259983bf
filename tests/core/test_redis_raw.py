"""Script calls on raw connections: pipelined replies in order, NOSCRIPT recovered per
command, a script error returned without spoiling the connection."""

from __future__ import annotations

import redis
from django.conf import settings

from openspark.core.redis_raw import ScriptConnections, pack_command, script_sha

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
