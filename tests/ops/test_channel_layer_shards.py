"""CHANNEL_LAYER_REDIS_URLS lists several Redis servers: the product's channel layer (built
from the settings, as every web and worker process builds it) spreads its groups over all of
them, and a group_send reaches the group's members wherever it landed."""

from __future__ import annotations

import json
import subprocess
import sys

import redis

from openspark.embedded import start_redis
from tests.live import ROOT, subprocess_env

SCRIPT = """
import asyncio, json
import django
django.setup()
from channels.layers import get_channel_layer

async def main():
    layer = get_channel_layer()
    channels = {}
    for n in range(40):
        channels[n] = await layer.new_channel()
        await layer.group_add(f"conversation.{n}", channels[n])
    for n in channels:
        await layer.group_send(f"conversation.{n}", {"type": "chat.delta", "n": n})
    got = [(await asyncio.wait_for(layer.receive(channels[n]), 5))["n"] for n in channels]
    print(json.dumps(got))

asyncio.run(main())
"""


def test_groups_spread_over_every_listed_server_and_messages_arrive(tmp_path):
    servers = [start_redis(tmp_path / f"redis-{n}", persist=False) for n in range(2)]
    try:
        env = subprocess_env(
            CHANNEL_LAYER_REDIS_URLS=",".join(s.url for s in servers),
            REDIS_KEY_PREFIX="shards",
        )
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(result.stdout.strip().splitlines()[-1]) == list(range(40))
        groups = [
            len(list(redis.Redis.from_url(s.url).scan_iter("shards:asgi:group:*"))) for s in servers
        ]
        assert sum(groups) == 40 and min(groups) > 0, groups  # both servers hold groups
    finally:
        for server in servers:
            server.stop()
