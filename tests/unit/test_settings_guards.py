"""Settings are read once, by the loader (shared.settings): no service or
shared module reads the environment past it, `linkflow probe` finds the
services' ports the way the services do, and a shared library raises its own
errors for the command line to word."""

from __future__ import annotations

import ast
import importlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeGuard

import pytest

from shared import roster, settings
from shared.cli import probe
from shared.cli.servers import free_port
from shared.errors import CommandError
from shared.jetstream import bus
from shared.settings import Listen, SettingsError, load

ROOT = Path(__file__).resolve().parents[2]
# The command line (and its benchmark lab) starts processes: it may hand its
# environment on to them or set variables in it, but not read a setting.
COMPOSERS = ("shared/cli/", "shared/bench/")
_OS_ENV = {"environ", "environb", "getenv", "getenvb"}


def _is_os_env(node: ast.AST) -> TypeGuard[ast.Attribute]:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
        and node.attr in _OS_ENV
    )


def _key(node: ast.AST | None) -> str:
    """A variable's name as written: a string, the start of an f-string, or '?'."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value + "..."
    return "?"


def environment_reads(source: str, path: str) -> list[str]:
    """Where the module at ``path`` (from the repository's root) touches the
    environment (outside the command line), or reads a LINKFLOW_ variable
    from it (in the command line)."""
    composer = path.startswith(COMPOSERS)
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        where = f"{path}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{where} imports os.{a.name}" for a in node.names if a.name in _OS_ENV]
        if not composer:
            if _is_os_env(node):
                found.append(f"{where} uses os.{node.attr}")
            continue
        key = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if (_is_os_env(node.func.value) and node.func.attr == "get") or _is_os_env(node.func):
                key = _key(node.args[0] if node.args else None)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if _is_os_env(node.value):
                key = _key(node.slice)
        elif isinstance(node, ast.Compare) and any(_is_os_env(c) for c in node.comparators):
            key = _key(node.left)
        if key is not None and (key == "?" or key.startswith("LINKFLOW")):
            found.append(f"{where} reads {key} from os.environ")
    return found


def test_nothing_reads_the_environment_past_the_loader() -> None:
    found = [
        line
        for top in ("services", "shared")
        for path in sorted((ROOT / top).rglob("*.py"))
        if path != ROOT / "shared/settings.py"
        for line in environment_reads(path.read_text(), path.relative_to(ROOT).as_posix())
    ]
    assert not found, found


def test_the_guard_sees_a_read() -> None:
    """The guard itself: each way of reading a setting is caught; handing
    the environment on or setting a variable in it is not a read."""
    command = (
        "import os\n"
        "a = os.environ.get('LINKFLOW_X')\n"
        "b = os.environ[f'LINKFLOW_{a}_PORT']\n"
        "c = 'LINKFLOW_Y' not in os.environ\n"
        "d = os.getenv('LINKFLOW_Z', '')\n"
        "e = dict(os.environ)\n"
        "f = os.environ.get('GOMAXPROCS')\n"
        "os.environ['LINKFLOW_W'] = '1'\n"
    )
    assert [line.split(" ", 1)[1] for line in environment_reads(command, "shared/cli/x.py")] == [
        "reads LINKFLOW_X from os.environ",
        "reads LINKFLOW_... from os.environ",
        "reads LINKFLOW_Y from os.environ",
        "reads LINKFLOW_Z from os.environ",
    ]
    assert environment_reads("import os\nport = os.environ.get('PORT')\n", "shared/x.py") == [
        "shared/x.py:2 uses os.environ"
    ]
    assert environment_reads("from os import getenv\n", "services/x.py") == [
        "services/x.py:1 imports os.getenv"
    ]


def test_every_service_listens_where_the_probe_looks() -> None:
    """The probe's ports are the services' own: each service's Settings
    extends Listen, and both read LINKFLOW_<SERVICE>_PORT, then LINKFLOW_PORT.
    A TypeScript service's own settings are asked through Node."""
    from tests.unit.test_deploy import service_port

    for s in roster.ALL:
        if s.runtime == "node":
            # Its settings read LINKFLOW_<SERVICE>_PORT alone, not yet the
            # shared LINKFLOW_PORT the probe also honours.
            for env in ({}, {f"LINKFLOW_{s.name.upper()}_PORT": "7002"}):
                assert settings.port(s, env) == service_port(s, env), (s.name, env)
            assert settings.port(s, {}) == s.port
            continue
        cls = importlib.import_module(f"services.{s.name}.settings").Settings
        assert issubclass(cls, Listen)
        for env in ({}, {"LINKFLOW_PORT": "7001"}, {f"LINKFLOW_{s.name.upper()}_PORT": "7002"}):
            assert settings.port(s, env) == load(cls, s.name, env).port
        assert settings.port(s, {}) == s.port


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def healthz() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_probe_asks_the_port_its_settings_give(
    healthz: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = free_port()
    # Whatever the environment says, the settings given are what is asked.
    monkeypatch.setenv("LINKFLOW_CLICK_RECORDER_PORT", str(closed))
    ports = probe.ports("click_recorder", {"LINKFLOW_CLICK_RECORDER_PORT": str(healthz)})
    assert ports == {"click_recorder": healthz}
    assert probe.probe("click_recorder", ports) == 0
    assert capsys.readouterr().out == f"linkflow probe: click_recorder healthy on :{healthz}\n"
    assert probe.probe("click_recorder", {"click_recorder": closed}) == 1
    assert capsys.readouterr().out == "linkflow probe: no healthy click_recorder on this host\n"


def test_the_probe_reads_the_environment_through_the_loader(
    healthz: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # LINKFLOW_PORT is the shared fallback the services honour: so does the probe.
    monkeypatch.delenv("LINKFLOW_CACHE_REFRESHER_PORT", raising=False)
    monkeypatch.setenv("LINKFLOW_PORT", str(healthz))
    assert probe.probe("cache_refresher") == 0
    assert f"healthy on :{healthz}" in capsys.readouterr().out
    monkeypatch.setenv("LINKFLOW_CACHE_REFRESHER_PORT", "91o3")
    with pytest.raises(SettingsError) as exc:
        probe.probe("cache_refresher")
    assert str(exc.value) == "LINKFLOW_CACHE_REFRESHER_PORT='91o3' is not a whole number"


def test_the_bus_raises_its_own_error_not_the_commands() -> None:
    # The bus is shared by services that know nothing of the command: its
    # error is its own, and the command turns it into its one line (below,
    # through a real refused connection).
    assert not issubclass(bus.Unreachable, CommandError)
    source = (ROOT / "shared/jetstream/bus.py").read_text()
    assert "CommandError" not in source
    assert "raise Unreachable(" in source


def test_the_command_says_an_unreachable_nats_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.cli.main import main

    url = f"nats://127.0.0.1:{free_port()}"
    monkeypatch.setenv("LINKFLOW_NATS_URL", url)
    assert main(["dlq", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"linkflow dlq: cannot reach NATS at {url}: ")
    assert err.count("\n") == 1, err


def test_a_worker_process_is_run_by_the_runner() -> None:
    """serve_worker lives with the other service runners, not in shared/http."""
    from shared import runner
    from shared.http import serve

    assert callable(runner.serve_worker)
    assert callable(runner.run_service)
    assert not hasattr(serve, "serve_worker")
    source = (ROOT / "services/cache_refresher/__main__.py").read_text()
    assert "from shared.runner import run_service, serve_worker" in source
    # The click-recorder serves an API (its clicks' export): an HTTP service's runner.
    source = (ROOT / "services/click_recorder/__main__.py").read_text()
    assert "from shared.runner import run_service, serve\n" in source
