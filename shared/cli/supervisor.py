"""``linkflow up``: embedded servers (unless URLs are given), migrate, then
every service as its own process, restarted with a growing delay if it dies."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from shared import node, roster
from shared.backoff import Backoff
from shared.cli import permissions, roles
from shared.cli.migrate import database_settings, migrate_all, own_database
from shared.cli.probe import not_ready
from shared.cli.process import Process
from shared.cli.servers import NatsServer, PostgresServer, free_port, port_open, write_private
from shared.http import keys
from shared.jetstream import bus
from shared.priority import background_group
from shared.settings import Common, load
from shared.urls import redact

# The services' packages (a source checkout: the TypeScript one runs from it).
SERVICES_DIR = Path(__file__).parents[2] / "services"
# A service that ran this long before dying starts again after the shortest delay.
HEALTHY_AFTER = 60.0
# A nice service is lowered once it answers /readyz, or this long after its
# start if it never does: what it does meanwhile at linkflow up's priority
# (a worker retrying a database that is away) is bounded too.
LOWERED_WITHIN = 30.0
RESTART = Backoff(initial=1.0, cap=30.0)
# Stopped in this order: the gateway first (shared.roster).
SERVICES = tuple(s.name for s in roster.ALL)
# After this long without every service ready, say which are not and why.
NOT_READY_AFTER = 60.0
# The embedded PostgreSQL's superuser: migrate's alone (the services' roles: shared.cli.roles).
PG_OWNER = "postgres"


def command(service: roster.Service, env: dict[str, str]) -> list[str]:
    """How ``service`` runs: ``python -m services.<name>``, or for a
    TypeScript service, the install's Node on its entry point, its npm
    packages installed first from its lock file (once)."""
    if service.runtime == "node":
        package = SERVICES_DIR / service.name
        node.npm_ci(package, env)
        return [str(node.NODE), str(package / "src" / "main.ts")]
    return [sys.executable, "-m", f"services.{service.name}"]


class Child(Process):
    """A service under ``linkflow up``, as :func:`command` runs it."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path | None) -> None:
        super().__init__(log_path)
        self.name = name
        self.env = env
        self.started = 0.0
        self.failures = 0
        self.restarts = 0
        self.restart_at: float | None = None
        self.exits: list[int] = []  # the status of each exit on its own
        # A nice service yields the CPU once it answers /readyz
        # (shared.cli.process.Process.to_background).
        self.settling = False

    def start(self) -> None:
        service = next(s for s in roster.ALL if s.name == self.name)
        # Before the spawn: the watch thread and tests read these once the
        # process is there.
        self.started = time.monotonic()
        self.settling = service.nice > 0
        self.restart_at = None
        self.spawn(command(service, self.env), self.env, nice=service.nice)


def _say(text: str) -> None:
    print(f"linkflow: {text}", flush=True)


def _port(preferred: int) -> int:
    return preferred if not port_open(preferred) else free_port()


class Supervisor:
    def __init__(
        self,
        home: Path,
        services: tuple[str, ...] = SERVICES,
        log_to_files: bool = False,
    ) -> None:
        self.home = home
        self.services = services
        self.log_to_files = log_to_files
        self.nats: NatsServer | None = None
        self.pg: PostgresServer | None = None
        self.children: list[Child] = []
        self._stopping = False
        self._ports: dict[str, str] = {}
        self._started = 0.0
        # Until every service has answered /readyz: those that have not yet
        # (one that exits meanwhile is asked again), each with why not when
        # last asked.
        self._unready: dict[str, str] = {}
        self._settle_turn = 0
        # What was said: seconds from the start until every service was
        # ready, and the services not ready after NOT_READY_AFTER.
        self.ready_after: float | None = None
        self.not_ready: dict[str, str] = {}

    def start(self) -> dict[str, str]:
        # Its setting read now: a mistake in it stops linkflow up before
        # anything started, not when the first worker is ready.
        background_group()
        env = dict(os.environ)
        own_users = "LINKFLOW_NATS_URL" not in env
        if own_users:
            passwords = nats_passwords(self.home)
            self.nats = NatsServer(
                self.home / "nats", _port(4222), config=permissions.authorization(passwords)
            ).start()
            urls = {u: _as_user(self.nats.url, u, passwords[u]) for u in permissions.USERS}
            env["LINKFLOW_NATS_URL"] = urls[permissions.ADMIN]
            for name in permissions.SERVICES:
                env[f"LINKFLOW_{name.upper()}_NATS_URL"] = urls[name]
            write_private(self.home / "nats-admin.url", urls[permissions.ADMIN] + "\n")
            _say(
                f"embedded NATS at {self.nats.url} (store {self.nats.store_dir}); "
                f"a user per service, passwords in {self.home / 'nats-passwords.json'}"
            )
        # The database URLs linkflow up made, as the owner's (setting -> URL),
        # and its roles' passwords: each service gets its own role's URL.
        owned: dict[str, str] = {}
        role_passwords: dict[str, str] = {}
        if "LINKFLOW_DATABASE_URL" not in env:
            role_passwords = pg_passwords(self.home)
            # Mostly the workers' (the gateway reads it for a link not in
            # its cache, and for its API): it yields the CPU with them.
            self.pg = PostgresServer(
                self.home / "pg",
                _port(5432),
                nice=roster.BACKGROUND,
                password=role_passwords[PG_OWNER],
            ).start()
            owned["LINKFLOW_DATABASE_URL"] = self.pg.url("linkflow")
            if "LINKFLOW_ANALYTICS_DATABASE_URL" not in env:
                owned["LINKFLOW_ANALYTICS_DATABASE_URL"] = self.pg.url("linkflow_analytics")
            if "LINKFLOW_WEBHOOKS_DATABASE_URL" not in env:
                owned["LINKFLOW_WEBHOOKS_DATABASE_URL"] = self.pg.url("linkflow_webhooks")
            env.update(owned)
            # Migrate sets each role's password.
            env.update({roles.password_variable(s): role_passwords[s] for s in roles.SERVICES})
            write_private(self.home / "postgres.url", owned["LINKFLOW_DATABASE_URL"] + "\n")
            _say(
                f"embedded PostgreSQL at {redact(owned['LINKFLOW_DATABASE_URL'])} "
                f"(data {self.pg.data_dir}); a role per service, passwords in "
                f"{self.home / 'pg-passwords.json'}"
            )
        # The webhooks service reads its own database's URL, and only that.
        env.setdefault(
            "LINKFLOW_WEBHOOKS_DATABASE_URL",
            own_database(load(Common, environ=env), roster.WEBHOOKS.name),
        )
        for service in roster.ALL:
            env.setdefault(f"LINKFLOW_{service.name.upper()}_PORT", str(service.port))
        env.setdefault("LINKFLOW_LINK_SPOOL_DIR", str(self.home / "spool" / "link"))
        # The gateway's, the web app's and the webhooks API's URLs follow the
        # ports chosen: the app calls the gateway's API and the webhooks
        # API, which allow the app's origin only.
        env.setdefault("LINKFLOW_PUBLIC_URL", f"http://127.0.0.1:{env['LINKFLOW_LINK_PORT']}")
        env.setdefault("LINKFLOW_APP_URL", f"http://127.0.0.1:{env['LINKFLOW_ANALYTICS_PORT']}")
        env.setdefault("LINKFLOW_WEBHOOKS_URL", f"http://127.0.0.1:{env['LINKFLOW_WEBHOOKS_PORT']}")
        env.setdefault(
            "LINKFLOW_CLICK_RECORDER_URL",
            f"http://127.0.0.1:{env['LINKFLOW_CLICK_RECORDER_PORT']}",
        )
        asyncio.run(migrate_all(env))
        _say("migrated: tables, streams, consumers, KV buckets")
        self._admin_key(env)
        self._ports = {n: env[f"LINKFLOW_{n.upper()}_PORT"] for n in self.services}
        self._unready = dict.fromkeys(self.services, "not asked yet")
        self._started = time.monotonic()
        for name in self.services:
            log = self.home / f"{name}.log" if self.log_to_files else None
            child_env = _child_env(env, name) if own_users else env
            if owned:
                child_env = _database_env(child_env, name, owned, role_passwords[name])
            child = Child(name, child_env, log)
            child.start()
            self.children.append(child)
        gateway = env["LINKFLOW_PUBLIC_URL"]
        app = env["LINKFLOW_APP_URL"].split(",")[0].rstrip("/")
        _say(f"{'web app':<15} {app}/app/  (sign in with an API key)")
        _say(f"{'gateway':<15} {gateway}  (API /api/links, docs /api/docs)")
        for name in self.services[1:]:
            port = env[f"LINKFLOW_{name.upper()}_PORT"]
            where = {
                "analytics": "/api/docs",
                "webhooks": "/api/webhooks",
                "click_recorder": "/api/docs",  # its clicks' export, GET /api/clicks
            }.get(name, "/metrics")
            _say(f"{name:<15} http://127.0.0.1:{port}{where}")
        return env

    @property
    def admin_key_path(self) -> Path:
        return self.home / "admin.key"

    def _admin_key(self, env: dict[str, str]) -> None:
        """The first start mints the ``admin`` key, prints it once and keeps
        it in ``admin.key`` (owner-only) for the README's examples."""
        path = self.admin_key_path
        if not load(Common, environ=env).auth:
            _say("LINKFLOW_AUTH=off: no API key is checked; anyone can change every link")
            return
        if path.exists():
            _say(f"admin API key in {path}")
            return
        try:
            key = asyncio.run(_create_admin_key(env))
        except keys.KeyExists:
            _say(f"an 'admin' key exists but {path} does not: `linkflow keys create NAME`")
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
        _say(f"admin API key (shown once, kept in {path}):")
        print(key, flush=True)

    def watch(self) -> None:
        """Restart children that exit on their own until asked to stop."""
        while not self._stopping:
            now = time.monotonic()
            for child in self.children:
                code = child.returncode
                if code is not None:
                    child.stop()
                    child.failures = (
                        1 if now - child.started > HEALTHY_AFTER else child.failures + 1
                    )
                    delay = RESTART.delay(child.failures)
                    child.restart_at = now + delay
                    _say(f"{child.name} exited with {code}; restarting in {delay:.0f}s")
                    child.exits.append(code)
                    if self.ready_after is None:  # to be asked again (its exits are said)
                        self._unready.setdefault(child.name, "restarting")
                elif child.proc is None and child.restart_at and now >= child.restart_at:
                    child.restarts += 1
                    child.start()
            asked = bool(self._unready)
            if asked:
                self._readiness(now)
            try:
                # One /readyz asked a pass at most, by either.
                self.settle(probe=not asked)
            except Exception as exc:  # one child left as it is, not every child stopped
                _say(f"could not lower a service's CPU priority: {exc!r}")
            time.sleep(0.2)

    def settle(self, probe: bool = True) -> int:
        """Lower each started nice service that started LOWERED_WITHIN ago,
        and, with ``probe``, the next one that answers /readyz (one asked a
        call, as :meth:`_readiness` asks); how many are still to lower. A
        service that keeps exiting sooner than that is never lowered: it
        does little at any priority."""
        now = time.monotonic()
        for child in self.children:
            if child.settling and child.running and now - child.started > LOWERED_WITHIN:
                child.settling = False
                child.to_background()
        settling = [c for c in self.children if c.settling and c.running]
        if not settling or not probe:
            return len(settling)
        child = settling[self._settle_turn % len(settling)]
        self._settle_turn += 1
        if not_ready(self._ports[child.name]) is None:
            child.settling = False
            child.to_background()
            return len(settling) - 1
        return len(settling)

    def _readiness(self, now: float) -> None:
        """Ask the next service not yet ready; say once when none is left,
        and once, after NOT_READY_AFTER, which are and why (their ``/readyz``
        reasons). One per pass, so that a slow answer (half a second at
        most) holds up no restart or stop for longer."""
        name = next(iter(self._unready))
        reason = not_ready(self._ports[name])
        del self._unready[name]
        if reason is not None:
            self._unready[name] = reason  # and to the back of the queue
        waited = now - self._started
        if not self._unready:
            self.ready_after = waited
            _say(f"ready: every service answers /readyz ({waited:.1f} s after starting them)")
        elif waited >= NOT_READY_AFTER and not self.not_ready:
            exits = {c.name: c.exits for c in self.children}
            for unready, why in self._unready.items():
                codes = exits.get(unready)
                if codes:  # a service that keeps exiting said why in its own log
                    times = "once" if len(codes) == 1 else f"{len(codes)} times"
                    why += f"; it exited {times}, last with status {codes[-1]} (its log says why)"
                self.not_ready[unready] = why
                _say(f"{unready} not ready after {waited:.0f} s: {why}")

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True
        for child in self.children:
            if not child.stop(timeout=20):
                _say(f"{child.name} did not stop in 20s; killed it")
        if self.pg:
            self.pg.stop()
        if self.nats:
            self.nats.stop()


def nats_passwords(home: Path) -> dict[str, str]:
    """The embedded NATS server's password for each user."""
    return _kept_passwords(home / "nats-passwords.json", permissions.USERS)


def pg_passwords(home: Path) -> dict[str, str]:
    """The embedded PostgreSQL's: its superuser's and each service role's."""
    return _kept_passwords(home / "pg-passwords.json", (PG_OWNER, *roles.SERVICES))


def _kept_passwords(path: Path, users: tuple[str, ...]) -> dict[str, str]:
    """A password for each of ``users``: made once, kept owner-only in
    ``path`` (under linkflow up's home) so that a restart keeps them."""
    if path.exists():
        held: dict[str, str] = json.loads(path.read_text())
        if set(held) >= set(users):
            return held
    made = {user: secrets.token_urlsafe(24) for user in users}
    write_private(path, json.dumps(made, indent=2) + "\n")
    return made


def _as_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    where = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{where}"
    return urlunsplit(parts._replace(netloc=netloc))


def _child_env(env: dict[str, str], name: str) -> dict[str, str]:
    """A service's environment holds its own NATS identity and no other."""
    others = {f"LINKFLOW_{u.upper()}_NATS_URL" for u in permissions.SERVICES if u != name}
    return {k: v for k, v in env.items() if k != "LINKFLOW_NATS_URL" and k not in others}


def _database_env(
    env: dict[str, str], name: str, owned: dict[str, str], password: str
) -> dict[str, str]:
    """A service's environment holds its own role's URL to each database it
    has rights in (of those ``linkflow up`` made: ``owned``), and neither
    the owner's URL nor any role's password."""
    hidden = {*owned, *(roles.password_variable(s) for s in roles.SERVICES)}
    child = {k: v for k, v in env.items() if k not in hidden}
    for setting in database_settings(name):
        variable = f"LINKFLOW_{setting.upper()}"
        if variable in owned:
            child[variable] = _as_user(owned[variable], roles.role(name), password)
    return child


async def _create_admin_key(env: dict[str, str]) -> str:
    nc = await bus.connect(env["LINKFLOW_NATS_URL"], "linkflow-up", forever=False)
    try:
        return await keys.create(nc.jetstream(), "admin", (keys.ADMIN,))
    finally:
        await nc.drain()


def up(home: Path) -> int:
    supervisor = Supervisor(home)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    try:
        supervisor.start()
        _say("services started; Ctrl-C stops everything")
        supervisor.watch()
    finally:
        _say("stopping")
        supervisor.stop()
    _say("stopped")
    return 0
