"""A real SMTP server on loopback for tests (the mail relay is outside the machine): it speaks
enough SMTP for smtplib (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), keeps what it
accepts, and can refuse the next connections (421) to stand for a relay that is down."""

from __future__ import annotations

import email
import email.policy
import socketserver
import threading
from dataclasses import dataclass, field


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: email.message.EmailMessage = field(repr=False)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SMTPTestServer:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._refuse = 0
        self._lock = threading.Lock()
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(f"{line}\r\n".encode())

            def handle(self) -> None:
                if server._take_refusal():
                    self.reply("421 test relay unavailable")
                    return
                self.reply("220 localhost test ESMTP")
                sender, recipients = "", []
                while line := self.rfile.readline():
                    command = line.decode("utf-8", "replace").strip()
                    verb = command[:4].upper()
                    if verb == "EHLO":
                        self.reply("250-localhost")
                        self.reply("250 8BITMIME")
                    elif verb in ("HELO", "NOOP"):
                        self.reply("250 OK")
                    elif verb == "RSET":
                        sender, recipients = "", []
                        self.reply("250 OK")
                    elif verb == "MAIL":
                        sender = command.partition(":")[2].strip().split()[0].strip("<>")
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        recipients.append(command.partition(":")[2].strip().strip("<>"))
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 End data with <CR><LF>.<CR><LF>")
                        lines = []
                        while (raw := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                            lines.append(raw[1:] if raw.startswith(b"..") else raw)
                        message = email.message_from_bytes(
                            b"".join(lines), policy=email.policy.default
                        )
                        server._store(Received(sender, list(recipients), message))
                        sender, recipients = "", []
                        self.reply("250 OK queued")
                    elif verb == "QUIT":
                        self.reply("221 Bye")
                        return
                    else:
                        self.reply("502 Command not implemented")

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"smtp://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> SMTPTestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def refuse(self, connections: int) -> None:
        """Answer the next `connections` connections with 421 (relay down)."""
        with self._lock:
            self._refuse = connections

    def reset(self) -> None:
        with self._lock:
            self._refuse = 0
            self.received.clear()

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if address in r.recipients]

    def _take_refusal(self) -> bool:
        with self._lock:
            if self._refuse > 0:
                self._refuse -= 1
                return True
            return False

    def _store(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)
