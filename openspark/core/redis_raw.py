"""Hand-packed script calls on a stack of idle Redis connections, for the two calls made on
every API request (the rate limiter's check and the API key's cached-row read), pipelined
into one round trip when both go to the same server (`evalsha_many`).

redis-py spends ~18 µs of a ~40 µs EVALSHA in its own bookkeeping (pool checkout with a
socket poll, retry wrapper, response callbacks; profiled in docs/performance.md). Here a
connection is taken from a per-URL stack for one command and put back only after a complete
reply, so a connection on the stack never has unread data; one that fails is closed. A
connection the server closed while idle is replaced once (the script did not run); a timeout
is not retried (it may have). After fork the child forgets the parent's connections."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import redis

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


def _read(conn):
    # An error reply is read completely before redis-py raises it: the connection stays usable.
    try:
        return conn.read_response()
    except redis.exceptions.ResponseError as error:
        return error


class ScriptConnections:
    """Idle connections per Redis URL; `client_for(url)` gives the redis-py client whose
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
            conn = idle.pop()
        except IndexError:
            conn = self._connect(url)
        else:
            try:
                return self._send(conn, idle, commands)
            except redis.exceptions.ConnectionError:
                # Most likely the server closed it while idle (restart, idle timeout): the
                # scripts did not run. The other idle ones are suspect too; one retry on a
                # fresh connection. Timeouts are not retried (the scripts may have run).
                self._drop(idle)
                conn = self._connect(url)
        return self._send(conn, idle, commands)

    def _send(self, conn, idle: list, commands) -> list:
        try:
            # One buffer: redis-py writes each list item with its own sendall (a syscall each).
            conn.send_packed_command(
                [b"".join([packed for packed, _script in commands])], check_health=False
            )
            replies = [_read(conn) for _command in commands]
            for n, reply in enumerate(replies):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    # First call on this server (or after a restart/SCRIPT FLUSH): load, retry.
                    packed, script = commands[n]
                    conn.send_command("SCRIPT", "LOAD", script, check_health=False)
                    conn.read_response()
                    conn.send_packed_command([packed], check_health=False)
                    replies[n] = _read(conn)
        except BaseException:
            conn.disconnect()
            raise
        if len(idle) < self.MAX_IDLE:
            idle.append(conn)
        else:
            conn.disconnect()
        return replies

    def _connect(self, url: str):
        pool = self._client_for(url).connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    @staticmethod
    def _drop(idle: list) -> None:
        while idle:
            try:
                idle.pop().disconnect()
            except IndexError:
                break

    def forget_after_fork(self) -> None:
        # The parent's sockets: do not close them, just stop using them.
        self._idle = {}
