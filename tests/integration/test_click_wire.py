"""The gateway's own click connection (services.link.wire) against a real
nats-server: credentials from the URL, JetStream refusing a click, and a
server that stops answering. In each case a click is stored or spooled, never
dropped."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.link.clicks import OutgoingClick, new_click
from services.link.publisher import ClickPublisher, NotConnected
from services.link.spool import Spool
from shared.cli.servers import NatsServer, wait_until
from shared.jetstream import bus
from tests.conftest import reset_jetstream
from tests.harness import eventually
from tests.integration.test_gateway_faults import stored_click_ids


def click() -> OutgoingClick:
    return new_click(
        "wire",
        referrer=None,
        user_agent="Mozilla/5.0",
        ip="198.51.100.7",
        country=None,
        head=False,
        request_id=None,
        anonymize_ip=True,
    )


async def provision(url: str) -> None:
    nc = await bus.connect(url, "setup", forever=False)
    try:
        await reset_jetstream(nc)
    finally:
        await nc.close()


async def one_click_is_stored(url: str) -> None:
    publisher = ClickPublisher(url, 2.0)
    await publisher.start()
    sent = click()
    try:
        assert publisher.connected
        await publisher.publish(sent)  # returns after the PubAck
    finally:
        await publisher.stop()
    assert await stored_click_ids(url) == [sent.id]


@pytest.fixture
async def bare_nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A NATS server of the test's own, without streams until the test says so."""
    nats = NatsServer(tmp_path / "nats").start()
    try:
        yield nats
    finally:
        nats.stop()


async def test_token_in_the_url_authenticates(tmp_path: Path) -> None:
    nats = NatsServer(tmp_path / "nats", extra_args=["--auth", "s3cret"]).start()
    try:
        url = f"nats://s3cret@127.0.0.1:{nats.port}"
        await provision(url)
        await one_click_is_stored(url)

        wrong = ClickPublisher(f"nats://wrong@127.0.0.1:{nats.port}", 2.0)
        await wrong.start(connect_wait=1)
        try:
            assert not wrong.connected
            with pytest.raises(NotConnected):  # no spool here: refused loudly
                await wrong.publish(click())
        finally:
            await wrong.stop()
    finally:
        nats.stop()


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[NatsServer, Path]]:
    """A NATS server that requires TLS, with a self-signed certificate for
    127.0.0.1; yields the server and the certificate (the CA to trust)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=linkflow",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    tls = ["--tls", "--tlscert", str(cert), "--tlskey", str(key)]
    nats = NatsServer(tmp_path / "nats", extra_args=tls).start()
    try:
        yield nats, cert
    finally:
        nats.stop()


@pytest.mark.parametrize("scheme", ["tls", "nats"])
async def test_clicks_go_over_tls_to_a_server_that_requires_it(
    tls_nats: tuple[NatsServer, Path], scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    nats, cert = tls_nats
    url = f"{scheme}://127.0.0.1:{nats.port}"

    untrusted = ClickPublisher(url, 2.0)
    await untrusted.start(connect_wait=1)
    try:
        assert not untrusted.connected  # a certificate nobody vouches for
    finally:
        await untrusted.stop()

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the operator's private CA
    await provision(url)
    await one_click_is_stored(url)


async def test_a_flood_never_outruns_the_streams_ingest_queue(tmp_path: Path) -> None:
    # Past its ingest queue JetStream drops a click that has no reply subject
    # without a word, and a later click's PubAck would then cover it. With
    # 3,000 redirects at once and no bound, some runs here lost clicks their
    # visitors had been redirected for; the bound keeps under the queue.
    conf = tmp_path / "nats.conf"
    conf.write_text("jetstream { max_buffered_msgs: 64 }\n")
    nats = NatsServer(tmp_path / "nats", extra_args=["-c", str(conf)]).start()
    try:
        await provision(nats.url)
        publisher = ClickPublisher(nats.url, 10.0, max_in_flight=48)
        await publisher.start()
        clicks = [click() for _ in range(3000)]
        try:
            results = await asyncio.gather(
                *(publisher.publish(c) for c in clicks), return_exceptions=True
            )
        finally:
            await publisher.stop()
        confirmed = {c.id for c, r in zip(clicks, results, strict=True) if r is None}
        stored = set(await stored_click_ids(nats.url))
        assert confirmed - stored == set()  # no visitor redirected for a lost click
        assert confirmed == {c.id for c in clicks}  # and each click waited its turn
    finally:
        nats.stop()


@pytest.mark.parametrize(("max_in_flight", "max_group"), [(1024, 8), (4, 8), (1024, 1)])
async def test_clicks_refused_by_jetstream_are_spooled_then_delivered(
    bare_nats: NatsServer, tmp_path: Path, max_in_flight: int, max_group: int
) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    publisher = ClickPublisher(
        bare_nats.url, 1.0, spool, max_in_flight=max_in_flight, max_group=max_group
    )
    await publisher.start()
    sent = [click() for _ in range(10)]
    try:
        # No CLICKS stream yet: the server answers "no responders".
        await asyncio.gather(*(publisher.publish(c) for c in sent))
        assert spool.records == 10
        await provision(bare_nats.url)

        async def replayed() -> bool:
            return spool.records == 0

        await eventually(replayed, 10, "the spool to be replayed")
    finally:
        await publisher.stop()
    # In order, in chunks that fit under the bound (a PubAck per click in
    # the chunk with groups of one).
    assert await stored_click_ids(bare_nats.url) == [c.id for c in sent]


async def pausable(
    nats: NatsServer, tmp_path: Path, ping_interval: float
) -> tuple[ClickPublisher, Spool, int]:
    """A started publisher (0.5 s PubAck timeout, a spool) on ``nats``, with
    streams, and the server's pid for SIGSTOP."""
    await provision(nats.url)
    spool = Spool(tmp_path / "spool", 1 << 20)
    publisher = ClickPublisher(nats.url, 0.5, spool, ping_interval=ping_interval)
    await publisher.start()
    assert nats.proc is not None
    return publisher, spool, nats.proc.pid


def pause(pid: int) -> None:
    """SIGSTOP the server and wait until it is stopped: the signal takes
    effect asynchronously, and a server still running for a moment would
    answer the next PubAck the test expects to go unanswered."""
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state in ("T", "t")

    wait_until(stopped, 5, "the server to stop")


async def test_server_that_stops_answering_is_dropped_and_nothing_is_lost(
    bare_nats: NatsServer, tmp_path: Path
) -> None:
    # Pings far apart enough that the PubAck timeout (0.5 s) comes first.
    publisher, spool, pid = await pausable(bare_nats, tmp_path, ping_interval=1.0)
    before, during = click(), click()
    try:
        await publisher.publish(before)
        pause(pid)
        try:
            # No PubAck within the timeout: the click goes to the spool.
            await publisher.publish(during)
            assert spool.records == 1
            # Its frame may still sit in the server's ingest queue: it keeps
            # its room under the bound until the connection goes.
            assert publisher.in_flight == 1

            async def dropped() -> bool:
                return not publisher.connected

            await eventually(dropped, 10, "unanswered pings to drop the connection")
            assert publisher.in_flight == 0
        finally:
            os.kill(pid, signal.SIGCONT)

        async def replayed() -> bool:
            return publisher.connected and spool.records == 0

        await eventually(replayed, 15, "a reconnect and the spool's replay")
    finally:
        await publisher.stop()
    assert await stored_click_ids(bare_nats.url) == [before.id, during.id]


async def test_a_late_puback_frees_the_room_and_nothing_is_doubled(
    bare_nats: NatsServer, tmp_path: Path
) -> None:
    # Pings far apart: the connection outlives the pause.
    publisher, spool, pid = await pausable(bare_nats, tmp_path, ping_interval=30)
    late = click()
    try:
        pause(pid)
        try:
            await publisher.publish(late)  # no PubAck in time: spooled
            assert spool.records == 1
            assert publisher.in_flight == 1
        finally:
            os.kill(pid, signal.SIGCONT)

        async def settled() -> bool:
            return publisher.in_flight == 0 and spool.records == 0

        await eventually(settled, 10, "the late PubAck and the spool's replay")
    finally:
        await publisher.stop()
    # Stored from the wire and replayed from the spool: the duplicate window
    # keeps one.
    assert await stored_click_ids(bare_nats.url) == [late.id]
