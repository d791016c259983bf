"""Milvus clients do not ping idle channels (settings.MILVUS_GRPC_OPTIONS).

pymilvus pings every channel every 10 s, idle or not; Milvus Lite's gRPC server allows one
ping per 5 minutes without calls and answers more with GOAWAY "too_many_pings". A call that
races the GOAWAY fails: under `make load` a knowledge search in a web process whose channel
had idled for about a minute answered 500 (docs/reliability.md, "Load"). The clock is sped up
here — a ping a second, with no cap on pings without data — so a few idle seconds show what
a minute does with pymilvus' defaults. gRPC logs the GOAWAY it receives on stderr."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.live import ROOT, subprocess_env

IDLE_CLIENTS = """
import time
import django

django.setup()
from knowledge.vectorstore import get_vector_store
from openspark.core.health import CHECKS

store = get_vector_store()
store.client.list_collections()
CHECKS["vector_store"]()  # the readiness check's own client
time.sleep(6)
store.client.list_collections()
CHECKS["vector_store"]()
print("calls ok")
"""
FAST_PINGS = {"grpc.keepalive_time_ms": 1000, "grpc.http2.max_pings_without_data": 0}


def _idle_clients(milvus_uri: str, options: dict) -> subprocess.Popen:
    env = subprocess_env(MILVUS_URI=milvus_uri, MILVUS_GRPC_OPTIONS=json.dumps(options))
    return subprocess.Popen(
        [sys.executable, "-c", IDLE_CLIENTS], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_idle_milvus_clients_send_no_pings_the_lite_server_refuses(milvus_lite):
    ours = _idle_clients(milvus_lite, FAST_PINGS)
    # pymilvus' own default, which the setting turns off: pings on idle channels too.
    pymilvus_default = _idle_clients(
        milvus_lite, {**FAST_PINGS, "grpc.keepalive_permit_without_calls": 1}
    )
    ours_out, ours_err = ours.communicate(timeout=120)
    _default_out, default_err = pymilvus_default.communicate(timeout=120)

    assert "too_many_pings" in default_err  # the server does refuse idle pings
    assert "calls ok" in ours_out, ours_err
    assert "too_many_pings" not in ours_err, ours_err[-2000:]
