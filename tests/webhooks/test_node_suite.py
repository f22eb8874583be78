"""The webhooks service's own suite (TypeScript, ``node --test``), run against
a throwaway nats-server and PostgreSQL: the streams as ``linkflow migrate``
makes them, the packages from the lock file, ``tsc --noEmit`` first.

The service connects as NATS user ``webhooks`` with the permissions linkflow
deploys for it (shared.cli.permissions): a missing one fails the suite, and
the server must log no permission violation. The suite itself connects as
an admin user to publish events and inspect streams. Part of `just test`:
the service is linkflow's as much as the Python ones are."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from pathlib import Path

import nats
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import NotFoundError

from shared import node
from shared.cli.servers import NatsServer, PostgresServer
from shared.jetstream import topology
from shared.jetstream.topology import streams
from tests.webhooks.service import SERVICE, nats_config


async def _topology(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for config in streams(7 * 86400):
            try:
                await js.stream_info(config.name)  # type: ignore[arg-type]
            except NotFoundError:
                await js.add_stream(config)
            else:
                await js.update_stream(config)
        for bucket in (topology.KV_KEYS, topology.KV_USAGE, topology.KV_LINKS):
            await js.create_key_value(
                KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE)
            )
    finally:
        await nc.close()


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=SERVICE, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_webhooks_node_suite(tmp_path: Path) -> None:
    admin, webhooks = secrets.token_hex(16), secrets.token_hex(16)
    nats_server = NatsServer(tmp_path / "nats", config=nats_config(admin, webhooks)).start()
    pg = PostgresServer(tmp_path / "pg" / "data", durable=False).start()
    try:
        host = f"127.0.0.1:{nats_server.port}"
        asyncio.run(_topology(f"nats://admin:{admin}@{host}"))
        node.npm_ci(SERVICE, os.environ)
        env = node.env(os.environ)
        env["LINKFLOW_TEST_NATS_URL"] = f"nats://admin:{admin}@{host}"
        env["LINKFLOW_TEST_WEBHOOKS_NATS_URL"] = f"nats://webhooks:{webhooks}@{host}"
        env["LINKFLOW_TEST_DATABASE_URL"] = pg.url("postgres")
        env["WEBHOOKS_TEST_VERBOSE"] = "1"  # the services' log lines, shown on failure

        tsc = _run([str(node.NODE), "node_modules/typescript/bin/tsc", "--noEmit"], env, 180)
        assert tsc.returncode == 0, f"tsc --noEmit failed:\n{tsc.stdout}\n{tsc.stderr}"

        # A test past its deadline fails, and the runner exits even when a
        # failed test left a service process or a socket behind.
        suite = _run(
            [str(node.NODE), "--test", "--test-concurrency=1", "--test-timeout=120000",
             "--test-force-exit", "test/*.test.ts"],
            env,
            600,
        )  # fmt: skip
        output = f"{suite.stdout}\n{suite.stderr}"
        assert suite.returncode == 0, f"node --test failed:\n{output[-20000:]}"
        assert "\N{INFORMATION SOURCE} fail 0" in suite.stdout, output[-5000:]
        assert "\N{INFORMATION SOURCE} skipped 0" in suite.stdout, (
            f"integration tests skipped:\n{output[-5000:]}"
        )
        assert "integration test: set" not in suite.stdout, f"suites skipped:\n{output[-5000:]}"
        log = nats_server.log_path.read_text() if nats_server.log_path else ""
        violations = [line for line in log.splitlines() if "Violation" in line]
        assert not violations, "\n".join(violations[:20])
    finally:
        pg.stop()
        nats_server.stop()
