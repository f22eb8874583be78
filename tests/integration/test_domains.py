"""Short domains: the admin API, and what a visit that finds no link on a
domain gets, chosen by the request's Host, on real gateways."""

from __future__ import annotations

import secrets
from pathlib import Path

import asyncpg
import httpx
import pytest
from nats.aio.client import Client

from services.link.app import build
from services.link.settings import Settings as LinkSettings
from services.link.store import CodeTaken, LinkStore
from shared import db
from shared.http import keys
from shared.settings import Common
from tests.harness import bearer, count, eventually, serve
from tests.integration.conftest import PUBLIC_URL
from tests.servers import Servers, migrate_main

GO = "go.example.com"
BEFORE = Path(__file__).parent / "before_domains"


async def test_domains_are_added_listed_changed_and_removed(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post(
        "/api/domains",
        json={"host": "Go.Example.COM.", "not_found_redirect": "https://example.com/lost"},
    )
    assert r.status_code == 201, r.text
    added = r.json()
    assert added["host"] == GO  # one spelling: lower case, no trailing dot
    assert added["not_found_redirect"] == "https://example.com/lost"
    assert (added["base_url_redirect"], added["is_default"]) == (None, False)

    r = await gateway.get("/api/domains")
    assert [(d["host"], d["is_default"]) for d in r.json()["items"]] == [
        ("sho.rt", True),
        (GO, False),
    ]
    assert (await gateway.get(f"/api/domains/{GO}")).json() == added

    r = await gateway.patch(
        f"/api/domains/{GO}", json={"base_url_redirect": "https://example.com/"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["base_url_redirect"] == "https://example.com/"
    assert r.json()["not_found_redirect"] == "https://example.com/lost"  # left as it was
    r = await gateway.patch(f"/api/domains/{GO}", json={"not_found_redirect": None})
    assert r.json()["not_found_redirect"] is None

    r = await gateway.post("/api/domains", json={"host": GO})
    assert r.status_code == 409
    r = await gateway.post("/api/domains", json={"host": "sho.rt"})
    assert r.status_code == 409
    assert "default domain" in r.json()["detail"]

    assert (await gateway.delete(f"/api/domains/{GO}")).status_code == 204
    assert (await gateway.get(f"/api/domains/{GO}")).status_code == 404
    assert (await gateway.delete(f"/api/domains/{GO}")).status_code == 404
    assert (await gateway.patch(f"/api/domains/{GO}", json={})).status_code == 404
    r = await gateway.delete("/api/domains/sho.rt")
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    # Removed, it can be added again.
    assert (await gateway.post("/api/domains", json={"host": GO})).status_code == 201


async def test_bad_domains_are_refused_naming_each_field(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post(
        "/api/domains",
        json={
            "host": "https://go.example.com/x",
            "base_url_redirect": "ftp://example.com/",
            "colour": "red",
        },
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {"host", "base_url_redirect", "colour"}
    # A domain's redirect to itself, or to the gateway's own URL, would loop.
    r = await gateway.post(
        "/api/domains", json={"host": GO, "not_found_redirect": f"https://{GO}/lost"}
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "not_found_redirect"
    r = await gateway.post("/api/domains", json={"host": GO, "base_url_redirect": PUBLIC_URL})
    assert r.status_code == 422
    for body in ([GO], "x", {"host": 7}, {"host": "a" * 300 + ".com"}, {"host": "a..b"}):
        r = await gateway.post("/api/domains", json=body)
        assert r.status_code == 422, body
    assert len((await gateway.get("/api/domains")).json()["items"]) == 1  # nothing was added


async def test_only_an_admin_key_manages_domains(gateway: httpx.AsyncClient, nc: Client) -> None:
    writer = await keys.create(nc.jetstream(), "writer", (keys.LINKS_WRITE,))
    r = await gateway.post("/api/domains", json={"host": GO}, headers=bearer(writer))
    assert r.status_code == 403
    assert "admin" in r.json()["detail"]
    r = await gateway.get("/api/domains", headers={"authorization": ""})
    assert r.status_code == 401


async def test_a_visit_that_finds_no_link_goes_where_its_domain_says(
    gateway: httpx.AsyncClient,
) -> None:
    r = await gateway.post(
        "/api/domains",
        json={
            "host": GO,
            "base_url_redirect": "https://example.com/home",
            "not_found_redirect": "https://example.com/lost",
        },
    )
    assert r.status_code == 201, r.text
    # The Host as browsers send it: any case, with a port.
    on_go = {"host": "GO.example.com:8080"}
    r = await gateway.get("/", headers=on_go)
    assert (r.status_code, r.headers["location"]) == (302, "https://example.com/home")
    r = await gateway.get("/nothing-here", headers=on_go)
    assert (r.status_code, r.headers["location"]) == (302, "https://example.com/lost")
    r = await gateway.head("/nothing-here", headers=on_go)
    assert r.status_code == 302
    # The default domain (and any host that is not a domain) has none yet: 404.
    for host in ("sho.rt", "unknown.example"):
        r = await gateway.get("/nothing-here", headers={"host": host})
        assert r.status_code == 404, host
        assert r.headers["content-type"] == "application/problem+json"
    # Its redirects are set like any domain's, and then serve unknown hosts too.
    r = await gateway.patch(
        "/api/domains/sho.rt", json={"not_found_redirect": "https://example.com/default-lost"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["is_default"] is True
    for host in ("sho.rt", "unknown.example"):
        r = await gateway.get("/nothing-here", headers={"host": host})
        assert (r.status_code, r.headers["location"]) == (
            302,
            "https://example.com/default-lost",
        ), host
    # A link is still a link.
    r = await gateway.post("/api/links", json={"url": "https://example.com/x", "code": "here"})
    assert r.status_code == 201
    r = await gateway.get("/here", headers={"host": "sho.rt"})
    assert (r.status_code, r.headers["location"]) == (302, "https://example.com/x")


async def test_every_gateway_learns_a_domain_without_a_restart(
    servers: Servers, db_url: str, tmp_path: Path, admin_key: str, gateway: httpx.AsyncClient
) -> None:
    settings = LinkSettings(
        common=Common(nats_url=servers.nats_url, database_url=db_url, public_url=PUBLIC_URL),
        spool_dir=str(tmp_path / "spool-2"),
    )
    async with (
        serve(build(settings)) as url,
        httpx.AsyncClient(base_url=url, headers=bearer(admin_key)) as other,
    ):
        r = await gateway.post(
            "/api/domains", json={"host": GO, "not_found_redirect": "https://example.com/lost"}
        )
        assert r.status_code == 201

        async def redirected() -> bool:
            r = await other.get("/nothing-here", headers={"host": GO})
            return r.status_code == 302

        await eventually(redirected, 5, "the second gateway to follow the new domain")
        assert (await other.get("/api/domains")).json()["items"][1]["host"] == GO
        assert (await gateway.delete(f"/api/domains/{GO}")).status_code == 204

        async def forgotten() -> bool:
            r = await other.get("/nothing-here", headers={"host": GO})
            return r.status_code == 404

        await eventually(forgotten, 5, "the second gateway to forget the domain")


async def _domain(gateway: httpx.AsyncClient, host: str, **redirects: str) -> None:
    r = await gateway.post("/api/domains", json={"host": host, **redirects})
    assert r.status_code == 201, r.text


async def test_one_code_on_two_domains_is_two_links(
    gateway: httpx.AsyncClient, recorder: None, cache_refresher: object, db_url: str
) -> None:
    await _domain(gateway, GO)
    r = await gateway.post("/api/links", json={"url": "https://example.com/a", "code": "sale"})
    assert r.status_code == 201, r.text
    assert (r.json()["domain"], r.json()["short_url"]) == (None, "http://sho.rt/sale")
    r = await gateway.post(
        "/api/links",
        json={"url": "https://example.com/b", "code": "sale", "domain": "GO.example.com"},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["domain"], r.json()["short_url"]) == (GO, f"http://{GO}/sale")
    r = await gateway.post(
        "/api/links", json={"url": "https://example.com/c", "code": "sale", "domain": GO}
    )
    assert r.status_code == 409
    assert GO in r.json()["detail"]
    # Naming the default domain is the same as not naming one.
    r = await gateway.post(
        "/api/links", json={"url": "https://example.com/c", "code": "sale", "domain": "sho.rt"}
    )
    assert r.status_code == 409

    # Redirected by Host; a host that is no domain is the default domain.
    for host, target in (
        ("sho.rt", "https://example.com/a"),
        ("elsewhere.example", "https://example.com/a"),
        ("go.example.com:443", "https://example.com/b"),
    ):
        r = await gateway.get("/sale", headers={"host": host, "user-agent": "Mozilla/5.0"})
        assert (r.status_code, r.headers["location"]) == (302, target), host

    # Every {code} call takes ?domain=.
    r = await gateway.get("/api/links/sale", params={"domain": GO})
    assert r.json()["url"] == "https://example.com/b"
    assert (await gateway.get("/api/links/sale")).json()["url"] == "https://example.com/a"
    r = await gateway.patch(
        "/api/links/sale", params={"domain": GO}, json={"url": "https://example.com/b2"}
    )
    assert (r.status_code, r.json()["version"]) == (200, 2)
    history = (await gateway.get("/api/links/sale/history", params={"domain": GO})).json()
    assert [v["url"] for v in history["items"]] == [
        "https://example.com/b2",
        "https://example.com/b",
    ]
    assert len((await gateway.get("/api/links/sale/history")).json()["items"]) == 1
    r = await gateway.get("/api/links/sale/qr", params={"domain": GO})
    assert r.status_code == 200
    assert (
        await gateway.get("/api/links/sale", params={"domain": "other.example"})
    ).status_code == 404

    # The change reaches the redirect through the cache-refresher, on that domain only.
    async def changed() -> bool:
        r = await gateway.get("/sale", headers={"host": GO})
        return r.headers.get("location") == "https://example.com/b2"

    await eventually(changed, 10, "the domain's link to change")
    r = await gateway.get("/sale", headers={"host": "sho.rt"})
    assert r.headers["location"] == "https://example.com/a"

    # The list, all domains or one.
    r = await gateway.get("/api/links")
    assert sorted((i["domain"] or "", i["code"]) for i in r.json()["items"]) == [
        ("", "sale"),
        (GO, "sale"),
    ]
    r = await gateway.get("/api/links", params={"domain": GO})
    assert [i["domain"] for i in r.json()["items"]] == [GO]
    r = await gateway.get("/api/links", params={"domain": "sho.rt"})
    assert [i["domain"] for i in r.json()["items"]] == [None]
    page = (await gateway.get("/api/links", params={"limit": 1})).json()
    rest = (await gateway.get("/api/links", params={"cursor": page["next_cursor"]})).json()
    assert len(page["items"]) + len(rest["items"]) == 2
    assert page["items"][0]["domain"] != rest["items"][0]["domain"]

    # Each click says which link it was.
    async def recorded() -> bool:
        rows = await count(db_url, "SELECT count(*) FROM clicks WHERE code = 'sale'")
        return rows >= 4

    await eventually(recorded, 10, "the clicks recorded")
    conn = await asyncpg.connect(db_url)
    try:
        domains = sorted((r["domain"] or "") for r in await conn.fetch("SELECT domain FROM clicks"))
    finally:
        await conn.close()
    assert domains.count(GO) >= 1
    assert domains.count("") == 3

    # A domain with links is not removed; deleting its link frees it.
    r = await gateway.delete(f"/api/domains/{GO}")
    assert r.status_code == 409
    assert "links" in r.json()["detail"]
    assert (await gateway.delete("/api/links/sale", params={"domain": GO})).status_code == 204
    assert (await gateway.get("/api/links/sale")).status_code == 200  # the other one stays

    async def gone() -> bool:
        r = await gateway.get("/sale", headers={"host": GO})
        return r.status_code == 404

    await eventually(gone, 10, "the domain's link to go")
    assert (await gateway.delete(f"/api/domains/{GO}")).status_code == 204


async def test_a_link_on_an_unknown_domain_is_refused(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post(
        "/api/links", json={"url": "https://example.com/", "domain": "not-added.example"}
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "domain"
    r = await gateway.post("/api/links", json={"url": "https://example.com/", "domain": "a b"})
    assert r.status_code == 422
    # A link may not point at one of the gateway's own domains (a loop).
    await _domain(gateway, GO)
    r = await gateway.post("/api/links", json={"url": f"https://{GO}/x"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "url"


async def test_the_import_takes_a_domain_column(gateway: httpx.AsyncClient) -> None:
    await _domain(gateway, GO)
    csv = (
        "url,code,domain\n"
        "https://example.com/1,promo,\n"
        f"https://example.com/2,promo,{GO}\n"
        f"https://example.com/3,promo,{GO}\n"
        "https://example.com/4,other,nowhere.example\n"
    )
    r = await gateway.post("/api/links/import", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["imported"] == 2
    errors = {e["line"]: e["message"] for e in out["errors"]}
    assert errors.keys() == {4, 5}
    assert errors[4] == "code 'promo' is already on line 3"
    assert "domain: nowhere.example is not a domain" in errors[5]
    assert sorted(link["short_url"] for link in out["links"]) == [
        "http://go.example.com/promo",
        "http://sho.rt/promo",
    ]
    r = await gateway.get("/promo", headers={"host": GO})
    assert r.headers["location"] == "https://example.com/2"


async def test_an_upgrade_keeps_every_link_version_and_click(servers: Servers) -> None:
    """The schema as it was before domains, with data in it, migrated: every
    link is the default domain's, nothing lost, codes now unique per domain."""
    url = servers.pg_url(f"t_up_{secrets.token_hex(6)}")
    await db.ensure_database(url)
    for name in ("links", "clicks"):
        await db.migrate(url, (BEFORE / f"{name}.sql").read_text())
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO links (code, url, tags) VALUES ('old', 'https://example.com/1', '{a}')"
        )
        await conn.execute("UPDATE links SET url = 'https://example.com/2', version = 2")
        await conn.execute(
            "SELECT linkflow_click_partitions(now(), now());"
            "INSERT INTO clicks (id, code, ts, visitor) VALUES ('c1', 'old', now(), 'v')"
        )
        await migrate_main(url)
        await migrate_main(url)  # idempotent
        store = LinkStore(pool := await db.create_pool(url))
        try:
            link = await store.get(None, "old")
            assert link is not None
            assert (link.domain, link.url, link.version, link.tags) == (
                None,
                "https://example.com/2",
                2,
                ["a"],
            )
            assert [v.link.url for v in await store.history(None, "old")] == [
                "https://example.com/2",
                "https://example.com/1",
            ]
            # The same code on another domain is another link now.
            other = await store.create(GO, "old", "https://example.org/", 302, [], None)
            assert (other.domain, other.version) == (GO, 1)
            with pytest.raises(CodeTaken):
                await store.create(None, "old", "https://example.org/", 302, [], None)
        finally:
            await pool.close()
        row = await conn.fetchrow("SELECT id, code, domain, visitor FROM clicks")
        assert dict(row) == {"id": "c1", "code": "old", "domain": None, "visitor": "v"}
        keys = await conn.fetchval(
            "SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_constraint c, "
            "unnest(c.conkey) WITH ORDINALITY k(attnum, ord) "
            "JOIN pg_attribute a ON a.attnum = k.attnum "
            "WHERE c.conrelid = 'links'::regclass AND c.contype = 'p' "
            "AND a.attrelid = 'links'::regclass"
        )
        assert keys == ["domain", "code"]
    finally:
        await conn.close()


async def test_stats_and_visit_limits_are_per_domain(
    gateway: httpx.AsyncClient, cache_refresher: object, analytics: httpx.AsyncClient
) -> None:
    await _domain(gateway, GO)
    for body in (
        {"url": "https://example.com/a", "code": "sale"},
        {"url": "https://example.com/b", "code": "sale", "domain": GO, "max_visits": 2},
    ):
        assert (await gateway.post("/api/links", json=body)).status_code == 201
    human = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0"}
    on_go = {**human, "host": GO}
    assert [(await gateway.get("/sale", headers=on_go)).status_code for _ in range(3)] == [
        302,
        302,
        410,
    ]
    # The default domain's link has no limit of its own, nor the other's count.
    for _ in range(3):
        assert (await gateway.get("/sale", headers=human)).status_code == 302

    async def totals() -> tuple[int, int]:
        default = (await analytics.get("/api/stats/links/sale")).json()
        other = (await analytics.get("/api/stats/links/sale", params={"domain": GO})).json()
        assert (default["domain"], other["domain"]) == (None, GO)
        return default["total"], other["total"]

    async def counted() -> bool:
        return await totals() == (3, 2)

    await eventually(counted, 15, "each domain's link counted on its own")
    top = (await analytics.get("/api/stats/top")).json()["items"]
    assert sorted((i["domain"] or "", i["code"], i["count"]) for i in top) == [
        ("", "sale", 3),
        (GO, "sale", 2),
    ]


async def test_a_key_limited_to_a_domain_sees_its_links_alone(
    gateway: httpx.AsyncClient, nc: Client, analytics: httpx.AsyncClient
) -> None:
    await _domain(gateway, GO)
    for body in (
        {"url": "https://example.com/a", "code": "sale"},
        {"url": "https://example.com/b", "code": "sale", "domain": GO},
        {"url": "https://example.com/c", "code": "mine", "domain": GO},
    ):
        assert (await gateway.post("/api/links", json=body)).status_code == 201
    scopes = (keys.LINKS_WRITE, keys.STATS_READ)
    brand = bearer(await keys.create(nc.jetstream(), "brand", scopes, domains=(GO,)))

    r = await gateway.get("/api/links", headers=brand)
    assert sorted((i["domain"], i["code"]) for i in r.json()["items"]) == [
        (GO, "mine"),
        (GO, "sale"),
    ]
    r = await gateway.get("/api/links", params={"domain": "sho.rt"}, headers=brand)
    assert r.json()["items"] == []
    # Another domain's link is unknown to it, whatever the call.
    assert (await gateway.get("/api/links/sale", headers=brand)).status_code == 404
    r = await gateway.get("/api/links/sale", params={"domain": GO}, headers=brand)
    assert r.json()["url"] == "https://example.com/b"
    for call in (
        gateway.patch("/api/links/sale", json={"url": "https://evil.example/"}, headers=brand),
        gateway.delete("/api/links/sale", headers=brand),
        gateway.get("/api/links/sale/history", headers=brand),
        gateway.get("/api/links/sale/qr", headers=brand),
    ):
        r = await call
        assert r.status_code == 404, r.request.url
    assert (await gateway.get("/api/links/sale")).json()["url"] == "https://example.com/a"
    # Creating one there is forbidden; on its domain it is allowed.
    r = await gateway.post("/api/links", json={"url": "https://example.com/x"}, headers=brand)
    assert r.status_code == 403
    r = await gateway.post(
        "/api/links", json={"url": "https://example.com/x", "domain": GO}, headers=brand
    )
    assert r.status_code == 201
    r = await gateway.post(
        "/api/links/import",
        content=f"url,code,domain\nhttps://example.com/1,one,{GO}\nhttps://example.com/2,two,\n",
        headers={**brand, "content-type": "text/csv"},
    )
    assert r.json()["imported"] == 1
    assert [e["line"] for e in r.json()["errors"]] == [3]
    assert (await gateway.get("/api/links/two")).status_code == 404  # not made
    # Domains are managed by keys that see every domain.
    assert (await gateway.get("/api/domains", headers=brand)).status_code == 403

    # Its stats: its domain's links alone.
    human = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0"}
    for host in ("sho.rt", GO):
        assert (await gateway.get("/sale", headers={**human, "host": host})).status_code == 302

    async def counted() -> bool:
        top = (await analytics.get("/api/stats/top")).json()["items"]
        return len(top) == 2

    await eventually(counted, 15, "both clicks counted")
    r = await analytics.get("/api/stats/links/sale", headers=brand)
    assert r.status_code == 404
    r = await analytics.get("/api/stats/links/sale", params={"domain": GO}, headers=brand)
    assert r.json()["total"] == 1
    top = (await analytics.get("/api/stats/top", headers=brand)).json()["items"]
    assert [(i["domain"], i["code"]) for i in top] == [(GO, "sale")]
    assert (await analytics.get("/api/stats/links-created", headers=brand)).status_code == 403
