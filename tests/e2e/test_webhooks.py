"""The webhooks service (TypeScript) as ``linkflow up`` runs it, checked from
a second language: a receiver in Python verifies every delivery's signature
with the ``standardwebhooks`` library and counts what arrived."""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any

import httpx
import pytest
from nats.js.errors import NotFoundError

from shared.cli.supervisor import Supervisor
from shared.jetstream import bus
from tests.e2e.conftest import gateway_url, ready
from tests.harness import eventually, key_header
from tests.servers import Servers
from tests.webhooks.receiver import Receiver, receiving

pytestmark = pytest.mark.e2e

# Local receivers are private addresses over plain HTTP: allowed here only.
LOCAL = {
    "LINKFLOW_WEBHOOKS_ALLOW_HTTP": "true",
    "LINKFLOW_WEBHOOKS_ALLOW_PRIVATE": "true",
    # Retries a hundred times sooner than in production (5 s -> 50 ms).
    "LINKFLOW_WEBHOOKS_RETRY_SCALE": "0.01",
}
HUMAN = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}


def webhooks_url() -> str:
    return f"http://127.0.0.1:{os.environ['LINKFLOW_WEBHOOKS_PORT']}"


async def subscribe(sup: Supervisor, receiver: Receiver, events: list[str], **more: Any) -> str:
    """An endpoint for ``receiver``; its id (the receiver learns the secret)."""
    await eventually(lambda: ready(webhooks_url()), 60, "the webhooks service ready")
    async with httpx.AsyncClient(base_url=webhooks_url(), headers=key_header(sup.home)) as c:
        r = await c.post("/api/webhooks", json={"url": receiver.url, "events": events, **more})
    assert r.status_code == 201, r.text
    endpoint = r.json()
    assert endpoint["secret"].startswith("whsec_")
    receiver.secret = endpoint["secret"]
    return str(endpoint["id"])


def gateway(sup: Supervisor) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gateway_url(), headers=key_header(sup.home))


@pytest.mark.parametrize("linkflow", [LOCAL], indirect=True)
async def test_every_event_type_arrives_signed(linkflow: Supervisor) -> None:
    with receiving(Receiver()) as receiver:
        await subscribe(
            linkflow,
            receiver,
            ["link.created", "link.updated", "link.deleted", "link.clicked"],
        )
        async with gateway(linkflow) as gw:
            await eventually(lambda: ready(gateway_url()), 30, "the gateway ready")
            r = await gw.post("/api/links", json={"url": "https://example.com/", "code": "hook"})
            assert r.status_code == 201, r.text
            r = await gw.patch("/api/links/hook", json={"url": "https://example.org/"})
            assert r.status_code == 200, r.text
            assert (await gw.get("/hook", headers=HUMAN)).status_code == 302
            # Deleted only once its click went out: the click names the link.
            # Links' events and clicks come through two consumers: no order
            # between them (each holds off on its own while a gateway is busy).
            await eventually(lambda: _have(receiver, "link.clicked", 1), 60, "the click's delivery")
            await eventually(lambda: _have(receiver, "link.created", 1), 60, "the link's creation")
            assert (await gw.delete("/api/links/hook")).status_code == 204
        for kind in ("link.created", "link.updated", "link.clicked", "link.deleted"):
            await eventually(lambda k=kind: _have(receiver, k, 1), 60, f"a {kind} delivery")
            (event,) = receiver.of_type(kind)
            assert event["data"]["code"] == "hook", event
        assert receiver.of_type("link.updated")[0]["data"]["url"] == "https://example.org/"
        assert receiver.refused == 0


async def _have(receiver: Receiver, kind: str, n: int) -> bool:
    return len(receiver.of_type(kind)) >= n


@pytest.mark.parametrize("linkflow", [LOCAL], indirect=True)
async def test_an_endpoint_for_one_domain_gets_that_domains_events_alone(
    linkflow: Supervisor,
) -> None:
    go = "go.example.com"
    with receiving(Receiver()) as receiver:
        async with gateway(linkflow) as gw:
            await eventually(lambda: ready(gateway_url()), 30, "the gateway ready")
            r = await gw.post("/api/domains", json={"host": go})
            assert r.status_code == 201, r.text
            await subscribe(
                linkflow, receiver, ["link.created", "link.clicked"], domains=["GO.example.com"]
            )
            for domain in (None, go):
                link = {"url": "https://example.com/", "code": "same", "domain": domain}
                r = await gw.post("/api/links", json=link)
                assert r.status_code == 201, r.text
            for host in ("localhost", go):
                assert (await gw.get("/same", headers={**HUMAN, "host": host})).status_code == 302
            # Links' events and clicks come through two consumers: no order
            # between them (each holds off on its own while a gateway is busy).
            await eventually(lambda: _have(receiver, "link.clicked", 1), 60, "the click's delivery")
            await eventually(lambda: _have(receiver, "link.created", 1), 60, "the link's creation")
            # The default domain's link was created and clicked first: nothing of it came.
            assert [e["data"]["domain"] for e in receiver.of_type("link.created")] == [go]
            assert [e["data"]["domain"] for e in receiver.of_type("link.clicked")] == [go]


@pytest.mark.parametrize("linkflow", [LOCAL], indirect=True)
async def test_a_failing_receiver_gets_the_event_again_until_it_succeeds(
    linkflow: Supervisor,
) -> None:
    with receiving(Receiver(status=503)) as receiver:
        await subscribe(linkflow, receiver, ["link.created"])
        async with gateway(linkflow) as gw:
            await eventually(lambda: ready(gateway_url()), 30, "the gateway ready")
            r = await gw.post("/api/links", json={"url": "https://example.com/", "code": "retry"})
            assert r.status_code == 201, r.text

        async def failed_twice() -> bool:
            with receiver.lock:
                return sum(receiver.attempts.values()) >= 2

        await eventually(failed_twice, 30, "two failed attempts")
        with receiver.lock:
            receiver.status = 200
        await eventually(lambda: _have(receiver, "link.created", 1), 30, "the third attempt")
        (webhook_id,) = receiver.attempts
        # Once delivered, never again: the attempts stop at the success.
        with receiver.lock:
            attempts = receiver.attempts[webhook_id]
        assert attempts >= 3
        async with httpx.AsyncClient(
            base_url=webhooks_url(), headers=key_header(linkflow.home)
        ) as c:
            (endpoint,) = (await c.get("/api/webhooks")).json()["items"]
            items = (await c.get(f"/api/webhooks/{endpoint['id']}/deliveries")).json()["items"]
        assert [(d["id"], d["status"], d["attempts"]) for d in items] == [
            (webhook_id, "delivered", attempts)
        ]


# 200 links at once: past the default write rate of a key.
FAST_WRITES = {**LOCAL, "LINKFLOW_LINK_WRITE_RATE": "10000/s"}


@pytest.mark.parametrize("linkflow", [FAST_WRITES], indirect=True)
async def test_kill_9_with_200_pending_delivers_all_200(linkflow: Supervisor) -> None:
    """200 deliveries stored, a few in flight to a receiver that holds them
    (failing ones would disable the endpoint at 100), the service killed;
    after its restart the receiver counts 200 distinct webhook-ids."""
    with receiving(Receiver(hang=threading.Event())) as receiver:
        endpoint = await subscribe(linkflow, receiver, ["link.created"])
        async with gateway(linkflow) as gw:
            await eventually(lambda: ready(gateway_url()), 30, "the gateway ready")
            for i in range(200):
                link = {"url": "https://example.com/", "code": f"k{i:03d}"}
                r = await gw.post("/api/links", json=link)
                assert r.status_code == 201, r.text

        async def stored() -> bool:
            return len(await deliveries(linkflow, endpoint)) == 200

        await eventually(stored, 60, "200 deliveries stored")

        async def held() -> bool:
            with receiver.lock:
                return receiver.arrived > 0

        await eventually(held, 30, "attempts in flight")
        child = next(c for c in linkflow.children if c.name == "webhooks")
        assert child.proc is not None
        first = child.proc.pid
        os.kill(first, signal.SIGKILL)
        assert receiver.hang is not None
        receiver.hang.set()  # from now on, every delivery is taken

        async def restarted() -> bool:
            return child.proc is not None and child.proc.pid != first

        await eventually(restarted, 30, "the webhooks service restarted")

        async def all_delivered() -> bool:
            with receiver.lock:
                return len(receiver.verified) == 200

        # The attempts cut by the kill are leased for 30 s, then tried again.
        await eventually(all_delivered, 120, "all 200 delivered after the restart")
        codes = sorted(e["data"]["code"] for e in receiver.of_type("link.created"))
        assert codes == sorted(f"k{i:03d}" for i in range(200))

        # And the service knows: every one delivered (those cut by the kill
        # once their lease, 30 s, ran out and they were sent again).
        async def all_marked() -> bool:
            listed = await deliveries(linkflow, endpoint)
            return len(listed) == 200 and all(d["status"] == "delivered" for d in listed)

        await eventually(all_marked, 90, "all 200 marked delivered")


async def deliveries(sup: Supervisor, endpoint: str) -> list[dict[str, Any]]:
    """Every delivery the service lists for ``endpoint``, page by page."""
    found: list[dict[str, Any]] = []
    params = {"limit": "100"}
    async with httpx.AsyncClient(base_url=webhooks_url(), headers=key_header(sup.home)) as c:
        while True:
            page = (await c.get(f"/api/webhooks/{endpoint}/deliveries", params=params)).json()
            found += page["items"]
            if not page["next_cursor"]:
                return found
            params["cursor"] = page["next_cursor"]


@pytest.mark.parametrize("linkflow", [LOCAL], indirect=True)
async def test_a_hanging_receiver_delays_no_other_endpoint(linkflow: Supervisor) -> None:
    stuck = Receiver(hang=threading.Event())
    with receiving(stuck), receiving(Receiver()) as healthy:
        await subscribe(linkflow, stuck, ["link.created"])
        await subscribe(linkflow, healthy, ["link.created"])
        async with gateway(linkflow) as gw:
            await eventually(lambda: ready(gateway_url()), 30, "the gateway ready")
            for i in range(50):
                r = await gw.post(
                    "/api/links", json={"url": "https://example.com/", "code": f"h{i:03d}"}
                )
                assert r.status_code == 201, r.text
        # Well inside the 15 s the hanging receiver holds each attempt.
        await eventually(lambda: _have(healthy, "link.created", 50), 10, "the healthy 50")
        assert stuck.verified == {}


@pytest.mark.parametrize("linkflow", [LOCAL], indirect=True)
async def test_no_click_consumer_while_no_endpoint_wants_clicks(
    linkflow: Supervisor, servers: Servers
) -> None:
    nc = await bus.connect(servers.nats_url, "e2e-check", forever=False)
    js = nc.jetstream()

    async def consumer() -> bool:
        try:
            await js.consumer_info("CLICKS", "webhooks-clicks")
        except NotFoundError:
            return False
        return True

    try:
        with receiving(Receiver()) as receiver:
            await subscribe(linkflow, receiver, ["link.created"])
            assert not await consumer()
            clicks = await subscribe(linkflow, receiver, ["link.clicked"])
            await eventually(consumer, 10, "the clicks consumer")
            async with httpx.AsyncClient(
                base_url=webhooks_url(), headers=key_header(linkflow.home)
            ) as c:
                assert (await c.delete(f"/api/webhooks/{clicks}")).status_code == 204

            async def gone() -> bool:
                return not await consumer()

            await eventually(gone, 10, "the clicks consumer deleted")
    finally:
        await nc.drain()


@pytest.mark.parametrize("linkflow", [{}], indirect=True)
async def test_private_addresses_are_refused_by_default(linkflow: Supervisor) -> None:
    await eventually(lambda: ready(webhooks_url()), 60, "the webhooks service ready")
    async with httpx.AsyncClient(base_url=webhooks_url(), headers=key_header(linkflow.home)) as c:
        for url in ("https://127.0.0.1/hook", "https://10.0.0.7/hook", "https://[::1]/hook"):
            r = await c.post("/api/webhooks", json={"url": url, "events": ["link.created"]})
            assert r.status_code == 422, (url, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        r = await c.post(
            "/api/webhooks", json={"url": "http://example.com/hook", "events": ["link.created"]}
        )
        assert r.status_code == 422, r.text  # plain HTTP, unless allowed
        assert (await c.get("/api/webhooks")).json()["items"] == []
    async with httpx.AsyncClient(base_url=webhooks_url()) as stranger:
        anonymous = await stranger.get("/api/webhooks")
        assert anonymous.status_code == 401
        assert json.loads(anonymous.text)["status"] == 401
