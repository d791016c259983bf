"""Request bodies are refused with 413 past their limit as they arrive, through the real
uvicorn server: a Content-Length over the limit before a byte of the body is read, an endless
chunked body as soon as the count passes it; the upload views get the upload limit and no
other path reaches it."""

from __future__ import annotations

import json
import select
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from accounts.services import api_key_create
from knowledge.models import Document
from knowledge.services import knowledge_base_create
from tests.live import start_asgi_server, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

KIB, MIB = 1024, 1024 * 1024
SMALL_LIMIT = 256 * KIB
FILE_LIMIT, FILES_PER_UPLOAD, OVERHEAD = 1 * MIB, 2, 64 * KIB
UPLOAD_LIMIT = FILE_LIMIT * FILES_PER_UPLOAD + OVERHEAD
# A chunked stream is meant to be endless (4 GiB); the test stops sending when the server
# answers. Loopback socket buffers hold a few MB, so "answered early" means before the
# limit plus this much was sent. A server without the limit reads on: past GIVE_UP the test
# ends the body itself (so the machine's disk is spared) and fails.
STREAM_BYTES = 4 * 1024 * MIB
SLACK = 16 * MIB
GIVE_UP = 96 * MIB
CHUNK = 64 * KIB


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, live_logs, milvus_lite):
    server = start_asgi_server(
        live_logs,
        env=subprocess_env(
            REQUEST_BODY_MAX_BYTES=str(SMALL_LIMIT),
            KNOWLEDGE_MAX_UPLOAD_BYTES=str(FILE_LIMIT),
            KNOWLEDGE_MAX_FILES_PER_UPLOAD=str(FILES_PER_UPLOAD),
            REQUEST_BODY_MULTIPART_OVERHEAD=str(OVERHEAD),
        ),
    )
    yield server
    server.stop()


@pytest.fixture
def uploader(user):
    _key, raw = api_key_create(user=user, name="uploads")
    base = knowledge_base_create(owner=user, name="Uploads")
    return {"Authorization": f"Bearer {raw}"}, base


def _address(server) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return parts.hostname, parts.port


def _head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection or `timeout` passes."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _parse(data: bytes) -> tuple[int, dict, bytes]:
    head, _sep, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _colon, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def _stream_chunked(server, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST an endless chunked body of zeros; stop when the server answers (or closes).
    Returns (body bytes sent, response)."""
    chunk = b"%x\r\n%s\r\n" % (CHUNK, b"\0" * CHUNK)
    sent = 0
    with socket.create_connection(_address(server), timeout=30) as sock:
        sock.sendall(_head(path, {**headers, "Transfer-Encoding": "chunked"}))
        try:
            while sent < STREAM_BYTES and not select.select([sock], [], [], 0)[0]:
                if sent >= GIVE_UP:
                    sock.sendall(b"0\r\n\r\n")  # not cut off: end the body, see the answer
                    break
                sock.sendall(chunk)
                sent += CHUNK
        except OSError:
            pass  # the server answered and closed while this was sending
        return sent, _read_response(sock, timeout=30)


def _declare_only(
    server, path: str, length: int, headers: dict[str, str], wait: float = 5
) -> tuple[float, bytes]:
    """Send the head of a request declaring `length` bytes and none of the body; (seconds to
    the answer, response)."""
    with socket.create_connection(_address(server), timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(_head(path, {**headers, "Content-Length": str(length)}))
        response = _read_response(sock, timeout=wait)
        return time.monotonic() - started, response


def _assert_413(response: bytes, limit: int) -> None:
    assert response, "no answer"
    status, headers, body = _parse(response)
    assert status == 413, response[:300]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert json.loads(body) == {
        "error": {
            "code": "file_too_large",
            "message": f"The request body is larger than {limit} bytes.",
            "details": {"max_bytes": limit},
        }
    }


def test_endless_chunked_bodies_are_cut_off_once_past_the_limit(server, uploader):
    auth, base = uploader
    for path, limit in [
        ("/healthz", SMALL_LIMIT),
        ("/api/v1/conversations/", SMALL_LIMIT),
        (f"/api/v1/knowledge/bases/{base.id}/documents/", UPLOAD_LIMIT),
    ]:
        sent, response = _stream_chunked(
            server, path, {**auth, "Content-Type": "multipart/form-data; boundary=x"}
        )
        assert sent < limit + SLACK, f"{path}: {sent / MIB:.0f} MB sent, {response[:200]!r}"
        _assert_413(response, limit)
    assert "Traceback" not in server.log(tail=None)
    assert Document.objects.count() == 0


def test_a_content_length_over_the_limit_is_refused_before_the_body_is_read(server, uploader):
    auth, base = uploader
    upload = f"/api/v1/knowledge/bases/{base.id}/documents/"
    for path, length, limit in [
        ("/healthz", SMALL_LIMIT + 1, SMALL_LIMIT),
        ("/api/v1/conversations/", 10 * 1024 * MIB, SMALL_LIMIT),
        (upload, UPLOAD_LIMIT + 1, UPLOAD_LIMIT),
    ]:
        # Expect: 100-continue: a client that waits for the go-ahead gets the 413 instead.
        elapsed, response = _declare_only(
            server, path, length, {**auth, "Content-Type": "application/json",
                                   "Expect": "100-continue"}
        )  # fmt: skip
        assert not response.startswith(b"HTTP/1.1 100"), response[:100]
        _assert_413(response, limit)
        assert elapsed < 2, elapsed


def test_only_the_upload_views_get_the_upload_limit(server, uploader):
    """A body above the small limit but within the upload limit, declared to paths that look
    like the upload route but do not resolve to its view: refused at once. The upload views
    (the API's, also with percent-encoded letters, as Django resolves it, and the admin's)
    are not."""
    auth, base = uploader
    upload = f"/api/v1/knowledge/bases/{base.id}/documents/"
    for path in [
        f"/{upload}",
        f"{upload}x/",
        f"{upload}..%2F..%2F..%2Fconversations/",
        f"/api/v1/conversations/?next={upload}",
        f"/api/v1/knowledge/bases/{base.id}/documents",  # no slash: a redirect, not the view
        f"/admin/knowledge/knowledgebase/{base.id}/upload/x",
    ]:
        _elapsed, response = _declare_only(server, path, SMALL_LIMIT + 1, auth)
        _assert_413(response, SMALL_LIMIT)
    for path in [
        upload.replace("documents", "%64ocuments"),
        f"/admin/knowledge/knowledgebase/{base.id}/upload/",
    ]:
        _elapsed, response = _declare_only(server, path, SMALL_LIMIT + 1, auth, wait=2)
        assert response == b"", path  # the view waits for the body it was promised


def test_bodies_within_the_limits_still_work(server, uploader):
    auth, base = uploader
    client = httpx.Client(base_url=server.url, headers=auth, timeout=30)
    text = ("A paragraph about the body limit. " * 40 + "\n\n") * 400  # ~ 0.55 MB
    assert SMALL_LIMIT < len(text) < FILE_LIMIT

    upload = f"/api/v1/knowledge/bases/{base.id}/documents/"
    response = client.post(upload, files={"file": ("notes.txt", text.encode(), "text/plain")})
    assert response.status_code == 202, response.text

    assert Document.objects.get().title == "notes.txt"

    # A chunked body under the limit goes through the count to the app. (Django reads no
    # chunked body: without a Content-Length it sees an empty one, a conversation with the
    # default title here.)
    def pieces():
        for _ in range(SMALL_LIMIT // CHUNK):
            yield b" " * CHUNK

    response = client.post(
        "/api/v1/conversations/", content=pieces(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text

    created = client.post("/api/v1/conversations/", json={"title": "x" * 100})
    assert created.status_code == 201, created.text
