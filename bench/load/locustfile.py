"""The load scenario (docs/reliability.md, "Load"): three kinds of users against a running
stack, each playing a user `bench/load/scenario.py` seeded.

- `ChatUser` (browser session): browses its conversations and their history over HTTP and
  chats over the websocket `/ws/chat/`, reading every reply to its end (`reply.done` with
  `completed` / `stopped`, or `reply.error`); one reply in seven is stopped after its first
  delta. A reply whose end it never sees, even through the REST fallback after a dropped
  socket, is **lost**.
- `UploadUser` (API key): uploads a small text document to its knowledge base, follows it to
  `ready` / `failed`, searches the base, and deletes its oldest documents (so a soak stays in
  a steady state).
- `ApiConsumer` (API key, the free plan with low limits): asks faster than its plan allows.
  Every 429 anyone gets is checked: the layer it names must be configured for that user with
  the limit it states, and the user must have been admitted at least that many requests of
  the layer in the minute before (a token bucket refuses no earlier; docs/throttling.md).

Run by `bench/load/run.py` (or the suite's short run), which sets LOAD_SEED (the seed file)
and LOAD_RESULTS (where the counts are written when the run ends), and the user counts.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
import uuid
from collections import Counter, deque
from pathlib import Path

import websocket
from locust import HttpUser, between, constant_throughput, events, task

SEED = json.loads(Path(os.environ["LOAD_SEED"]).read_text())
MIX = SEED["mix"]
RESULTS_PATH = Path(os.environ["LOAD_RESULTS"])
REPLY_TIMEOUT = float(os.environ.get("LOAD_REPLY_TIMEOUT", "90"))
DOCUMENT_TIMEOUT = float(os.environ.get("LOAD_DOCUMENT_TIMEOUT", "180"))
STOP_SHARE = 1 / 7
WINDOW = 60.0  # every layer's window (seconds)
FINISHED = ("completed", "failed", "stopped")

STATUSES: Counter = Counter()  # "<request name> <status>" → count
REPLIES: Counter = Counter()  # completed / failed / stopped / lost
DOCUMENTS: Counter = Counter()  # ready / failed / lost
EVENTS: Counter = Counter()  # socket drops, reconnects, REST fallbacks
THROTTLE = {"explained": Counter(), "unexplained": []}
FAILURES: list[dict] = []
_claims = {kind: itertools.count() for kind in ("chat", "upload", "api")}
_lock = threading.Lock()


def _claim(kind: str) -> dict:
    users = SEED[kind]
    return users[next(_claims[kind]) % len(users)]


def _failure(kind: str, **details) -> None:
    with _lock:
        if len(FAILURES) < 200:
            FAILURES.append({"kind": kind, **details})


class Ledger:
    """What one user was admitted, per endpoint group, with the time each answer arrived:
    enough to tell whether a 429 is one its limits explain."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.admitted: deque[tuple[float, str | None]] = deque()

    def admit(self, group: str | None) -> None:
        now = time.monotonic()
        self.admitted.append((now, group))
        while self.admitted and self.admitted[0][0] < now - 2 * WINDOW:
            self.admitted.popleft()

    def explain(self, response, *, group: str | None, sent: float, name: str) -> bool:
        """Whether the 429 is one a configured limit says: the named layer is configured for
        this user at the stated limit, and at least `limit` requests of that layer were
        admitted in the window before it was sent (a token bucket with `limit` per window
        cannot refuse earlier: its level is at most what it admitted in the last window)."""
        try:
            details = response.json()["error"]["details"]
            layer, limit = details["layer"], int(details["limit"])
        except (ValueError, KeyError, TypeError):
            layer, limit = None, None
        configured = SEED["limits"][self.kind].get(layer or "")
        if layer == "plan":
            seen = sum(1 for at, _g in self.admitted if at >= sent - WINDOW)
        elif layer and layer.startswith("endpoint:"):
            wanted = layer.removeprefix("endpoint:")
            seen = sum(1 for at, g in self.admitted if g == wanted and at >= sent - WINDOW)
        else:
            seen = 0
        policy = response.headers.get("RateLimit-Policy", "")
        ok = (
            configured is not None
            and limit == configured
            and seen >= limit
            and f'"{layer}";q={limit};' in policy
        )
        with _lock:
            if ok:
                THROTTLE["explained"][layer] += 1
            elif len(THROTTLE["unexplained"]) < 200:
                THROTTLE["unexplained"].append(
                    {
                        "user": self.kind,
                        "request": name,
                        "layer": layer,
                        "limit": limit,
                        "configured": configured,
                        "admitted_in_window": seen,
                        "policy": policy,
                    }
                )
        return ok


class ApiMixin:
    """HTTP requests with the accounting every user shares."""

    kind = ""

    def call(self, method: str, path: str, *, name: str, group: str | None, expect=(200,), **kw):
        sent = time.monotonic()
        with self.client.request(method, path, name=name, catch_response=True, **kw) as response:
            code = response.status_code
            with _lock:
                STATUSES[f"{name} {code}"] += 1
            if code == 429:
                if self.ledger.explain(response, group=group, sent=sent, name=name):
                    response.success()  # the limit working as configured
                else:
                    response.failure("429 that no configured limit explains")
                return None
            if code:  # the request reached the server: every layer counted it
                self.ledger.admit(group)
            if code in expect:
                response.success()
                return response
            response.failure(f"HTTP {code}")
            _failure(
                self.kind,
                request=name,
                status=code,
                body=(response.text or "")[:300],
                error=repr(response.error) if response.error else "",
            )
            return None


class ChatUser(ApiMixin, HttpUser):
    """A person in the browser: reads conversations, chats over the websocket."""

    fixed_count = MIX["chat"]
    kind = "chat"

    def wait_time(self) -> float:
        """1 to 3 s, reading the socket meanwhile: a page reads its socket all the time, and so
        answers uvicorn's pings (every 20 s, 20 s to answer); a user that only read it while
        chatting had its socket closed after a long stretch of browsing."""
        deadline = time.perf_counter() + random.uniform(1, 3)
        while self.ws is not None and (left := deadline - time.perf_counter()) > 0:
            try:
                self.ws.settimeout(left)
                self.ws.recv()  # late events of ended replies, notifications: not needed
            except websocket.WebSocketTimeoutException:
                break
            except (websocket.WebSocketException, OSError):
                self.ws = None
        return max(0.0, deadline - time.perf_counter())

    def on_start(self) -> None:
        me = _claim("chat")
        self.ledger = Ledger(self.kind)
        self.cookie = me["cookie"]
        self.client.headers["Cookie"] = self.cookie
        self.conversation: int | None = None
        self.turns = 0
        self.ws = None

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()

    def _socket(self):
        if self.ws is None:
            started = time.perf_counter()
            url = self.host.replace("http://", "ws://") + "/ws/chat/"
            try:
                self.ws = websocket.create_connection(
                    url, header=[f"Cookie: {self.cookie}"], origin=self.host, timeout=30
                )
                ready = json.loads(self.ws.recv())
                if ready.get("type") != "ready":
                    raise websocket.WebSocketException(f"first event {ready}")
            except (websocket.WebSocketException, OSError) as exc:
                self.ws = None
                self._ws_event("connect", started, exc)
                raise
            self._ws_event("connect", started, None)
        return self.ws

    def _ws_event(self, name: str, started: float, exc: Exception | None, length: int = 0):
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )

    @task(3)
    def browse(self) -> None:
        page = self.call(
            "GET", "/api/v1/conversations/", name="GET conversations/", group="conversations"
        )
        results = page.json()["results"] if page is not None else []
        if results:
            chosen = random.choice(results)["id"]
            self.call(
                "GET",
                f"/api/v1/conversations/{chosen}/messages/",
                name="GET conversations/{id}/messages/",
                group="polling",
            )

    @task(1)
    def chat_page(self) -> None:
        self.call("GET", "/", name="GET / (chat page)", group=None)

    @task(4)
    def chat(self) -> None:
        try:
            ws = self._socket()
        except (websocket.WebSocketException, OSError):
            return
        if self.turns >= 6:  # a fresh conversation now and then: histories stay short
            self.conversation, self.turns = None, 0
        client_id = uuid.uuid4().hex
        tokens = random.randint(*MIX["reply_tokens"])
        frame = {
            "type": "message.send",
            "content": f"[[tokens:{tokens}]] question {client_id}",
            "client_id": client_id,
        }
        if self.conversation:
            frame["conversation_id"] = self.conversation
        stop = random.random() < STOP_SHARE
        started = time.perf_counter()
        deadline = started + REPLY_TIMEOUT
        reply_id, first, outcome, text = None, None, None, 0
        try:
            ws.send(json.dumps(frame))
            while outcome is None:
                ws.settimeout(max(0.1, deadline - time.perf_counter()))
                event = json.loads(ws.recv())
                kind = event.get("type")
                if kind == "message.created" and event.get("client_id") == client_id:
                    reply_id = event["reply"]["id"]
                    self.conversation = event["conversation_id"]
                elif kind == "reply.delta" and event.get("message_id") == reply_id:
                    text += len(event.get("delta") or "")
                    if first is None:
                        first = time.perf_counter()
                        self._ws_event("send → first delta", started, None)
                        if stop:
                            ws.send(json.dumps({"type": "message.stop", "message_id": reply_id}))
                elif kind == "reply.done" and event["message"]["id"] == reply_id:
                    outcome = event["message"]["status"]
                elif kind == "reply.error" and event.get("message_id") == reply_id:
                    outcome = "failed"
                elif kind == "rate_limited":
                    # Chat users are far below their limits: a refusal here is unexplained.
                    with _lock:
                        THROTTLE["unexplained"].append({"user": "chat", "request": "ws", **event})
                    outcome = "refused"
                elif kind == "error" and (reply_id is None or event.get("client_id") == client_id):
                    _failure("chat", request="ws message.send", event=event)
                    outcome = "refused"
        except websocket.WebSocketTimeoutException:
            outcome = None
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            # The socket dropped: the page falls back to REST for the reply's end.
            with _lock:
                EVENTS["socket dropped mid-reply"] += 1
            _failure("chat", request="ws", error=repr(exc))
            self.ws = None
            outcome = self._reply_by_rest(reply_id, deadline) if reply_id else "refused"
        if outcome == "refused":
            return
        self.turns += 1
        if outcome is None:
            outcome = "lost"
            _failure(
                "chat",
                request="ws reply",
                reply_id=reply_id,
                stop_sent=stop,
                first_delta=first is not None,
            )
            if self.ws is not None:
                self.ws.close()  # a socket that went quiet is not trusted again
                self.ws = None
        with _lock:
            REPLIES[outcome] += 1
        self._ws_event(
            f"send → end ({outcome})",
            started,
            None if outcome != "lost" else RuntimeError("reply lost"),
            text,
        )

    def _reply_by_rest(self, reply_id: int, deadline: float) -> str | None:
        with _lock:
            EVENTS["REST fallback"] += 1
        while time.perf_counter() < deadline:
            response = self.call(
                "GET", f"/api/v1/messages/{reply_id}/", name="GET messages/{id}/", group="polling"
            )
            if response is not None and response.json()["status"] in FINISHED:
                return response.json()["status"]
            time.sleep(1)
        return None


DOCUMENT_TEXT = (
    "OpenSpark load test note {n}.\n\n"
    "The quarterly report covers revenue, customer support response times and the roadmap. "
    "Support answered {a} tickets within four hours; the backlog fell to {b} items.\n\n"
    "调查显示客户最关心的是回复速度和答案的准确性。本季度共处理了 {a} 个工单。\n\n"
    "Appendix: the reference number of this note is {n}; keep it for the audit.\n"
)


class UploadUser(ApiMixin, HttpUser):
    """Someone keeping a knowledge base: small uploads, followed to the end, then searched."""

    fixed_count = MIX["upload"]
    wait_time = between(2, 5)
    kind = "upload"
    keep = 4  # documents kept per base; older ones are deleted

    def on_start(self) -> None:
        me = _claim("upload")
        self.ledger = Ledger(self.kind)
        self.base = me["knowledge_base_id"]
        self.client.headers["Authorization"] = f"Bearer {me['key']}"
        self.documents: deque[int] = deque()

    @task
    def upload(self) -> None:
        n = uuid.uuid4().hex
        body = DOCUMENT_TEXT.format(n=n, a=random.randint(100, 999), b=random.randint(1, 99))
        body *= random.randint(1, 4)
        response = self.call(
            "POST",
            f"/api/v1/knowledge/bases/{self.base}/documents/",
            name="POST knowledge/bases/{id}/documents/ (upload)",
            group="knowledge",
            expect=(202,),
            files={"file": (f"note-{n}.txt", body.encode(), "text/plain")},
        )
        if response is None:
            return
        document = response.json()["documents"][0]["id"]
        self.documents.append(document)
        started = time.perf_counter()
        outcome = "lost"
        while time.perf_counter() - started < DOCUMENT_TIMEOUT:
            time.sleep(1)
            status = self.call(
                "GET",
                f"/api/v1/knowledge/documents/{document}/",
                name="GET knowledge/documents/{id}/",
                group="knowledge",
            )
            if status is not None and status.json()["status"] in ("ready", "failed"):
                outcome = status.json()["status"]
                break
        with _lock:
            DOCUMENTS[outcome] += 1
        self.environment.events.request.fire(
            request_type="JOB",
            name=f"upload → {outcome}",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=None if outcome == "ready" else RuntimeError(f"document {outcome}"),
            context={},
        )
        if outcome == "ready":
            self.call(
                "POST",
                "/api/v1/knowledge/search",
                name="POST knowledge/search",
                group="knowledge",
                json={"query": "support tickets backlog", "knowledge_base_ids": [self.base]},
            )
        while len(self.documents) > self.keep:
            old = self.documents.popleft()
            self.call(
                "DELETE",
                f"/api/v1/knowledge/documents/{old}/",
                name="DELETE knowledge/documents/{id}/",
                group="knowledge",
                expect=(204,),
            )


class ApiConsumer(ApiMixin, HttpUser):
    """An integration on the free plan asking faster than the plan allows."""

    fixed_count = MIX["api"]
    wait_time = constant_throughput(MIX["api_rate"])
    kind = "api"

    def on_start(self) -> None:
        me = _claim("api")
        self.ledger = Ledger(self.kind)
        self.client.headers["Authorization"] = f"Bearer {me['key']}"
        self.replies: deque[int] = deque(maxlen=5)
        self.conversation: int | None = None
        self.conversation_idle = False

    @task(2)
    def me(self) -> None:
        self.call("GET", "/api/v1/me/", name="GET me/", group=None)

    @task(2)
    def conversations(self) -> None:
        self.call("GET", "/api/v1/conversations/", name="GET conversations/", group="conversations")

    @task(1)
    def send(self) -> None:
        body = {"content": f"[[tokens:{random.randint(*MIX['reply_tokens'])}]] api question"}
        # A conversation takes one question at a time (409 while a reply runs): continue it
        # only once its last reply was seen finished, as a well-behaved client would.
        if self.conversation and self.conversation_idle:
            body["conversation_id"] = self.conversation
        response = self.call(
            "POST",
            "/api/v1/messages/",
            name="POST messages/",
            group="messages",
            expect=(202,),
            json=body,
        )
        if response is not None:
            data = response.json()
            self.replies.append(data["reply"]["id"])
            self.conversation = data["message"]["conversation_id"]
            self.conversation_idle = False

    @task(3)
    def poll(self) -> None:
        if not self.replies:
            return
        reply = random.choice(self.replies)
        response = self.call(
            "GET", f"/api/v1/messages/{reply}/", name="GET messages/{id}/", group="polling"
        )
        if reply == self.replies[-1] and response is not None:
            self.conversation_idle = response.json()["status"] in FINISHED

    @task(1)
    def history(self) -> None:
        if self.conversation:
            self.call(
                "GET",
                f"/api/v1/conversations/{self.conversation}/messages/",
                name="GET conversations/{id}/messages/",
                group="polling",
            )


def _entry(entry) -> dict:
    return {
        "type": entry.method,
        "name": entry.name,
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "rps": entry.total_rps,
        "p50_ms": entry.get_response_time_percentile(0.5) if entry.num_requests else None,
        "p95_ms": entry.get_response_time_percentile(0.95) if entry.num_requests else None,
        "max_ms": entry.max_response_time if entry.num_requests else None,
    }


def _is_reset(failure: dict) -> bool:
    return failure.get("status") == 0 and "ConnectionResetError" in failure.get("error", "")


def _write_results(environment) -> None:
    stats = environment.stats
    with _lock:
        results = {
            "statuses": dict(STATUSES),
            "replies": dict(REPLIES),
            "documents": dict(DOCUMENTS),
            "events": dict(EVENTS),
            "throttle": {
                "explained": dict(THROTTLE["explained"]),
                "unexplained": list(THROTTLE["unexplained"]),
            },
            # A reset on a reused keep-alive connection that uvicorn closed as idle (5 s), as
            # the request went out: the HTTP/1.1 race browsers retry; counted, not a failure.
            "connection_resets": sum(1 for f in FAILURES if _is_reset(f)),
            "other_failures": sum(
                1 for f in FAILURES if f.get("status", 0) < 500 and not _is_reset(f)
            ),
            "failure_samples": list(FAILURES),
            "entries": sorted(
                (_entry(e) for e in stats.entries.values()), key=lambda e: (e["type"], e["name"])
            ),
            "total": _entry(stats.total),
            "duration_s": stats.last_request_timestamp - stats.start_time
            if stats.last_request_timestamp
            else 0,
        }
    RESULTS_PATH.write_text(json.dumps(results, indent=1, ensure_ascii=False))


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs) -> None:
    _write_results(environment)


@events.quitting.add_listener
def _on_quitting(environment, **_kwargs) -> None:
    _write_results(environment)
