"""Hand-packed script calls on a stack of idle Redis connections, for the two calls made on
every API request (the rate limiter's check and the cache's read).

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

import redis


def pack_command(*parts) -> bytes:
    """RESP for one command; parts are bytes, str or int."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def script_sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


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
        idle = self._idle.get(url)
        if idle is None:
            idle = self._idle.setdefault(url, [])
        try:
            conn = idle.pop()
        except IndexError:
            conn = self._connect(url)
        else:
            try:
                return self._evalsha_on(conn, idle, packed, script)
            except redis.exceptions.ConnectionError:
                # Most likely the server closed it while idle (restart, idle timeout): the
                # script did not run. The other idle ones are suspect too; one retry on a
                # fresh connection. Timeouts are not retried (the script may have run).
                self._drop(idle)
                conn = self._connect(url)
        return self._evalsha_on(conn, idle, packed, script)

    def _evalsha_on(self, conn, idle: list, packed: bytes, script: str):
        packed = [packed]
        try:
            conn.send_packed_command(packed, check_health=False)
            try:
                reply = conn.read_response()
            except redis.exceptions.NoScriptError:
                # First call on this server (or after a restart/SCRIPT FLUSH): load, retry.
                conn.send_command("SCRIPT", "LOAD", script, check_health=False)
                conn.read_response()
                conn.send_packed_command(packed, check_health=False)
                reply = conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        if len(idle) < self.MAX_IDLE:
            idle.append(conn)
        else:
            conn.disconnect()
        return reply

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
