"""A stolen service identity, tried against a real nats-server running the
generated per-user rules on buckets and streams as ``linkflow migrate``
makes them: it cannot publish another service's links.* events, roll up a
bucket or stream, or purge or delete a stream it does not own. Each refusal
is also shown to fail with the right given back (``regranted``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from shared.cli import permissions
from shared.cli.servers import NatsServer
from shared.cli.supervisor import nats_passwords
from shared.contracts import LinkEntry, encode
from shared.jetstream import topology
from shared.settings import WorkerSettings
from tests.harness import eventually

Rules = dict[str, dict[str, list[str]]]
ROLLUP = {"Nats-Rollup": "all"}
# Rollups are refused by the stream, not the user: "rollup not permitted".
ROLLUP_NOT_PERMITTED = 10111


@contextlib.contextmanager
def rules_as(rules: Rules) -> Iterator[None]:
    """``permissions.authorization`` rendering ``rules`` instead of the real ones."""
    real = permissions.permissions
    permissions.permissions = lambda: rules
    try:
        yield
    finally:
        permissions.permissions = real


class Secured:
    def __init__(self, server: NatsServer, passwords: dict[str, str]) -> None:
        self.server = server
        self.passwords = passwords
        self.errors: dict[str, list[Exception]] = {}

    async def connect(self, user: str) -> Client:
        errors = self.errors[user] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        return await nats.connect(
            f"nats://{user}:{self.passwords[user]}@127.0.0.1:{self.server.port}",
            inbox_prefix=permissions.inbox_prefix(user),
            error_cb=on_error,
        )

    def said_violation(self, user: str, subject: str) -> bool:
        """Whether the server has told ``user`` it may not publish ``subject``."""
        return any(
            # nats-py says it lowercased.
            "permissions violation" in str(e).lower() and subject.lower() in str(e).lower()
            for e in self.errors.get(user, [])
        )

    async def violation(self, user: str, subject: str) -> bool:
        """Whether the server tells ``user`` (within 2 s) it may not publish ``subject``."""

        async def said() -> bool:
            return self.said_violation(user, subject)

        with contextlib.suppress(AssertionError):
            return bool(await eventually(said, 2, f"a violation for {user} on {subject}"))
        return False


@contextlib.asynccontextmanager
async def secured(tmp_path: Path, rules: Rules | None = None) -> AsyncIterator[Secured]:
    """nats-server with the per-user rules (``rules``: others in their
    place), provisioned by the admin identity as ``linkflow migrate`` does."""
    passwords = nats_passwords(tmp_path)
    with rules_as(rules or permissions.permissions()):
        config = permissions.authorization(passwords)
    server = NatsServer(tmp_path / "nats", config=config).start()
    try:
        s = Secured(server, passwords)
        admin = await s.connect(permissions.ADMIN)
        await topology.provision(
            admin.jetstream(), 3600, {c.service: WorkerSettings() for c in topology.CONSUMERS}
        )
        await admin.drain()
        yield s
    finally:
        server.stop()


def regranted(user: str, *subjects: str) -> Rules:
    """The real rules with ``subjects`` given back to ``user``."""
    rules = permissions.permissions()
    rules[user]["publish"] = [*rules[user]["publish"], *subjects]
    rules[user]["deny"] = [d for d in rules[user].get("deny", []) if d not in subjects]
    return rules


async def refused_publish(
    s: Secured, user: str, subject: str, headers: dict[str, str] | None = None
) -> str:
    """Publish to a stream as ``user``: "violation" (the user may not),
    "rollup" (the stream refuses rollups) or "stored"."""
    nc = await s.connect(user)
    try:
        try:
            await nc.jetstream().publish(subject, b"{}", headers=headers, timeout=2)
        except APIError as exc:
            if exc.err_code != ROLLUP_NOT_PERMITTED:
                raise
            return "rollup"
        except nats.errors.TimeoutError:
            assert await s.violation(user, subject)
            return "violation"
        return "stored"
    finally:
        await nc.close()


# ---------------------------------------------------------------------------
# analytics publishes no links.* (it asks the cache-refresher instead)


@pytest.mark.parametrize("subject", ["links.updated", "links.deleted"])
async def test_analytics_cannot_publish_link_events(tmp_path: Path, subject: str) -> None:
    async with secured(tmp_path) as s:
        forged = {"code": "abc", "url": "https://evil.example/", "version": 2**31 - 1}
        nc = await s.connect("analytics")
        try:
            with pytest.raises(nats.errors.TimeoutError):  # no PubAck: never stored
                await nc.jetstream().publish(subject, msgspec.json.encode(forged), timeout=2)
        finally:
            await nc.close()
        assert await s.violation("analytics", subject)
        admin = await s.connect(permissions.ADMIN)
        assert (await admin.jetstream().stream_info(topology.LINKS)).state.messages == 0
        await admin.close()


async def test_with_the_right_given_back_analytics_could_publish_them(tmp_path: Path) -> None:
    async with secured(tmp_path, regranted("analytics", "links.updated")) as s:
        assert await refused_publish(s, "analytics", "links.updated") == "stored"


# ---------------------------------------------------------------------------
# No writer of a bucket (or stream) can roll it up: the streams refuse it

# Each bucket with the users that may write it, and a stream with its publisher.
WRITERS = [
    ("link", f"$KV.{topology.KV_LINKS}.x"),
    ("cache_refresher", f"$KV.{topology.KV_LINKS}.x"),
    ("analytics", f"$KV.{topology.KV_VISITS}.x"),
    ("link", f"$KV.{topology.KV_SALTS}.x"),
    ("link", f"$KV.{topology.KV_USAGE}.x"),
    ("analytics", f"$KV.{topology.KV_USAGE}.x"),
    ("webhooks", f"$KV.{topology.KV_USAGE}.x"),
    ("link", "clicks.x"),
    ("click_recorder", "dlq.CLICKS.click-recorder"),
]


async def fill(s: Secured) -> dict[str, int]:
    """Two keys in every bucket and two messages in CLICKS; the count of each."""
    admin = await s.connect(permissions.ADMIN)
    js = admin.jetstream()
    for bucket in topology.BUCKETS:
        kv = await js.key_value(bucket)
        for key in ("a", "b"):
            await kv.put(key, encode(LinkEntry(url=f"https://{key}.example/")))
    for _ in range(2):
        await js.publish("clicks.x", b"{}")
    await js.publish("dlq.CLICKS.click-recorder", b"{}")
    held = {}
    for stream in (*(f"KV_{b}" for b in topology.BUCKETS), topology.CLICKS, topology.DLQ):
        held[stream] = (await js.stream_info(stream)).state.messages
    await admin.close()
    return held


async def after(s: Secured) -> dict[str, int]:
    admin = await s.connect(permissions.ADMIN)
    js = admin.jetstream()
    held = {}
    for stream in (*(f"KV_{b}" for b in topology.BUCKETS), topology.CLICKS, topology.DLQ):
        held[stream] = (await js.stream_info(stream)).state.messages
    await admin.close()
    return held


@pytest.mark.parametrize(("user", "subject"), WRITERS)
async def test_no_writer_can_roll_up_what_it_writes(
    tmp_path: Path, user: str, subject: str
) -> None:
    async with secured(tmp_path) as s:
        before = await fill(s)
        assert await refused_publish(s, user, subject, ROLLUP) == "rollup"
        # Its ordinary writes still work, and nothing was wiped.
        assert await refused_publish(s, user, subject) == "stored"
        stream = subject_stream(subject)
        assert await after(s) == {**before, stream: before[stream] + 1}


def subject_stream(subject: str) -> str:
    if subject.startswith("$KV."):
        return f"KV_{subject.split('.')[1]}"
    return topology.DLQ if subject.startswith("dlq.") else topology.CLICKS


async def test_the_gateway_cannot_wipe_kv_links_and_linkflow_kv_still_works(
    tmp_path: Path,
) -> None:
    """The finding itself: one ``Nats-Rollup: all`` from the gateway's
    identity. Refused, every link kept; its own KV writes (create, update,
    delete as linkflow makes them) still go through."""
    async with secured(tmp_path) as s:
        await fill(s)
        nc = await s.connect("link")
        try:
            kv = await nc.jetstream().key_value(topology.KV_LINKS)
            with pytest.raises(APIError) as refused:
                await nc.jetstream().publish(f"$KV.{topology.KV_LINKS}.a", b"", headers=ROLLUP)
            assert refused.value.err_code == ROLLUP_NOT_PERMITTED
            assert sorted(await kv.keys()) == ["a", "b"]
            revision = await kv.create("c", b"1")
            await kv.update("c", b"2", last=revision)
            await kv.delete("b")
            assert sorted(await kv.keys()) == ["a", "c"]
        finally:
            await nc.close()


async def test_with_rollups_given_back_the_gateway_could_wipe_kv_links(tmp_path: Path) -> None:
    async with secured(tmp_path) as s:
        await fill(s)
        admin = await s.connect(permissions.ADMIN)
        info = await admin.jetstream().stream_info(f"KV_{topology.KV_LINKS}")
        config: StreamConfig = info.config
        config.allow_rollup_hdrs = True
        await admin.jetstream().update_stream(config)
        await admin.close()
        assert await refused_publish(s, "link", f"$KV.{topology.KV_LINKS}.x", ROLLUP) == "stored"
        assert (await after(s))[f"KV_{topology.KV_LINKS}"] == 1


async def test_migrate_takes_rollups_from_an_existing_bucket(tmp_path: Path) -> None:
    """A deployment from before: its buckets as nats-py made them (rollups
    allowed). The next migrate takes them away; a second changes nothing."""
    async with secured(tmp_path) as s:
        admin = await s.connect(permissions.ADMIN)
        js = admin.jetstream()
        for bucket in topology.BUCKETS:
            config = (await js.stream_info(f"KV_{bucket}")).config
            config.allow_rollup_hdrs = True
            await js.update_stream(config)
        workers = {c.service: WorkerSettings() for c in topology.CONSUMERS}
        await topology.provision(js, 3600, workers)
        configs = [(await js.stream_info(f"KV_{b}")).config for b in topology.BUCKETS]
        assert [c.allow_rollup_hdrs for c in configs] == [False] * len(configs)
        await topology.provision(js, 3600, workers)
        assert [(await js.stream_info(f"KV_{b}")).config for b in topology.BUCKETS] == configs
        await admin.close()


# ---------------------------------------------------------------------------
# No service can purge or delete a stream or bucket: those are the admin's

TARGETS = [topology.CLICKS, topology.LINKS, topology.DLQ, f"KV_{topology.KV_LINKS}"]
TARGETS += [f"KV_{topology.KV_VISITS}", f"KV_{topology.KV_KEYS}"]


async def api_refused(s: Secured, user: str, subject: str, body: dict[str, Any]) -> bool:
    """A JetStream API request as ``user``: True if the server refused it
    (no answer, and a permissions violation said to the user)."""
    nc = await s.connect(user)
    try:
        inbox = nc.new_inbox()
        answers = await nc.subscribe(inbox, max_msgs=1)
        await nc.publish(subject, msgspec.json.encode(body), reply=inbox)
        await nc.flush()

        # Whichever comes first: the server's refusal, or the API's answer
        # (no need to wait out a request's timeout for each of 24 pairs).
        async def outcome() -> str | None:
            if s.said_violation(user, subject):
                return "refused"
            try:
                await answers.next_msg(timeout=0.05)
            except nats.errors.TimeoutError:
                return None
            return "answered"

        verdict = await eventually(outcome, 5, f"{user}'s {subject} refused or answered")
        return bool(verdict == "refused")
    finally:
        await nc.close()


@pytest.mark.parametrize("verb", ["PURGE", "DELETE"])
async def test_no_service_can_purge_or_delete_a_stream(tmp_path: Path, verb: str) -> None:
    async with secured(tmp_path) as s:
        before = await fill(s)
        for user in permissions.SERVICES:
            for stream in TARGETS:
                subject = f"$JS.API.STREAM.{verb}.{stream}"
                assert await api_refused(s, user, subject, {}), (user, subject)
        assert await after(s) == before


@pytest.mark.parametrize("verb", ["PURGE", "DELETE"])
async def test_with_the_right_given_back_a_service_could(tmp_path: Path, verb: str) -> None:
    subject = f"$JS.API.STREAM.{verb}.{topology.CLICKS}"
    async with secured(tmp_path, regranted("analytics", subject)) as s:
        await fill(s)
        assert not await api_refused(s, "analytics", subject, {})
        admin = await s.connect(permissions.ADMIN)
        with contextlib.suppress(APIError):
            left = (await admin.jetstream().stream_info(topology.CLICKS)).state.messages
            assert left == 0
        await admin.close()


async def test_analytics_can_still_refresh_links_through_the_cache_refresher(
    tmp_path: Path,
) -> None:
    """The rights the DLQ replay of a links.* letter uses: analytics asks on
    LINK_REFRESH, the cache-refresher answers under LINK_REFRESHED; no other
    service may ask, and the cache-refresher may answer nowhere else."""
    # Imported here so that the other tests of this file run (and fail on
    # their merits) on a tree from before these subjects existed.
    from shared.contracts import LINK_REFRESH, LINK_REFRESHED

    async with secured(tmp_path) as s:
        refresher = await s.connect("cache_refresher")
        analytics = await s.connect("analytics")
        try:

            async def answer(msg: Any) -> None:
                await refresher.publish(msg.reply, b"ok")

            await refresher.subscribe(LINK_REFRESH, cb=answer)
            await refresher.flush()
            reply = f"{LINK_REFRESHED}.test"
            sub = await analytics.subscribe(reply)
            await analytics.publish(LINK_REFRESH, b"{}", reply=reply)
            assert (await sub.next_msg(2)).data == b"ok"
            # The gateway may not ask; the cache-refresher answers no inbox.
            gateway = await s.connect("link")
            await gateway.publish(LINK_REFRESH, b"{}")
            await gateway.flush()
            assert await s.violation("link", LINK_REFRESH)
            await gateway.close()
            await refresher.publish("_INBOX_analytics.x", b"forged")
            await refresher.flush()
            assert await s.violation("cache_refresher", "_INBOX_analytics.x")
        finally:
            await asyncio.gather(refresher.close(), analytics.close())
