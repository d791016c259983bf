"""The load scenario's data and verdicts, shared by `bench/load/run.py` (`make load`,
`make soak`) and the suite's short run (tests/reliability/test_load_short.py).

Runs inside a Django process on the stack's database: `seed` creates the users the Locust
users play (docs/reliability.md, "Load"), `replies_unfinished` / `documents_unfinished`
read what the database says is still open after the load stopped, and `verdict` turns the
locustfile's results into the goals: no 5xx, no reply lost, a 429 only where a limit says so.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Mix:
    """How many of each kind of user, and the API consumers' (free plan) limits: low enough
    that consumers reach them within the run, so every 429 can be checked against them."""

    chat: int = 20
    upload: int = 3
    api: int = 4
    api_plan_limit: int = 40  # free plan, requests/min
    api_polling_limit: int = 20  # free plan, endpoint:polling per minute
    api_rate: float = 4.0  # each consumer's requests/s: past both limits
    reply_tokens: tuple[int, int] = (20, 60)

    def total(self) -> int:
        return self.chat + self.upload + self.api


@dataclass
class Seed:
    url: str
    mix: dict
    chat: list[dict] = field(default_factory=list)  # {"username", "cookie"}
    upload: list[dict] = field(default_factory=list)  # {"username", "key", "knowledge_base_id"}
    api: list[dict] = field(default_factory=list)  # {"username", "key"}
    # layer → limit, per kind of user, as configured (plans) when the run started.
    limits: dict[str, dict[str, int]] = field(default_factory=dict)
    started: float = 0.0
    run: str = ""

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))


def _plan_limits(plan) -> dict[str, int]:
    return {
        "plan": plan.requests_per_minute,
        "endpoint:conversations": plan.conversations_per_minute,
        "endpoint:messages": plan.messages_per_minute,
        "endpoint:knowledge": plan.knowledge_per_minute,
        "endpoint:polling": plan.polling_per_minute,
    }


def _session_cookie(user) -> str:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def seed(*, url: str, mix: Mix) -> Seed:
    """Users for one run (names unique per run, so a database may hold several runs):
    chat and upload users on the enterprise plan, far below its limits (any 429 they get is
    a bug); API consumers on the free plan, whose limits are set to `mix`'s so they reach
    them. Monthly token quotas are raised so `quota_exceeded` never mixes in."""
    from django.contrib.auth import get_user_model

    from accounts.services import api_key_create
    from knowledge.services import knowledge_base_create
    from throttling.models import Plan
    from throttling.plans import seed_default_plans

    seed_default_plans()
    free = Plan.objects.get(tier=Plan.Tier.FREE)
    free.requests_per_minute = mix.api_plan_limit
    free.polling_per_minute = mix.api_polling_limit
    free.monthly_token_quota = 10**9
    free.save()
    enterprise = Plan.objects.get(tier=Plan.Tier.ENTERPRISE)
    enterprise.monthly_token_quota = 10**12
    enterprise.save()

    run = uuid.uuid4().hex[:6]
    users = get_user_model().objects
    result = Seed(url=url, mix=asdict(mix), run=run, started=time.time())
    for i in range(mix.chat):
        user = users.create_user(username=f"load-{run}-chat-{i}", plan=enterprise)
        result.chat.append({"username": user.username, "cookie": _session_cookie(user)})
    for i in range(mix.upload):
        user = users.create_user(username=f"load-{run}-upload-{i}", plan=enterprise)
        base = knowledge_base_create(owner=user, name=f"load {i}")
        _key, raw = api_key_create(user=user, name="load")
        result.upload.append({"username": user.username, "key": raw, "knowledge_base_id": base.id})
    for i in range(mix.api):
        user = users.create_user(username=f"load-{run}-api-{i}", plan=free)
        _key, raw = api_key_create(user=user, name="load")
        result.api.append({"username": user.username, "key": raw})
    result.limits = {
        "chat": _plan_limits(enterprise),
        "upload": _plan_limits(enterprise),
        "api": _plan_limits(free),
    }
    return result


def replies_unfinished(*, run: str) -> list[dict]:
    """Replies of this run's users still pending or streaming: lost, once the load stopped
    and the drain time has passed."""
    from conversations.models import Message

    open_replies = Message.objects.filter(
        role=Message.Role.ASSISTANT, conversation__owner__username__startswith=f"load-{run}-"
    ).exclude(status__in=Message.FINISHED)
    return list(open_replies.values("id", "status", "created_at"))


def replies_by_status(*, run: str) -> dict[str, int]:
    from django.db.models import Count

    from conversations.models import Message

    rows = (
        Message.objects.filter(
            role=Message.Role.ASSISTANT, conversation__owner__username__startswith=f"load-{run}-"
        )
        .values("status")
        .annotate(n=Count("id"))
    )
    return {row["status"]: row["n"] for row in rows}


def documents_unfinished(*, run: str) -> list[dict]:
    from knowledge.models import Document

    open_documents = Document.objects.filter(
        knowledge_base__owner__username__startswith=f"load-{run}-"
    ).exclude(status__in=(Document.Status.READY, Document.Status.FAILED))
    return list(open_documents.values("id", "status"))


def wait_finished(*, run: str, timeout: float) -> tuple[list[dict], list[dict]]:
    """Wait up to `timeout` s for every reply and document of the run to end; what is still
    open then (replies, documents)."""
    from django.db import close_old_connections

    deadline = time.monotonic() + timeout
    while True:
        close_old_connections()
        replies, documents = replies_unfinished(run=run), documents_unfinished(run=run)
        if (not replies and not documents) or time.monotonic() > deadline:
            return replies, documents
        time.sleep(1)


def verdict(results: dict, *, unfinished_replies: list, unfinished_documents: list) -> dict:
    """The goals, from the locustfile's results and the database: each a count that must
    be 0 (`problems` lists what broke them)."""
    statuses = results["statuses"]  # "name status" → count
    server_errors = {key: n for key, n in statuses.items() if key.rsplit(" ", 1)[1][0] == "5"}
    replies = results["replies"]
    checks = {
        "5xx responses": sum(server_errors.values()),
        "replies lost (client: no end seen)": replies.get("lost", 0),
        "replies unfinished in the database": len(unfinished_replies),
        "documents unfinished in the database": len(unfinished_documents),
        "429s no configured limit explains": len(results["throttle"]["unexplained"]),
        "other failures": results["other_failures"],
    }
    return {
        "checks": checks,
        "ok": not any(checks.values()),
        "connection resets (keep-alive race, not counted)": results.get("connection_resets", 0),
        "problems": {
            "5xx": server_errors,
            "unexplained 429s": results["throttle"]["unexplained"][:20],
            "unfinished replies": unfinished_replies[:20],
            "unfinished documents": unfinished_documents[:20],
            "failures": results["failure_samples"][:20],
        },
    }


LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def locust_run(
    *,
    url: str,
    seed_path: Path,
    results_path: Path,
    duration: float,
    mix: Mix,
    log_path: Path,
    stop_timeout: float = 60,
    env: dict | None = None,
) -> dict:
    """Locust, headless, for `duration` seconds with every user of `mix` started within the
    first few seconds; users finish the reply or upload they are in before it exits. Returns
    the locustfile's results."""
    import os
    import subprocess
    import sys

    results_path.unlink(missing_ok=True)
    run_env = dict(env or os.environ)
    run_env.update(
        LOAD_SEED=str(seed_path),
        LOAD_RESULTS=str(results_path),
        NO_PROXY="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    users = mix.total()
    args = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "-u",
        str(users),
        "-r",
        str(max(1, users // 3)),
        "-t",
        f"{int(duration)}s",
        "--stop-timeout",
        str(int(stop_timeout)),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    with open(log_path, "ab") as log:
        subprocess.run(
            args, env=run_env, stdout=log, stderr=subprocess.STDOUT, timeout=duration + 240
        )
    if not results_path.exists():
        raise RuntimeError(f"locust wrote no results; see {log_path}")
    return json.loads(results_path.read_text())
