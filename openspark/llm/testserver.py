"""A GLM-compatible HTTP server for tests, benchmarks and local development.

It speaks the wire protocol the real `zhipuai` SDK expects (design note GLM_WIRE.md) under
`/api/paas/v4`, and the OpenAI one under `/v1`, with deterministic replies and embeddings,
configurable latency, fault injection and a request log. Standard library only, so it runs
inside the test process:

    with GLMTestServer(port=0) as server:
        ZhipuAI(api_key="test", base_url=server.base_url, max_retries=0)

or as a command: `python -m openspark.llm.testserver --port 8765` (also `manage.py glm_testserver`).

The reply to a chat is a function of its last user message only:
`"Echo: <the message's words>. This is a deterministic reply from the GLM test server."`,
plus `" Sources: [1] [2]."` when the system prompt lists numbered sources. `[[tokens:N]]` in
the message makes the reply exactly N tokens long (the same text, repeated), for benchmarks.
A token is one CJK character or one word with its trailing whitespace.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import itertools
import json
import logging
import math
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self

from .base import estimate_tokens

logger = logging.getLogger(__name__)

GLM_PREFIX = "/api/paas/v4"
OPENAI_PREFIX = "/v1"
GLM_CHAT_PATH = f"{GLM_PREFIX}/chat/completions"
GLM_EMBEDDINGS_PATH = f"{GLM_PREFIX}/embeddings"
OPENAI_CHAT_PATH = f"{OPENAI_PREFIX}/chat/completions"
FIXED_SENTENCE = "This is a deterministic reply from the GLM test server."
FIRST_TOKEN_DELAY_HEADER = "X-Test-First-Token-Delay"
TOKEN_DELAY_HEADER = "X-Test-Token-Delay"

EMBEDDING_MODELS = {"embedding-2": (1024,), "embedding-3": (2048, 1024, 512, 256)}  # default 1st
EMBEDDING_MAX_ITEMS = 64
EMBEDDING_MAX_TOKENS = {"embedding-2": 512, "embedding-3": 3072}

_CJK = r"\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_TOKEN = re.compile(rf"[{_CJK}]\s*|[^\s{_CJK}]+\s*|\s+")
_TOKENS_DIRECTIVE = re.compile(r"\[\[tokens:(\d+)\]\]")
_SOURCE_LINE = re.compile(r"^\[(\d+)\]", re.MULTILINE)
_FEATURE = re.compile(rf"[{_CJK}]+|[^\W_]+")

_ERROR_MESSAGES = {
    "1001": "Authorization header missing.",
    "1002": "Invalid API key.",
    "1113": "Your account is in arrears.",
    "1211": "Model does not exist.",
    "1214": "Invalid parameter.",
    "1234": "Network error, please try again later.",
    "1301": "The input or generated content may contain sensitive content.",
    "1302": "Too many concurrent requests for this API.",
    "500": "Internal server error.",
}


# --- deterministic content -------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Lossless: `"".join(tokenize(t)) == t`."""
    return _TOKEN.findall(text)


def _content(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def reply_text(messages: Sequence[dict[str, Any]]) -> str:
    last_user = next((_content(m) for m in reversed(messages) if m.get("role") == "user"), "")
    words = " ".join(_TOKENS_DIRECTIVE.sub(" ", last_user).split())
    text = f"Echo: {words}. {FIXED_SENTENCE}" if words else FIXED_SENTENCE
    system = "\n".join(_content(m) for m in messages if m.get("role") == "system")
    sources = sorted({int(n) for n in _SOURCE_LINE.findall(system)})
    if sources:
        text += " Sources: " + " ".join(f"[{n}]" for n in sources) + "."
    if match := _TOKENS_DIRECTIVE.search(last_user):
        tokens = tokenize(text + " ")
        return "".join(itertools.islice(itertools.cycle(tokens), int(match.group(1))))
    return text


def reply_tokens(messages: Sequence[dict[str, Any]]) -> list[str]:
    return tokenize(reply_text(messages))


def embedding_vector(text: str, dimension: int) -> list[float]:
    """Feature hashing: every word (or CJK character and character pair) adds ±1 at four
    positions chosen by its hash, then the vector is L2-normalised. Texts sharing features
    therefore have a clearly positive cosine; unrelated texts are close to orthogonal."""
    features: list[str] = []
    for run in _FEATURE.findall(text.lower()):
        if re.match(rf"[{_CJK}]", run):
            features.extend(run)
            features.extend(run[i : i + 2] for i in range(len(run) - 1))
        else:
            features.append(run)
    vector = [0.0] * dimension
    for feature in features:
        digest = hashlib.blake2b(feature.encode(), digest_size=16).digest()
        for slot in range(4):
            chunk = int.from_bytes(digest[slot * 4 : slot * 4 + 4], "big")
            vector[(chunk >> 1) % dimension] += 1.0 if chunk & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        vector[0], norm = 1.0, 1.0  # empty text: a fixed unit vector, never NaNs
    return [round(v / norm, 6) for v in vector]


# --- configuration, faults and the request log ----------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass
class _Fault:
    kind: Literal["status", "mid_stream", "drop", "stall"]
    remaining: int
    status: int = 500
    code: str = "500"
    message: str = ""
    after_tokens: int = 0
    seconds: float = 0.0

    def applies_to(self, *, chat: bool, streaming: bool) -> bool:
        if self.kind == "status":
            return True
        if self.kind in ("mid_stream", "drop"):
            return chat and streaming
        return chat


@dataclass
class _Timing:
    first_token_delay: float
    token_delay: float


class GLMTestServer:
    """Thread-per-connection server; safe for hundreds of concurrent streams."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        first_token_delay: float = 0.0,
        token_delay: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay
        # None: any non-empty Bearer key is accepted on /api/paas/v4 and none is needed on /v1.
        self.api_key = api_key
        self._configured = (first_token_delay, token_delay, api_key)
        # Seconds each embeddings request takes (a slow provider; tests of ingestion).
        self.embedding_delay = 0.0
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> Self:
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self.port), _Handler, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"glm-testserver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a delay or a stall
        self._httpd.shutdown()
        self._httpd.close_all_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """For `ZhipuAI(base_url=...)` / `ZHIPUAI_BASE_URL`."""
        return self.url + GLM_PREFIX

    @property
    def openai_base_url(self) -> str:
        """For `OPENAI_COMPAT_BASE_URL`."""
        return self.url + OPENAI_PREFIX

    # test controls

    def reset(self) -> None:
        """Forget requests and pending faults; delays and key go back to the constructor's."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()
        self.first_token_delay, self.token_delay, self.api_key = self._configured
        self.embedding_delay = 0.0

    def fail_next(
        self, n: int = 1, *, status: int = 429, code: str = "1302", message: str | None = None
    ) -> None:
        """The next `n` API requests (chat or embeddings) answer `status` with a Zhipu error."""
        self._add(_Fault("status", n, status=status, code=code, message=message or ""))

    def error_mid_stream(
        self,
        *,
        after_tokens: int = 2,
        code: str = "1234",
        message: str | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` streaming chats send `after_tokens` tokens, then an error event."""
        self._add(
            _Fault("mid_stream", times, code=code, message=message or "", after_tokens=after_tokens)
        )

    def drop_mid_stream(self, *, after_tokens: int = 2, times: int = 1) -> None:
        """The next `times` streaming chats send `after_tokens` tokens, then the connection is
        closed with the response unfinished (no error event, no `[DONE]`): a provider or a
        proxy dying mid-reply."""
        self._add(_Fault("drop", times, after_tokens=after_tokens))

    def stall_next(self, seconds: float, *, after_tokens: int = 0, times: int = 1) -> None:
        """The next `times` chats go silent for `seconds`: before the response headers when
        `after_tokens` is 0, else after that many streamed tokens."""
        self._add(_Fault("stall", times, seconds=seconds, after_tokens=after_tokens))

    def requests_to(self, path_suffix: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(path_suffix)]

    def _add(self, fault: _Fault) -> None:
        if fault.remaining > 0:
            with self._lock:
                self._faults.append(fault)

    def _take_fault(self, *, chat: bool, streaming: bool) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies_to(chat=chat, streaming=streaming):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the server stops first; False means stop now."""
        if seconds <= 0:
            return not self._stopping.is_set()
        if seconds <= 0.05:
            # Per-token pauses: a plain sleep is much cheaper than Event.wait across hundreds
            # of streaming threads, and short enough not to delay stop().
            time.sleep(seconds)
            return not self._stopping.is_set()
        return not self._stopping.wait(seconds)

    def _next_id(self) -> str:
        return f"testserver-{next(self._ids)}"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Stalled or keep-alive handler threads must not hold up stop().
    block_on_close = False
    # The default backlog of 5 drops connections when a benchmark opens hundreds at once.
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, app: GLMTestServer) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _ClientGone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked transfer for streams
    server_version = "GLMTestServer/1"
    # Idle keep-alive connections are dropped after this long.
    timeout = 30
    server: _HTTPServer

    @property
    def app(self) -> GLMTestServer:
        return self.server.app

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    # routing

    def do_GET(self) -> None:
        if self.path in ("/health", "/healthz"):
            self._send_json(200, {"status": "ok"})
        else:
            self._send_error(404, "1211", "Not found.")

    def do_POST(self) -> None:
        try:
            self._handle_post()
        except (_ClientGone, BrokenPipeError, ConnectionResetError, TimeoutError):
            # The client timed out or stopped reading; there is nobody left to answer.
            self.close_connection = True

    def _handle_post(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        self.app._record(RecordedRequest("POST", path, dict(self.headers.items()), body))

        if path not in (GLM_CHAT_PATH, GLM_EMBEDDINGS_PATH, OPENAI_CHAT_PATH):
            self._send_error(404, "1211", f"Unknown path {path}.")
            return
        openai = path == OPENAI_CHAT_PATH
        if not self._authorized(openai=openai):
            return
        if not isinstance(body, dict):
            self._send_error(400, "1214", "The request body must be a JSON object.")
            return
        chat = path != GLM_EMBEDDINGS_PATH
        streaming = chat and bool(body.get("stream"))
        fault = self.app._take_fault(chat=chat, streaming=streaming)
        if fault is not None and fault.kind == "status":
            self._send_error(fault.status, fault.code, fault.message)
            return
        # A stall is silence before the headers, except a stream's with after_tokens > 0.
        if (
            fault is not None
            and fault.kind == "stall"
            and (fault.after_tokens == 0 or not streaming)
        ):
            if not self.app._wait(fault.seconds):
                raise _ClientGone
            fault = None
        if chat:
            self._chat(body, fault, openai=openai)
        else:
            self._embeddings(body)

    def _authorized(self, *, openai: bool) -> bool:
        header = self.headers.get("Authorization", "")
        key = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        expected = self.app.api_key
        if openai and expected is None:
            return True
        if not key:
            self._send_error(401, "1001", None)
            return False
        if expected is not None and key != expected:
            self._send_error(401, "1002", None)
            return False
        return True

    # chat

    def _timing(self) -> _Timing:
        def header_float(name: str, default: float) -> float:
            try:
                return float(self.headers[name]) if self.headers.get(name) else default
            except ValueError:
                return default

        return _Timing(
            first_token_delay=header_float(FIRST_TOKEN_DELAY_HEADER, self.app.first_token_delay),
            token_delay=header_float(TOKEN_DELAY_HEADER, self.app.token_delay),
        )

    def _chat(self, body: dict[str, Any], fault: _Fault | None, *, openai: bool) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self._send_error(400, "1214", "messages must be a non-empty list.")
            return
        tokens = reply_tokens(messages)
        finish_reason = "stop"
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < len(tokens):
            tokens, finish_reason = tokens[:max_tokens], "length"
        prompt_tokens = sum(len(tokenize(_content(m))) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        meta = {
            "id": self.app._next_id(),
            "created": int(time.time()),
            "model": body.get("model") or "glm-4",
        }
        timing = self._timing()
        if body.get("stream"):
            if openai:
                options = body.get("stream_options")
                include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
                chunks = _openai_chunks(meta, tokens, finish_reason, usage, include_usage)
            else:
                chunks = _glm_chunks(meta, tokens, finish_reason, usage)
            self._stream(chunks, timing, fault, openai=openai)
            return
        if not self.app._wait(timing.first_token_delay + timing.token_delay * len(tokens)):
            raise _ClientGone
        message = {"role": "assistant", "content": "".join(tokens)}
        choice = {"index": 0, "finish_reason": finish_reason, "message": message}
        extra = {"object": "chat.completion"} if openai else {"request_id": meta["id"]}
        self._send_json(200, {**meta, **extra, "choices": [choice], "usage": usage})

    def _stream(
        self,
        chunks: Iterator[tuple[bool, dict[str, Any]]],
        timing: _Timing,
        fault: _Fault | None,
        *,
        openai: bool,
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent_tokens = 0
        # Tokens are paced against a schedule, not by sleeping after each write, so the rate
        # stays as configured when hundreds of streams compete for the CPU.
        due = time.monotonic() + timing.first_token_delay
        for is_token, chunk in chunks:
            if is_token:
                if fault is not None and sent_tokens == fault.after_tokens:
                    if fault.kind == "stall":
                        if not self.app._wait(fault.seconds):
                            raise _ClientGone
                        due += fault.seconds
                    elif fault.kind == "drop":
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    else:
                        error = {"code": fault.code, "message": _message(fault.code, fault.message)}
                        if openai:
                            error["type"] = "server_error"
                        self._write_event({"error": error})
                        self._end_chunked()
                        return
                if not self.app._wait(due - time.monotonic()):
                    raise _ClientGone
                due += timing.token_delay
                sent_tokens += 1
            self._write_event(chunk)
        self._write_chunk(b"data: [DONE]\n\n")
        self._end_chunked()

    # embeddings

    def _embeddings(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        if model not in EMBEDDING_MODELS:
            self._send_error(400, "1211", f"Model {model!r} does not exist.")
            return
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) and t for t in texts):
            self._send_error(400, "1214", "input must be a non-empty string or list of them.")
            return
        if not texts or len(texts) > EMBEDDING_MAX_ITEMS:
            self._send_error(400, "1214", f"input must hold 1 to {EMBEDDING_MAX_ITEMS} items.")
            return
        allowed = EMBEDDING_MODELS[model]
        dimension = body.get("dimensions") or allowed[0]
        if dimension not in allowed:
            self._send_error(400, "1214", f"dimensions must be one of {allowed} for {model}.")
            return
        limit = EMBEDDING_MAX_TOKENS[model]
        if any(estimate_tokens(t) > limit for t in texts):
            self._send_error(400, "1214", f"Each input must be at most {limit} tokens.")
            return
        used = sum(estimate_tokens(t) for t in texts)
        data = [
            {"index": i, "object": "embedding", "embedding": embedding_vector(t, dimension)}
            for i, t in enumerate(texts)
        ]
        if not self.app._wait(self.app.embedding_delay):
            raise _ClientGone
        self._send_json(
            200,
            {
                "model": model,
                "object": "list",
                "data": data,
                "usage": {"prompt_tokens": used, "completion_tokens": 0, "total_tokens": used},
            },
        )

    # writing

    def _send_json(self, status: int, payload: object) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, code: str, message: str | None) -> None:
        self._send_json(status, {"error": {"code": code, "message": _message(code, message)}})

    def _write_event(self, payload: object) -> None:
        data = json.dumps(payload, ensure_ascii=False)
        self._write_chunk(f"data: {data}\n\n".encode())

    def _write_chunk(self, data: bytes) -> None:
        # One HTTP chunk per event, written straight to the socket (wfile is unbuffered).
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


def _message(code: str, message: str | None) -> str:
    return message or _ERROR_MESSAGES.get(code, "Error.")


def _glm_chunks(
    meta: dict[str, Any], tokens: list[str], finish_reason: str, usage: dict[str, int]
) -> Iterator[tuple[bool, dict[str, Any]]]:
    """(is_token, chunk) pairs; the last chunk carries finish_reason and usage, like GLM's."""
    for token in tokens:
        delta = {"role": "assistant", "content": token}
        yield True, {**meta, "choices": [{"index": 0, "delta": delta}]}
    last = {"index": 0, "finish_reason": finish_reason, "delta": {"role": "assistant"}}
    yield False, {**meta, "choices": [last], "usage": usage}


def _openai_chunks(
    meta: dict[str, Any],
    tokens: list[str],
    finish_reason: str,
    usage: dict[str, int],
    include_usage: bool,
) -> Iterator[tuple[bool, dict[str, Any]]]:
    """OpenAI's order: tokens, a finish chunk, then (if asked) a usage chunk with no choices."""
    meta = {**meta, "object": "chat.completion.chunk"}
    for i, token in enumerate(tokens):
        delta = {"role": "assistant", "content": token} if i == 0 else {"content": token}
        yield True, {**meta, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield False, {**meta, "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]}
    if include_usage:
        yield False, {**meta, "choices": [], "usage": usage}


# --- command line ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--first-token-delay", type=float, default=0.2, help="seconds")
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds per token")
    parser.add_argument(
        "--api-key", default=None, help="accept only this key (default: any non-empty key)"
    )


def serve(
    *,
    host: str,
    port: int,
    first_token_delay: float,
    token_delay: float,
    api_key: str | None,
    write: Callable[[str], object] | None = None,
) -> None:
    """Run until interrupted (Ctrl-C). Output is flushed per line: scripts wait for the URL."""
    write = write or functools.partial(print, flush=True)
    # Request lines are debug-level so in-process benchmarks stay quiet; here they are wanted.
    logger.setLevel(logging.DEBUG)
    server = GLMTestServer(
        host=host,
        port=port,
        first_token_delay=first_token_delay,
        token_delay=token_delay,
        api_key=api_key,
    )
    with server:
        write(f"GLM test server listening on {server.url}")
        write(f"  ZHIPUAI_BASE_URL={server.base_url}")
        write(f"  OPENAI_COMPAT_BASE_URL={server.openai_base_url}")
        write("Press Ctrl-C to stop.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            write("Stopping.")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m openspark.llm.testserver", description=__doc__.split("\n\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    serve(
        host=args.host,
        port=args.port,
        first_token_delay=args.first_token_delay,
        token_delay=args.token_delay,
        api_key=args.api_key,
    )


if __name__ == "__main__":
    main()
