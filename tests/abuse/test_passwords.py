"""What guessing passwords can cost: a storm of wrong passwords is checked
a few at a time off the event loop and the rest refused at once, so plain
redirects keep answering and memory stays bounded."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import httpx

from tests.abuse.test_gateway import make, plain_latencies, rss

SECRET = "correct horse battery"
LINKS = 20
STORM = 200


async def guesses(gateway: httpx.AsyncClient, paths: list[str]) -> dict[str, int]:
    url = gateway.base_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.abuse.guesses",
        str(url.host),
        str(url.port),
        str(STORM),
        *paths,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0
    seen: dict[str, int] = json.loads(out)
    return seen


async def test_a_storm_of_wrong_passwords_does_not_stall_redirects(
    gateway: httpx.AsyncClient,
) -> None:
    codes = [f"vault{i}" for i in range(LINKS)]
    for code in [*codes, "calm"]:
        await make(gateway, code, password=SECRET)
    await make(gateway, "plain")
    # Warm, then the plain redirect's latency with nothing else going on.
    assert (await gateway.post("/calm", data={"password": "warming up"})).status_code == 401
    quiet = []
    for _ in range(100):
        started = time.perf_counter()
        assert (await gateway.get("/plain")).status_code == 302
        quiet.append(time.perf_counter() - started)
    before = rss()

    storm = asyncio.create_task(guesses(gateway, [f"/{c}" for c in codes]))
    took = await plain_latencies(gateway, "/plain", storm)
    seen = await storm
    grown = rss() - before

    # Ten guesses at each link from one address at once: what is past the
    # checks running and waiting is refused at once (503, not counted as a
    # try), past five wrong tries a link refuses (429), the rest is checked
    # (401) -- never more than five per link.
    assert set(seen) <= {"401", "429", "503"}, seen
    assert sum(seen.values()) == STORM, seen
    assert 2 <= seen.get("401", 0) <= LINKS * 5, seen
    assert seen.get("503"), seen
    assert len(took) >= 10, f"only {len(took)} plain redirects ran beside the storm"
    print(
        f"storm {seen}: plain redirects {len(took)}, max {max(took) * 1000:.1f} ms "
        f"(median {statistics.median(took) * 1000:.1f} ms; quiet max "
        f"{max(quiet) * 1000:.1f} ms), RSS grew {grown / 2**20:.1f} MiB; slowest "
        f"{[round(t * 1000) for t in sorted(took)[-6:]]}"
    )
    # Generous: the 200 connections arrive at once on the gateway's one
    # event loop; what matters is that no redirect waits for a check
    # (measured: max 0.1-0.28 s, the 95th percentile under 0.06 s).
    assert max(took) < max(0.5, 20 * max(quiet)), f"waited up to {max(took):.3f} s"
    assert statistics.quantiles(took, n=20)[-1] < 0.15, sorted(took)[-20:]
    # At most two 64 MiB Argon2 checks at once, and those are freed.
    assert grown < 256 * 2**20, f"grew {grown / 2**20:.1f} MiB"

    # A link the storm did not touch still opens with its password.
    r = await gateway.post("/calm", data={"password": SECRET})
    assert r.status_code == 303, r.text
