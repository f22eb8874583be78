"""A subscriber's server for tests, in Python: every delivery's signature
verified with the ``standardwebhooks`` library (a second language checking
the TypeScript service), what arrived counted by ``webhook-id``."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Receiver:
    """What a subscriber's server saw: deliveries by ``webhook-id``, each
    verified with the endpoint's secret, and what it answered."""

    secret: str = ""
    status: int = 200
    hang: threading.Event | None = None  # set: answer; unset: hold the request
    verified: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: int = 0
    arrived: int = 0  # requests received, held ones included
    attempts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def take(self, headers: dict[str, str], body: bytes) -> int:
        try:
            event = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            with self.lock:
                self.refused += 1
            return 400
        with self.lock:
            self.attempts[headers["webhook-id"]] += 1
            if self.status < 300:
                self.verified.setdefault(headers["webhook-id"], event)
            return self.status

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.verified.values() if e["type"] == kind]


@contextlib.contextmanager
def receiving(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with receiver.lock:
                receiver.arrived += 1
            if receiver.hang is not None:
                receiver.hang.wait(30)
            status = receiver.take({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        if receiver.hang is not None:
            receiver.hang.set()
        server.shutdown()
        server.server_close()
