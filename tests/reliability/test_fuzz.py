"""Schemathesis against the served OpenAPI schema of a real uvicorn: every operation, as
anonymous, as a free user with an API key and as a session user (cookie + CSRF), then the
stateful links (create → read → update → delete). Zero 5xx; every status code documented,
every body valid against the schema, every error in the one error shape (429s included).

The suite runs a bounded number of examples (OPENSPARK_FUZZ_EXAMPLES, default below);
`make fuzz` runs many more. Results and the reproduce commands: docs/reliability.md."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import hypothesis
import pytest
import schemathesis
from django.conf import settings
from django.test import Client
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import UserFactory
from tests.live import purge_task_queues

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Examples per operation per identity (positive and negative data together), and steps of
# the stateful run per identity. The suite's numbers keep this file near a minute per pass.
EXAMPLES = int(os.environ.get("OPENSPARK_FUZZ_EXAMPLES", "3"))
STATEFUL_EXAMPLES = int(os.environ.get("OPENSPARK_FUZZ_STATEFUL_EXAMPLES", "3"))
# (identity, operation, status) → responses seen; a table of them is written to
# OPENSPARK_FUZZ_REPORT when set (`make fuzz`), as in docs/reliability.md.
SEEN: Counter = Counter()
# Room for a whole run per minute: the fuzz users' plan and the IP layer (anonymous calls).
FUZZ_LIMIT = 1_000_000


@dataclass
class Identity:
    name: str
    headers: dict[str, str]


def error_shape(ctx, response, case) -> bool | None:
    """Every 4xx/5xx answer is `{"error": {"code", "message", "details"}}`; a 429 says when
    to come back."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert set(body) == {"error"}, f"not the error shape: {body!r}"
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str) and error["message"], body
    assert isinstance(error.get("details"), dict), body
    if response.status_code == 429:
        headers = {name.lower() for name in response.headers}
        assert "retry-after" in headers, "a 429 without Retry-After"
    return None


METHODS = ("get", "post", "put", "patch", "delete")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_shape,
]

HYPOTHESIS = dict(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    print_blob=True,
)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("OPENSPARK_FUZZ_REPORT")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(report_table(SEEN))


def report_table(seen: Counter) -> str:
    """Per identity: operations tried, responses, and how many of each status code."""
    lines = [
        "| identity | operations | responses | status codes (count) | 5xx |",
        "|---|---|---|---|---|",
    ]
    for identity in sorted({key[0] for key in seen}):
        mine = {key: count for key, count in seen.items() if key[0] == identity}
        codes = Counter()
        for (_identity, _operation, status), count in mine.items():
            codes[status] += count
        listed = ", ".join(f"{status}: {count}" for status, count in sorted(codes.items()))
        errors = sum(count for status, count in codes.items() if status >= 500)
        lines.append(
            f"| {identity} | {len({key[1] for key in mine})} | {sum(mine.values())} "
            f"| {listed} | {errors} |"
        )
    return "\n".join(lines) + "\n"


@pytest.fixture
def limits_restored(asgi_server, transactional_db):
    """Limits this test changes are put back (the seeded free plan, no layer overrides) and
    given the time the live server takes to reload them, so the next test gets the seeds."""
    from throttling.models import LayerPolicy, Plan
    from throttling.plans import DEFAULT_PLANS, ENDPOINT_LIMITS, KNOWLEDGE_QUOTAS

    yield
    rpm, tokens = next(
        (rpm, tokens) for tier, _n, rpm, tokens, _d in DEFAULT_PLANS if tier == "free"
    )
    free = Plan.objects.get(tier="free")
    for name, value in {
        "requests_per_minute": rpm,
        "monthly_token_quota": tokens,
        **ENDPOINT_LIMITS["free"],
        **KNOWLEDGE_QUOTAS["free"],
    }.items():
        setattr(free, name, value)
    free.save()
    LayerPolicy.objects.all().delete()
    time.sleep(settings.THROTTLE_CONFIG_TTL + 0.5)


@pytest.fixture
def fuzz_server(asgi_server, limits_restored):
    """The live server with limits that let the whole run through: the free plan's numbers
    and the IP layer raised, quotas off (the limiter is still in the path of every request)."""
    from throttling.models import LayerPolicy, Plan

    Plan.objects.filter(tier="free").update(
        requests_per_minute=FUZZ_LIMIT,
        conversations_per_minute=FUZZ_LIMIT,
        messages_per_minute=FUZZ_LIMIT,
        knowledge_per_minute=FUZZ_LIMIT,
        polling_per_minute=FUZZ_LIMIT,
        monthly_token_quota=0,
        storage_quota_bytes=0,
        document_quota=0,
        knowledge_base_quota=0,
    )
    # .update() sends no signal: save one row so every process reloads its limiter snapshot.
    Plan.objects.get(tier="free").save()
    LayerPolicy.objects.update_or_create(layer="ip", defaults={"limit": FUZZ_LIMIT})
    LayerPolicy.objects.update_or_create(layer="global", defaults={"limit": FUZZ_LIMIT})
    time.sleep(settings.THROTTLE_CONFIG_TTL + 0.5)  # the live server reloads its limits
    yield asgi_server
    purge_task_queues()  # replies and ingests queued here: no worker of this test runs them


def _identities(base_url: str) -> list[Identity]:
    from accounts.services import api_key_create

    key_user = UserFactory()
    _key, raw_key = api_key_create(user=key_user, name="fuzz")
    return [
        Identity("anonymous", {}),
        Identity("api key (free plan)", {"Authorization": f"Bearer {raw_key}"}),
        _session_identity("session", UserFactory(), base_url),
    ]


def _session_identity(name: str, user, base_url: str) -> Identity:
    """A browser's session cookie, with the CSRF cookie and header the server hands out."""
    client = Client()
    client.force_login(user)
    cookie = settings.SESSION_COOKIE_NAME
    session = f"{cookie}={client.cookies[cookie].value}"
    with httpx.Client(base_url=base_url, headers={"Cookie": session}, timeout=30) as browser:
        csrf = browser.get("/").cookies["csrftoken"]
    return Identity(name, {"Cookie": f"{session}; csrftoken={csrf}", "X-CSRFToken": csrf})


def _load_schema(base_url: str):
    schema = schemathesis.openapi.from_url(f"{base_url}/api/schema/?format=json")
    return schema


def _operations(schema):
    # OPENSPARK_FUZZ_ONLY narrows a long run to operations whose label contains it.
    only = os.environ.get("OPENSPARK_FUZZ_ONLY", "")
    return [result.ok() for result in schema.get_all_operations() if only in result.ok().label]


def _fuzz_operation(operation, identity: Identity, base_url: str, examples: int) -> None:
    positive = operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE)
    negative = operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)

    @hypothesis.given(case=st.one_of(positive, negative))
    @hypothesis.settings(max_examples=examples, **HYPOTHESIS)
    def run(case):
        response = case.call(base_url=base_url, headers=identity.headers, timeout=120)
        SEEN[identity.name, operation.label, response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=identity.headers)

    run()


def test_every_operation_as_every_identity(fuzz_server):
    base_url = fuzz_server.url
    schema = _load_schema(base_url)
    operations = _operations(schema)
    # The whole API, not a schema that failed to load.
    assert len(operations) > 40 or os.environ.get("OPENSPARK_FUZZ_ONLY")
    failures = []
    for identity in _identities(base_url):
        for operation in operations:
            try:
                _fuzz_operation(operation, identity, base_url, EXAMPLES)
            except (Exception, BaseExceptionGroup) as exc:  # collected, reported together below
                failures.append(f"--- {identity.name}: {operation.label}\n{_describe(exc)}")
    assert not failures, f"{len(failures)} failing:\n" + "\n".join(failures)


def _state_machine(schema, identity: Identity, base_url: str):
    class Machine(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"base_url": base_url, "headers": identity.headers, "timeout": 120}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            SEEN[f"{identity.name}, stateful", case.operation.label, response.status_code] += 1
            case.validate_response(response, checks=CHECKS, headers=identity.headers)

    return Machine


def test_stateful_links_as_signed_in_users(fuzz_server):
    """Create → read → update → delete along the links Schemathesis infers from the schema
    (ids in a creating response feed the operations that take them)."""
    base_url = fuzz_server.url
    schema = _load_schema(base_url)
    failures = []
    for identity in _identities(base_url)[1:]:
        try:
            _state_machine(schema, identity, base_url).run(
                settings=hypothesis.settings(
                    max_examples=STATEFUL_EXAMPLES, stateful_step_count=10, **HYPOTHESIS
                )
            )
        except (Exception, BaseExceptionGroup) as exc:  # collected, reported together below
            failures.append(f"--- {identity.name}: stateful\n{_describe(exc)}")
    assert not failures, f"{len(failures)} failing:\n" + "\n".join(failures)


def _describe(exc: BaseException) -> str:
    """Every failure Hypothesis found, not only the group's title."""
    if isinstance(exc, BaseExceptionGroup):
        return "\n".join([str(exc), *(_describe(inner) for inner in exc.exceptions)])
    return str(exc)


def test_the_limiter_answers_documented_429s(asgi_server, limits_restored):
    """Past the limit, operations answer 429 as the schema says: documented, in the error
    shape, with Retry-After. (The fuzz runs above are given room so that they are not all
    429s; here the limits are tight on purpose.)"""
    from throttling.models import LayerPolicy, Plan

    base_url = asgi_server.url
    schema = _load_schema(base_url)
    identities = _identities(base_url)[:2]  # anonymous (the IP layer), an API key (free plan)
    Plan.objects.filter(tier="free").update(conversations_per_minute=5)
    Plan.objects.get(tier="free").save()  # a signal: every process reloads its snapshot
    LayerPolicy.objects.update_or_create(layer="ip", defaults={"limit": 5})
    time.sleep(settings.THROTTLE_CONFIG_TTL + 0.5)  # the live server reloads its limits
    operation = schema["/api/v1/conversations/"]["GET"]
    for identity in identities:
        statuses = []
        while 429 not in statuses:
            assert len(statuses) < 20, (identity.name, statuses)
            case = operation.Case()
            response = case.call(base_url=base_url, headers=identity.headers, timeout=120)
            case.validate_response(response, checks=CHECKS, headers=identity.headers)
            statuses.append(response.status_code)
        assert response.json()["error"]["code"] == "rate_limited"
        assert set(statuses[:-1]) == {401 if identity.name == "anonymous" else 200}, statuses


def test_methods_the_schema_does_not_list_answer_405(fuzz_server):
    """Each path answers the methods its schema does not list with 405 in the error shape,
    naming the ones it does in `Allow`. (As staff with a session: permissions are checked
    before the method, so a caller refused the path gets 403 whatever the method.)"""
    base_url = fuzz_server.url
    schema = httpx.get(f"{base_url}/api/schema/?format=json", timeout=30).json()
    identity = _session_identity("staff", UserFactory(is_staff=True), base_url)
    tried = 0
    with httpx.Client(base_url=base_url, headers=identity.headers, timeout=120) as client:
        for template, operations in schema["paths"].items():
            path = re.sub(r"\{\w+\}", "1", template)
            listed = {method.upper() for method in operations if method in METHODS}
            for method in sorted({m.upper() for m in METHODS} - listed):
                response = client.request(method, path)
                tried += 1
                assert response.status_code == 405, (method, path, response.text[:200])
                assert response.json()["error"]["code"] == "method_not_allowed", response.text
                allowed = {name.strip() for name in response.headers["Allow"].split(",")}
                assert listed <= allowed, (method, path, allowed)
    assert tried > 100
