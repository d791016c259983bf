"""Hand-packed script calls on a stack of idle Redis connections, for the two calls made on
every API request (the rate limiter's check and the API key's cached-row read), pipelined
into one round trip when both go to the same server (`evalsha_many`).

redis-py spends ~18 µs of a ~40 µs EVALSHA in its own bookkeeping (pool checkout with a
socket poll, retry wrapper, response callbacks; profiled in docs/performance.md), and a few
more µs in its connection's send and read layers. Here redis-py only opens a connection (TLS,
AUTH, SELECT, as the client's settings say); the command is then written on its socket and
the reply read with a hiredis reader of our own (`_Link`). A link is taken from a per-URL
stack for one command and put back only after a complete reply, so a link on the stack never
has unread data; one that fails is closed. A link the server closed while idle is replaced
once (the script did not run); a timeout is not retried (it may have). After fork the child
forgets the parent's links."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import hiredis
import redis
from redis._parsers.base import BaseParser

NOT_SENT = object()


@dataclass(slots=True)
class ScriptCall:
    """An EVALSHA of `script`, packed to ride another module's round trip (the rate limiter
    pipelines the API key's cached-row read, the edge's reads and a budget peek with its own
    check). Whoever sends it on a connection to `url` puts the raw reply in `reply`."""

    url: str
    packed: bytes
    script: str
    reply: object = NOT_SENT


def pack_command(*parts) -> bytes:
    """RESP for one command; parts are bytes, str or int."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def script_sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


class _Link:
    """A connection opened by redis-py, then used raw: `call` writes packed commands on its
    socket in one sendall and reads their replies with its own hiredis reader. Socket errors
    become redis-py's exceptions (a timeout is `TimeoutError`, a closed socket
    `ConnectionError`); error replies come back as redis-py's exception instances, not raised,
    read completely, so the link stays usable, except those redis-py counts as connection
    errors (a server still loading its data, authentication lost), which are raised."""

    __slots__ = ("conn", "reader", "sock")

    def __init__(self, conn) -> None:
        conn.connect()
        self.conn = conn
        self.sock = conn._sock  # redis-py's own socket (plain or TLS), timeouts already set
        self.reader = hiredis.Reader()

    def call(self, packed: bytes, count: int) -> list:
        sock, reader = self.sock, self.reader
        try:
            sock.sendall(packed)
            replies = []
            while len(replies) < count:
                reply = reader.gets()
                while reply is False:
                    data = sock.recv(65536)
                    if not data:
                        raise redis.exceptions.ConnectionError("Connection closed by server.")
                    reader.feed(data)
                    reply = reader.gets()
                if isinstance(reply, hiredis.ReplyError):
                    reply = BaseParser.parse_error(str(reply))
                    if not isinstance(reply, redis.exceptions.ResponseError):
                        raise reply  # the server can't answer (LOADING, NOAUTH): not a reply
                replies.append(reply)
            return replies
        except TimeoutError as error:
            raise redis.exceptions.TimeoutError(f"Timeout talking to Redis: {error}") from error
        except (OSError, hiredis.ProtocolError) as error:
            raise redis.exceptions.ConnectionError(f"Error talking to Redis: {error}") from error

    def close(self) -> None:
        self.conn.disconnect()


class ScriptConnections:
    """Idle links per Redis URL; `client_for(url)` gives the redis-py client whose
    connection settings (timeouts, TLS, auth) new connections copy."""

    MAX_IDLE = 64

    def __init__(self, client_for: Callable[[str], redis.Redis]) -> None:
        self._client_for = client_for
        self._idle: dict[str, list] = {}
        os.register_at_fork(after_in_child=self.forget_after_fork)

    def evalsha(self, url: str, packed: bytes, script: str):
        """`packed`: an EVALSHA of `script` in RESP; on NOSCRIPT the script is loaded and the
        command sent again."""
        reply = self.evalsha_many(url, ((packed, script),))[0]
        if isinstance(reply, redis.exceptions.ResponseError):
            raise reply
        return reply

    def evalsha_many(self, url: str, commands) -> list:
        """Several (packed EVALSHA, script) pipelined on one connection: one round trip, the
        replies in order. A script's error comes back as its ResponseError in the list (the
        other replies stand); connection failures raise."""
        idle = self._idle.get(url)
        if idle is None:
            idle = self._idle.setdefault(url, [])
        try:
            link = idle.pop()
        except IndexError:
            link = self._connect(url)
        else:
            try:
                return self._send(link, idle, commands)
            except redis.exceptions.ConnectionError:
                # Most likely the server closed it while idle (restart, idle timeout): the
                # scripts did not run. The other idle ones are suspect too; one retry on a
                # fresh connection. Timeouts are not retried (the scripts may have run).
                self._drop(idle)
                link = self._connect(url)
        return self._send(link, idle, commands)

    def _send(self, link: _Link, idle: list, commands) -> list:
        try:
            replies = link.call(b"".join([packed for packed, _script in commands]), len(commands))
            for n, reply in enumerate(replies):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    # First call on this server (or after a restart/SCRIPT FLUSH): load, retry.
                    packed, script = commands[n]
                    link.call(pack_command("SCRIPT", "LOAD", script), 1)
                    replies[n] = link.call(packed, 1)[0]
        except BaseException:
            link.close()
            raise
        if len(idle) < self.MAX_IDLE:
            idle.append(link)
        else:
            link.close()
        return replies

    def _connect(self, url: str) -> _Link:
        pool = self._client_for(url).connection_pool
        return _Link(pool.connection_class(**pool.connection_kwargs))

    @staticmethod
    def _drop(idle: list) -> None:
        while idle:
            try:
                idle.pop().close()
            except IndexError:
                break

    def forget_after_fork(self) -> None:
        # The parent's sockets: do not close them, just stop using them.
        self._idle = {}
