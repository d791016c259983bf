"""The authorisation matrix: every route of the URL conf and every websocket frame type has a
row, tried as the owner of the objects it names, another user, staff and anonymous. Another
user's object answers 404 (as if it did not exist), anonymous 401, staff-only endpoints 403
for everyone else, and a refused request changes nothing in the database.

A route or frame type without a row fails `test_every_route_has_a_row` /
`test_every_websocket_frame_type_has_a_row`: add the row with what each identity gets."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from accounts.services import api_key_create
from conversations.consumers import ChatConsumer
from conversations.models import Conversation, Message
from knowledge.models import Chunk, Document, EvaluationRun, KnowledgeBase
from knowledge.services import evaluation_run_start, evaluation_set_create
from openspark.core.models import Notification, TaskRecord
from tests.factories import UserFactory, plan
from tests.live import purge_task_queues

pytestmark = pytest.mark.django_db

IDENTITIES = ("owner", "other", "staff", "anonymous")
OK = "2xx"
# What each identity gets; OK is any 2xx (a page may also redirect: 302).
OWNED = {"owner": OK, "other": 404, "staff": 404, "anonymous": 401}  # private to its owner
# Staff read (tasks) or manage (knowledge bases, documents, assistants) everyone's.
STAFF_TOO = {"owner": OK, "other": 404, "staff": OK, "anonymous": 401}
OWN_LIST = {"owner": OK, "other": OK, "staff": OK, "anonymous": 401}  # each sees their own
STAFF_ONLY = {"owner": 403, "other": 403, "staff": OK, "anonymous": 401}
PAGE = {"owner": OK, "other": OK, "staff": OK, "anonymous": 302}  # anonymous: to the login
PUBLIC = {"owner": OK, "other": OK, "staff": OK, "anonymous": OK}


@dataclass
class World:
    """The owner's objects, one of each kind an endpoint names."""

    owner: object
    other: object
    staff: object
    ids: dict = field(default_factory=dict)


@dataclass
class Row:
    method: str
    path: str  # formatted with World.ids
    expect: dict
    body: object = None  # a dict (JSON), or a callable → multipart data
    # The owner's objects that must not show up in another user's list (nor in staff's,
    # unless staff see everyone's).
    hidden: tuple[str, ...] = ()
    staff_see_all: bool = False
    live: bool = False  # tried against the live server, not the test client


def _upload(name: str, content: bytes):
    return lambda: {"file": SimpleUploadedFile(name, content)}


CSV = b"question,answer\nWhat is the rule?,rule\n"

# (URL name, method) → the row. Object ids are the owner's (World.ids).
MATRIX: dict[tuple[str, str], Row] = {
    # --- the caller ----------------------------------------------------------------------
    ("me", "GET"): Row("GET", "/api/v1/me/", OWN_LIST),
    ("rate-limit-status", "GET"): Row("GET", "/api/v1/rate-limit/status/", PUBLIC),
    ("rate-limit-stats", "GET"): Row("GET", "/api/v1/rate-limit/stats/", STAFF_ONLY),
    # --- API keys (session only) ---------------------------------------------------------
    ("api-keys", "GET"): Row("GET", "/api/v1/api-keys/", OWN_LIST, hidden=("key",)),
    ("api-keys", "POST"): Row("POST", "/api/v1/api-keys/", OWN_LIST, {"name": "k2"}),
    ("api-key-revoke", "DELETE"): Row("DELETE", "/api/v1/api-keys/{key}/", OWNED),
    # --- tasks ---------------------------------------------------------------------------
    ("task-list", "GET"): Row(
        "GET", "/api/v1/tasks/", OWN_LIST, hidden=("task",), staff_see_all=True
    ),
    ("task-status", "GET"): Row("GET", "/api/v1/tasks/{task}/", STAFF_TOO),
    # --- notifications -------------------------------------------------------------------
    ("notification-list", "GET"): Row(
        "GET", "/api/v1/notifications/", OWN_LIST, hidden=("notification",)
    ),
    ("notification-read-all", "POST"): Row("POST", "/api/v1/notifications/read-all", OWN_LIST),
    ("notification-preferences", "GET"): Row("GET", "/api/v1/notifications/preferences/", OWN_LIST),
    ("notification-preferences", "PATCH"): Row(
        "PATCH", "/api/v1/notifications/preferences/", OWN_LIST, {"email": {"general": False}}
    ),
    ("notification-read", "POST"): Row("POST", "/api/v1/notifications/{notification}/read", OWNED),
    # --- caches (staff) ------------------------------------------------------------------
    ("cache-stats", "GET"): Row("GET", "/api/v1/cache/stats/", STAFF_ONLY),
    ("cache-warm", "POST"): Row(
        "POST", "/api/v1/cache/warm/", STAFF_ONLY, {"user_ids": ["{owner}"]}
    ),
    ("cache-purge", "DELETE"): Row("DELETE", "/api/v1/cache/user_profile/", STAFF_ONLY),
    # --- conversations -------------------------------------------------------------------
    ("conversations", "GET"): Row(
        "GET", "/api/v1/conversations/", OWN_LIST, hidden=("conversation",)
    ),
    ("conversations", "POST"): Row("POST", "/api/v1/conversations/", OWN_LIST, {"title": "t"}),
    ("conversation-detail", "GET"): Row("GET", "/api/v1/conversations/{conversation}/", OWNED),
    ("conversation-detail", "PATCH"): Row(
        "PATCH", "/api/v1/conversations/{conversation}/", OWNED, {"title": "renamed"}
    ),
    ("conversation-detail", "DELETE"): Row(
        "DELETE", "/api/v1/conversations/{conversation}/", OWNED
    ),
    ("conversation-messages", "GET"): Row(
        "GET", "/api/v1/conversations/{conversation}/messages/", OWNED
    ),
    ("conversation-export", "GET"): Row(
        "GET", "/api/v1/conversations/{conversation}/export?format=md", OWNED
    ),
    # --- messages and replies ------------------------------------------------------------
    ("messages", "POST"): Row(
        "POST",
        "/api/v1/messages/",
        OWNED,
        {"conversation_id": "{conversation}", "content": "hello"},
    ),
    ("message-detail", "GET"): Row("GET", "/api/v1/messages/{reply}/", OWNED),
    # An async view: tried against the live server (test_live_rows).
    ("message-stream", "GET"): Row("GET", "/api/v1/messages/{reply}/stream", OWNED, live=True),
    ("message-stop", "POST"): Row("POST", "/api/v1/messages/{running}/stop", OWNED),
    ("message-regenerate", "POST"): Row("POST", "/api/v1/messages/{reply}/regenerate", OWNED),
    ("message-feedback", "POST"): Row(
        "POST", "/api/v1/messages/{reply}/feedback", OWNED, {"rating": 1}
    ),
    # --- knowledge -----------------------------------------------------------------------
    ("knowledge-bases", "GET"): Row(
        "GET", "/api/v1/knowledge/bases/", OWN_LIST, hidden=("knowledge_base",), staff_see_all=True
    ),
    ("knowledge-bases", "POST"): Row("POST", "/api/v1/knowledge/bases/", OWN_LIST, {"name": "n"}),
    ("knowledge-base-detail", "GET"): Row(
        "GET", "/api/v1/knowledge/bases/{knowledge_base}/", STAFF_TOO
    ),
    ("knowledge-base-detail", "PATCH"): Row(
        "PATCH", "/api/v1/knowledge/bases/{knowledge_base}/", STAFF_TOO, {"name": "renamed"}
    ),
    ("knowledge-base-detail", "DELETE"): Row(
        "DELETE", "/api/v1/knowledge/bases/{knowledge_base}/", STAFF_TOO
    ),
    ("knowledge-documents", "GET"): Row(
        "GET", "/api/v1/knowledge/bases/{knowledge_base}/documents/", STAFF_TOO
    ),
    ("knowledge-documents", "POST"): Row(
        "POST",
        "/api/v1/knowledge/bases/{knowledge_base}/documents/",
        STAFF_TOO,
        _upload("new.txt", b"Some new text for the base."),
    ),
    ("knowledge-document-detail", "GET"): Row(
        "GET", "/api/v1/knowledge/documents/{document}/", STAFF_TOO
    ),
    ("knowledge-document-detail", "DELETE"): Row(
        "DELETE", "/api/v1/knowledge/documents/{document}/", STAFF_TOO
    ),
    ("knowledge-document-file", "GET"): Row(
        "GET", "/api/v1/knowledge/documents/{document}/file", STAFF_TOO
    ),
    ("knowledge-document-reindex", "POST"): Row(
        "POST", "/api/v1/knowledge/documents/{document}/reindex", STAFF_TOO
    ),
    ("knowledge-search", "POST"): Row(
        "POST",
        "/api/v1/knowledge/search",
        STAFF_TOO,
        {"query": "rule", "knowledge_base_ids": ["{knowledge_base}"]},
    ),
    ("knowledge-chunk-detail", "GET"): Row("GET", "/api/v1/knowledge/chunks/{chunk}/", STAFF_TOO),
    ("knowledge-evaluation-sets", "GET"): Row(
        "GET", "/api/v1/knowledge/bases/{knowledge_base}/evaluations/sets/", STAFF_ONLY
    ),
    ("knowledge-evaluation-sets", "POST"): Row(
        "POST",
        "/api/v1/knowledge/bases/{knowledge_base}/evaluations/sets/",
        STAFF_ONLY,
        _upload("q.csv", CSV),
    ),
    ("knowledge-evaluation-set-detail", "GET"): Row(
        "GET",
        "/api/v1/knowledge/bases/{knowledge_base}/evaluations/sets/{evaluation_set}/",
        STAFF_ONLY,
    ),
    ("knowledge-evaluation-set-detail", "DELETE"): Row(
        "DELETE",
        "/api/v1/knowledge/bases/{knowledge_base}/evaluations/sets/{evaluation_set}/",
        STAFF_ONLY,
    ),
    ("knowledge-evaluation-runs", "GET"): Row(
        "GET", "/api/v1/knowledge/bases/{knowledge_base}/evaluations/runs/", STAFF_ONLY
    ),
    ("knowledge-evaluation-runs", "POST"): Row(
        "POST",
        "/api/v1/knowledge/bases/{knowledge_base}/evaluations/runs/",
        STAFF_ONLY,
        {"evaluation_set_id": "{evaluation_set}"},
    ),
    ("knowledge-evaluation-run-detail", "GET"): Row(
        "GET",
        "/api/v1/knowledge/bases/{knowledge_base}/evaluations/runs/{evaluation_run}/",
        STAFF_ONLY,
    ),
    # --- assistants ----------------------------------------------------------------------
    ("assistants", "GET"): Row(
        "GET", "/api/v1/assistants/", OWN_LIST, hidden=("assistant",), staff_see_all=True
    ),
    ("assistants", "POST"): Row(
        "POST",
        "/api/v1/assistants/",
        {"owner": OK, "other": 403, "staff": OK, "anonymous": 401},  # the owner is on pro
        {"name": "Helper"},
    ),
    ("assistant-options", "GET"): Row("GET", "/api/v1/assistants/options/", OWN_LIST),
    ("assistant-detail", "GET"): Row("GET", "/api/v1/assistants/{assistant}/", STAFF_TOO),
    ("assistant-detail", "PATCH"): Row(
        "PATCH", "/api/v1/assistants/{assistant}/", STAFF_TOO, {"name": "Renamed"}
    ),
    ("assistant-detail", "DELETE"): Row("DELETE", "/api/v1/assistants/{assistant}/", STAFF_TOO),
    # --- outside the API -----------------------------------------------------------------
    ("healthz", "GET"): Row("GET", "/healthz", PUBLIC),
    ("schema", "GET"): Row("GET", "/api/schema/", PUBLIC),
    ("swagger-ui", "GET"): Row("GET", "/api/docs/", PUBLIC),
    ("home", "GET"): Row("GET", "/", PAGE),
    ("knowledge", "GET"): Row("GET", "/knowledge/", PAGE),
    ("assistants", "GET page"): Row("GET", "/assistants/", PAGE),
    ("notifications", "GET page"): Row("GET", "/notifications/", PAGE),
    ("account", "GET"): Row("GET", "/accounts/", PAGE),
}

# Routes whose answer names no object and depends on no identity beyond the above, each with
# the reason it is not a matrix row (still listed, so a new route is a decision).
NOT_OBJECT_ROUTES = {
    "readyz": "dependency report, no identity (tests/core/test_health.py)",
    "metrics": "Prometheus scrape, token-guarded (tests/ops)",
    "set_language": "language cookie, no object",
    "login": "sign-in form (tests/accounts/test_pages.py)",
    "logout": "ends the caller's own session",
    "signup": "sign-up form (tests/accounts/test_signup.py)",
    "verify-sent": "static page after sign-up",
    "verify-resend": "resends the caller's own verification mail",
    "verify": "token in the URL is the credential (tests/accounts/test_signup.py)",
}
# Names shared by an API route and a page route: the page's row carries " page".
SHARED_NAMES = {"assistants", "notifications"}


def _routes():
    """(URL name, view) for every route of the URL conf outside the admin."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if str(pattern.pattern).startswith("admin/"):
                    continue
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern.name, pattern.callback

    return list(walk(get_resolver().url_patterns))


def _methods(callback) -> set[str]:
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if view_class is None:
        return {"GET"}  # function views: pages and the reply stream answer GET only
    return {
        method.upper()
        for method in ("get", "post", "put", "patch", "delete")
        if hasattr(view_class, method)
    }


def _row_keys_of_routes() -> set[tuple[str, str]]:
    keys = set()
    for route, name, callback in _routes():
        if name in NOT_OBJECT_ROUTES:
            continue
        page = not route.startswith("api/")
        for method in _methods(callback):
            suffix = " page" if page and name in SHARED_NAMES else ""
            keys.add((name, f"{method}{suffix}"))
    return keys


def test_every_route_has_a_row():
    routes = _row_keys_of_routes()
    assert routes - set(MATRIX) == set(), "routes without a row in MATRIX"
    assert set(MATRIX) - routes == set(), "rows for routes that no longer exist"


# --- the world and the identities ---------------------------------------------------------


@pytest.fixture
def world(db, milvus_lite) -> World:
    return _world()


def _world() -> World:
    owner, other = UserFactory(plan=plan("pro")), UserFactory()  # pro: creates assistants
    staff = UserFactory(is_staff=True, is_superuser=True)
    conversation = Conversation.objects.create(owner=owner, title="mine")
    question = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content="What is the rule?"
    )
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        reply_to=question,
        content="The rule is this.",
        status=Message.Status.COMPLETED,
    )
    # In a conversation of its own: a running reply holds back sending to its conversation.
    busy = Conversation.objects.create(owner=owner, title="busy")
    running = Message.objects.create(
        conversation=busy,
        role=Message.Role.ASSISTANT,
        reply_to=Message.objects.create(conversation=busy, role=Message.Role.USER, content="?"),
        status=Message.Status.STREAMING,
    )
    base = KnowledgeBase.objects.create(owner=owner, name="mine")
    document = Document.objects.create(
        knowledge_base=base,
        uploaded_by=owner,
        file=SimpleUploadedFile("rule.txt", b"The rule is this."),
        title="rule.txt",
        file_type="txt",
        sha256="0" * 64,
        status=Document.Status.READY,
        chunk_count=1,
    )
    chunk = Chunk.objects.create(
        document=document, knowledge_base=base, ordinal=0, text="The rule is this."
    )
    evaluation_set = evaluation_set_create(
        knowledge_base=base, user=staff, upload=SimpleUploadedFile("q.csv", CSV)
    )
    evaluation_run, _task_id = evaluation_run_start(evaluation_set=evaluation_set, user=staff)
    EvaluationRun.objects.filter(pk=evaluation_run.pk).update(status=EvaluationRun.Status.COMPLETED)
    key, _raw = api_key_create(user=owner, name="mine")
    notification = Notification.objects.create(user=owner, title="mine")
    task = TaskRecord.objects.create(task_id="owner-task-1", name="vectorize_document", user=owner)
    from assistants.models import Assistant

    assistant = Assistant.objects.create(owner=owner, name="mine")
    return World(
        owner=owner,
        other=other,
        staff=staff,
        ids={
            "owner": owner.id,
            "conversation": conversation.id,
            "reply": reply.id,
            "running": running.id,
            "knowledge_base": base.id,
            "document": document.id,
            "chunk": chunk.id,
            "evaluation_set": evaluation_set.id,
            "evaluation_run": evaluation_run.id,
            "key": key.id,
            "notification": notification.id,
            "task": task.task_id,
            "assistant": assistant.id,
        },
    )


def _client(world: World, identity: str) -> APIClient:
    client = APIClient()
    if identity != "anonymous":
        # A real session through the middleware, as the browser has (API keys need one).
        client.force_login(getattr(world, identity))
    return client


def _fill(value, ids: dict):
    if isinstance(value, str):
        text = value.format(**ids)
        return int(text) if value.startswith("{") and text.isdigit() else text
    if isinstance(value, list):
        return [_fill(item, ids) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, ids) for key, item in value.items()}
    return value


# Tables a request may touch by itself whatever it asks (sessions on login, the limiter's
# alerts, Celery's results): not the state a refused request must leave alone.
UNWATCHED = {"sessions.session", "throttling.alert", "django_celery_results.taskresult"}


def _database_state() -> dict:
    state = {}
    for model in apps.get_models():
        label = model._meta.label_lower
        if label in UNWATCHED or model._meta.app_label in ("admin", "contenttypes", "auth"):
            continue
        if label == "accounts.user":
            state[label] = list(model.objects.order_by("pk").values("pk", "is_active", "plan_id"))
            continue
        state[label] = [repr(row) for row in model.objects.order_by("pk").values()]
    return state


def _request(client: APIClient, row: Row, ids: dict):
    path = row.path.format(**ids)
    if callable(row.body):
        return getattr(client, row.method.lower())(path, row.body(), format="multipart")
    if row.body is None:
        return getattr(client, row.method.lower())(path)
    return getattr(client, row.method.lower())(path, _fill(row.body, ids), format="json")


def _matches(status: int, expected) -> bool:
    if expected == OK:
        return 200 <= status < 300
    return status == expected


@pytest.mark.parametrize("identity", IDENTITIES)
@pytest.mark.parametrize(
    "key",
    [key for key, row in MATRIX.items() if not row.live],
    ids=lambda key: f"{key[1]} {key[0]}",
)
def test_matrix_row(world, identity, key):
    row = MATRIX[key]
    expected = row.expect[identity]
    client = _client(world, identity)
    before = _database_state()
    response = _request(client, row, world.ids)
    content = b"".join(response.streaming_content) if response.streaming else response.content
    assert _matches(response.status_code, expected), (
        f"{row.method} {row.path} as {identity}: {response.status_code}, expected {expected}: "
        f"{content[:300]!r}"
    )
    if response.status_code >= 400 and row.path.startswith("/api/v1/"):
        error = json.loads(content)["error"]
        assert error["code"] and error["message"], error
    if response.status_code >= 400 or (expected == OK and row.method == "GET"):
        # Refused, or a read: the database is as it was.
        assert _database_state() == before, f"{row.method} {row.path} as {identity} changed state"
    hides = identity == "other" or (identity == "staff" and not row.staff_see_all)
    if hides and row.hidden and response.status_code == 200:
        listed = {item.get("id", item.get("task_id")) for item in response.json()["results"]}
        for name in row.hidden:
            assert world.ids[name] not in listed, f"{identity} sees the owner's {name}"


# --- the live server: the reply stream and the websocket frames ---------------------------

# Frame type → the frame (owner's ids) and what the owner gets; another user and staff get an
# `error` event `not_found` and the database stays as it was; an anonymous socket is closed
# with 4401 before any frame. (Leaving names no object: everyone gets `conversation.left`.)
FRAMES = {
    "message.send": ({"conversation_id": "{conversation}", "content": "hello"}, "message.created"),
    "message.stop": ({"message_id": "{running}"}, None),  # the reply's end comes via the group
    "conversation.join": ({"conversation_id": "{conversation}"}, "conversation.joined"),
    "conversation.leave": ({"conversation_id": "{conversation}"}, "conversation.left"),
}


def test_every_websocket_frame_type_has_a_row():
    # The consumer's frame table is the one list of what a socket can ask.
    assert set(ChatConsumer._routes) == set(FRAMES)


@pytest.fixture
def live_world(asgi_server, transactional_db, milvus_lite):
    yield asgi_server, _world()
    purge_task_queues()  # the owner's sends queued replies no worker here will run


def _session_cookie(user) -> str:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def test_live_rows(live_world):
    """The reply stream (an async view) and every websocket frame type, as each identity,
    against the running server."""
    import httpx
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server, world = live_world
    cookies = {
        identity: _session_cookie(getattr(world, identity))
        for identity in IDENTITIES
        if identity != "anonymous"
    }
    row = MATRIX["message-stream", "GET"]
    for identity in IDENTITIES:
        headers = {"Cookie": cookies[identity]} if identity in cookies else {}
        before = _database_state()
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            response = client.get(row.path.format(**world.ids))
        assert _matches(response.status_code, row.expect[identity]), (identity, response.text)
        if identity == "owner":
            assert "event: done" in response.text and "The rule is this." in response.text
        else:
            assert response.json()["error"]["code"] in ("not_found", "not_authenticated")
        assert _database_state() == before, f"the stream as {identity} changed state"

    url = server.url.replace("http://", "ws://") + "/ws/chat/"

    def socket(identity):
        headers = {"Cookie": cookies[identity]} if identity in cookies else {}
        return connect(url, origin=server.url, additional_headers=headers, proxy=None)

    with socket("anonymous") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=15)
        assert closed.value.rcvd.code == 4401

    for identity in ("other", "staff", "owner"):
        with socket(identity) as ws:
            assert json.loads(ws.recv(timeout=15))["type"] == "ready"
            for frame_type, (frame, owner_gets) in FRAMES.items():
                before = _database_state()
                ws.send(json.dumps({"type": frame_type, **_fill(frame, world.ids)}))
                if identity == "owner" and owner_gets is None:
                    # Stopping answers through the conversation's group; its effect is here.
                    deadline = time.monotonic() + 15
                    while Message.objects.get(pk=world.ids["running"]).status == "streaming":
                        assert time.monotonic() < deadline, "the owner's stop did nothing"
                        time.sleep(0.1)
                    continue
                event = json.loads(ws.recv(timeout=15))
                if identity == "owner" or frame_type == "conversation.leave":
                    # A joined owner's socket also carries the running reply's events, which may
                    # come before the frame's answer.
                    while owner_gets and event["type"] != owner_gets:
                        assert event["type"].startswith("reply."), (frame_type, event)
                        event = json.loads(ws.recv(timeout=15))
                    continue
                assert event["type"] == "error" and event["code"] == "not_found", (
                    identity,
                    frame_type,
                    event,
                )
                assert _database_state() == before, f"{frame_type} as {identity} changed state"
