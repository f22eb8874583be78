"""How ``linkflow up`` and the system bench ask a service whether it is
ready, and how ``linkflow up`` says it (shared.cli.probe, shared.cli.supervisor)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from shared import roster
from shared.cli.probe import not_ready
from shared.cli.servers import free_port
from shared.cli.supervisor import Child, Supervisor


class _Readyz(BaseHTTPRequestHandler):
    reasons: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        body = json.dumps(
            {"status": "not ready" if self.reasons else "ready", "reasons": self.reasons}
        ).encode()
        self.send_response(503 if self.reasons else 200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def readyz() -> Iterator[tuple[int, type[_Readyz]]]:
    handler = type("Readyz", (_Readyz,), {"reasons": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_not_ready_gives_the_services_own_reasons(
    readyz: tuple[int, type[_Readyz]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, handler = readyz
    # Asked directly, whatever proxy the environment names.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    assert not_ready(port) is None
    handler.reasons = {"nats": "not connected", "database": "timed out"}
    assert not_ready(port) == "nats: not connected; database: timed out"
    closed = free_port()
    assert not_ready(closed) == f"not answering on port {closed} (Connection refused)"


def test_up_names_a_service_not_ready_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = free_port()
    sup = Supervisor(tmp_path, services=("link",))
    sup._ports, sup._unready, sup._started = {"link": str(closed)}, {"link": "not asked"}, 0.0
    sup._readiness(30.0)  # before NOT_READY_AFTER: nothing said yet
    assert capsys.readouterr().out == ""
    for now in (61.0, 62.0, 63.0):  # the watch loop asks again and again
        sup._readiness(now)
    assert capsys.readouterr().out == (
        f"linkflow: link not ready after 61 s: not answering on port {closed} "
        "(Connection refused)\n"
    )
    assert sup.not_ready == {"link": f"not answering on port {closed} (Connection refused)"}
    assert sup.ready_after is None


# wait-ok: a child that stands for a service, not a wait.
SLEEPER = [sys.executable, "-c", "import time; time.sleep(30)"]


def test_a_worker_is_lowered_once_ready_or_once_overdue(
    tmp_path: Path, readyz: tuple[int, type[_Readyz]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A nice service starts at linkflow up's priority and is lowered once
    its /readyz answers, or LOWERED_WITHIN after its start if it never does."""
    port, handler = readyz
    own = os.getpriority(os.PRIO_PROCESS, 0)
    if own > 0:
        pytest.skip("the tests run niced: a lowered process would look the same")
    sup = Supervisor(tmp_path, services=("click_recorder", "analytics"))
    answering, silent = Child("click_recorder", {}, None), Child("analytics", {}, None)
    sup._ports = {"click_recorder": str(port), "analytics": str(free_port())}
    for child in (answering, silent):
        child.spawn(SLEEPER, nice=roster.BACKGROUND)
        child.started, child.settling = time.monotonic(), True
        sup.children.append(child)
    try:
        handler.reasons = {"nats": "not connected"}
        assert [sup.settle() for _ in range(4)] == [2, 2, 2, 2]
        handler.reasons = {}
        assert sup.settle() == 1  # the ready one, asked in its turn
        assert os.getpriority(os.PRIO_PROCESS, answering.pid) == min(own + roster.BACKGROUND, 19)
        assert os.getpriority(os.PRIO_PROCESS, silent.pid) == own
        assert sup.settle() == 1  # the silent one: not ready, not overdue
        monkeypatch.setattr("shared.cli.supervisor.LOWERED_WITHIN", 0.0)
        assert sup.settle() == 0
        assert os.getpriority(os.PRIO_PROCESS, silent.pid) == min(own + roster.BACKGROUND, 19)
    finally:
        for child in (answering, silent):
            child.stop()
