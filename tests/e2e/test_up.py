"""linkflow as ``linkflow up`` runs it: every service its own process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from shared import roster
from shared.cli.servers import free_port
from shared.cli.supervisor import Supervisor, command
from shared.priority import BACKGROUND_CGROUP, background_group, cpu_group
from tests.e2e.conftest import gateway_url, ready
from tests.harness import count, eventually, key_header, soon

pytestmark = pytest.mark.e2e


async def test_thousand_redirects_through_processes(linkflow: Supervisor, db_url: str) -> None:
    url = gateway_url()
    await eventually(lambda: ready(url), 30, "gateway ready")
    async with httpx.AsyncClient(base_url=url, headers=key_header(linkflow.home)) as client:
        r = await client.post("/api/links", json={"url": "https://example.com", "code": "e2e"})
        assert r.status_code == 201
        limits = asyncio.Semaphore(50)

        async def one() -> int:
            async with limits:
                return (await client.get("/e2e")).status_code

        statuses = await asyncio.gather(*(one() for _ in range(1000)))
    assert statuses.count(302) == 1000

    async def recorded() -> bool:
        return await count(db_url, "SELECT count(*) FROM clicks") >= 1000

    await eventually(recorded, 60, "1000 rows")
    assert await count(db_url, "SELECT count(DISTINCT id) FROM clicks") == 1000


async def test_dead_service_is_restarted(linkflow: Supervisor, db_url: str) -> None:
    recorder = next(c for c in linkflow.children if c.name == "click_recorder")
    assert recorder.proc is not None
    first_pid = recorder.proc.pid
    os.kill(first_pid, signal.SIGKILL)

    async def restarted() -> bool:
        return (
            recorder.restarts == 1 and recorder.proc is not None and recorder.proc.pid != first_pid
        )

    await eventually(restarted, 30, "the click-recorder to be restarted")
    # Started at the supervisor's priority, then lowered once ready.
    await eventually(soon(lambda: not recorder.settling), 60, "the restarted recorder lowered")
    assert os.getpriority(os.PRIO_PROCESS, recorder.pid) == min(
        os.getpriority(os.PRIO_PROCESS, 0) + roster.BACKGROUND, 19
    )
    if background_group() is not None:
        assert cpu_group(recorder.pid) == f"/{BACKGROUND_CGROUP}"
    url = gateway_url()
    await eventually(lambda: ready(url), 30, "gateway ready")
    async with httpx.AsyncClient(base_url=url, headers=key_header(linkflow.home)) as client:
        await client.post("/api/links", json={"url": "https://example.com", "code": "again"})
        assert (await client.get("/again")).status_code == 302
    await eventually(
        lambda: count(db_url, "SELECT count(*) FROM clicks"),
        30,
        "the click recorded by the restarted recorder",
    )


async def test_sigterm_stops_every_service_with_exit_0(linkflow: Supervisor) -> None:
    # Every service past its start (the workers, at a low CPU priority, start
    # last on a busy machine), so that each stops gracefully, not as
    # "stopped while starting" (the test below).
    for s in roster.ALL:
        url = f"http://127.0.0.1:{os.environ[f'LINKFLOW_{s.name.upper()}_PORT']}"
        await eventually(lambda u=url: ready(u), 60, f"{s.label} ready")
    procs = [c.proc for c in linkflow.children]
    await asyncio.to_thread(linkflow.stop)
    assert [p.returncode if p else None for p in procs] == [0] * len(linkflow.services)


async def test_up_says_when_every_service_is_ready(
    linkflow: Supervisor, capsys: pytest.CaptureFixture[str]
) -> None:
    await eventually(soon(lambda: linkflow.ready_after is not None), 90, "ready said")
    # Read once it was said (the watcher thread prints; reading while it
    # writes could lose a line).
    assert "linkflow: ready: every service answers /readyz" in capsys.readouterr().out
    for s in roster.ALL:  # said only once each one was: all still are
        assert await ready(f"http://127.0.0.1:{os.environ[f'LINKFLOW_{s.name.upper()}_PORT']}")
    assert linkflow.not_ready == {}


@pytest.mark.parametrize("linkflow", [{"LINKFLOW_CLICK_RECORDER_LINGER": "soon"}], indirect=True)
async def test_up_says_which_service_is_not_ready_and_why(
    linkflow: Supervisor, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A setting the click-recorder refuses: it exits at each start, and
    ``linkflow up`` names it rather than saying "ready"."""
    # Said once every other service is ready and the recorder has exited at
    # least once (on a loaded machine either took over 8 s): the line is said
    # once, at NOT_READY_AFTER, which the supervisor reads on each pass.
    recorder = next(c for c in linkflow.children if c.name == "click_recorder")
    await eventually(
        soon(lambda: set(linkflow._unready) == {"click_recorder"}), 90, "the others ready"
    )
    await eventually(soon(lambda: recorder.restarts >= 1), 60, "a restart")
    monkeypatch.setattr("shared.cli.supervisor.NOT_READY_AFTER", 0.0)
    await eventually(soon(lambda: bool(linkflow.not_ready)), 60, "the not-ready line")
    out = capsys.readouterr().out
    port = os.environ["LINKFLOW_CLICK_RECORDER_PORT"]
    why = out.split("linkflow: click_recorder not ready after", 1)[1].splitlines()[0]
    assert f"not answering on port {port} (Connection refused); it exited " in why, why
    assert why.endswith(", last with status 2 (its log says why)"), why
    assert "click_recorder exited with 2" in out  # a settings error's status
    assert set(linkflow.not_ready) == {"click_recorder"}
    assert linkflow.ready_after is None
    assert "ready: every service" not in out


@pytest.mark.parametrize("service", roster.ALL, ids=lambda s: s.name)
async def test_sigterm_while_a_service_waits_for_nats_exits_0(service: roster.Service) -> None:
    """A service started before NATS (or PostgreSQL) answers, then stopped:
    it exits at once with 0, not by the signal, nor after a kill."""
    with socket.socket() as silent:  # accepts, then never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.settimeout(60)
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        env = {
            **os.environ,
            "LINKFLOW_NATS_URL": f"nats://{url}",
            "LINKFLOW_DATABASE_URL": f"postgresql://linkflow@{url}/linkflow",
            "LINKFLOW_ANALYTICS_DATABASE_URL": f"postgresql://linkflow@{url}/linkflow",
            f"LINKFLOW_{service.name.upper()}_PORT": str(free_port()),
        }
        proc = subprocess.Popen(
            command(service, env),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            # Connected to the silent server: the service is in its start.
            conn, _ = await asyncio.to_thread(silent.accept)
            with conn:  # open until it exits: no EOF to move it on
                proc.send_signal(signal.SIGTERM)
                out, _ = await asyncio.to_thread(proc.communicate, timeout=10)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, out.decode()
    assert b"stopped while starting" in out or b"SIGTERM: shutting down" in out, out.decode()


def log_lines(home: Path, service: str) -> list[dict[str, object]]:
    """The JSON lines a service wrote (under linkflow up, to <home>/<service>.log)."""
    lines = (home / f"{service}.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.parametrize("linkflow", [{"LINKFLOW_LOG_LEVEL": "DEBUG"}], indirect=True)
async def test_one_request_id_is_followed_through_every_log(
    linkflow: Supervisor, db_url: str
) -> None:
    url = gateway_url()
    await eventually(lambda: ready(url), 30, "gateway ready")
    rid = f"trace-{os.urandom(6).hex()}"
    async with httpx.AsyncClient(base_url=url, headers=key_header(linkflow.home)) as client:
        r = await client.post("/api/links", json={"url": "https://example.com", "code": "traced"})
        assert r.status_code == 201
        r = await client.get("/traced", headers={"X-Request-Id": rid})
    assert r.status_code == 302
    assert r.headers["x-request-id"] == rid
    home = linkflow.home

    def traced(service: str) -> list[dict[str, object]]:
        return [line for line in log_lines(home, service) if line.get("request_id") == rid]

    async def everywhere() -> bool:
        return all(traced(s) for s in ("link", "click_recorder", "analytics"))

    await eventually(everywhere, 30, f"{rid} in the gateway's, recorder's and analytics' logs")
    assert await count(db_url, f"SELECT count(*) FROM clicks WHERE request_id = '{rid}'") == 1
    for service, label in (("link", "link"), ("click_recorder", "click-recorder")):
        line = traced(service)[0]
        assert line["service"] == label
        assert {"ts", "level", "logger", "msg"} <= set(line)
    # Every line any service wrote is a JSON line (each has written some by
    # the time it is ready).
    await eventually(soon(lambda: linkflow.ready_after is not None), 90, "every service ready")
    for service in linkflow.services:
        text = (home / f"{service}.log").read_text().splitlines()
        assert text
        assert all(line.startswith("{") for line in text), service


async def test_the_work_behind_the_redirect_yields_the_cpu(linkflow: Supervisor) -> None:
    """Under `linkflow up` the workers run at a lower CPU priority than the
    gateway once they are ready, so a spike's redirects do not wait on the
    backlog behind them."""
    await eventually(
        soon(lambda: not any(c.settling for c in linkflow.children)), 60, "every worker lowered"
    )
    own = os.getpriority(os.PRIO_PROCESS, 0)
    for child in linkflow.children:
        service = next(s for s in roster.ALL if s.name == child.name)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(own + service.nice, 19)
    niceness = {c.name: os.getpriority(os.PRIO_PROCESS, c.pid) - own for c in linkflow.children}
    assert niceness["link"] == 0
    # Capped at 19 when the tests themselves run niced.
    background = min(own + roster.BACKGROUND, 19) - own
    assert niceness["click_recorder"] == niceness["analytics"] == background
    # Each is its session's scheduling autogroup, and a group's own nice is
    # what ranks it against the gateway's group.
    if Path("/proc/self/autogroup").exists():
        for child in linkflow.children:
            group = Path(f"/proc/{child.pid}/autogroup").read_text().split()
            service = next(s for s in roster.ALL if s.name == child.name)
            assert group[-2:] == ["nice", str(service.nice)], (child.name, group)
    # Where linkflow may make the idle-class cgroup (on by default): each
    # nice service joins it once it answers /readyz; the gateway never.
    if background_group() is not None:
        nice = {s.name for s in roster.ALL if s.nice > 0}
        for child in linkflow.children:
            assert (cpu_group(child.pid) == f"/{BACKGROUND_CGROUP}") == (child.name in nice)
