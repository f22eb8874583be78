"""The redirect-loop check: a link's target may not be this gateway's own
short domain, however the host is spelled."""

from __future__ import annotations

import pytest

from services.link.validation import LinkFields
from shared.http.problems import Problem

LOOP = "must not point at this gateway (redirect loop)"


def refusal(fields: LinkFields, url: str) -> str | None:
    try:
        fields.create({"url": url})
    except Problem as problem:
        return "; ".join(e.message for e in problem.errors)
    return None


@pytest.mark.parametrize(
    "url",
    [
        "https://sho.rt/x",
        "https://SHO.RT/x",
        "https://Sho.Rt./x",  # the root's trailing dot: the same host
        "https://sho.rt.:443/x",
        "HTTPS://sho.rt/",
    ],
)
def test_every_spelling_of_the_gateway_is_a_loop(url: str) -> None:
    assert refusal(LinkFields("https://sho.rt"), url) == LOOP


def test_an_international_gateway_host_is_matched_in_any_form() -> None:
    fields = LinkFields("https://bücher.example")
    punycode = "bücher.example".encode("idna").decode()
    for url in ("https://BÜCHER.example/a", f"https://{punycode}./a", "https://bücher.example./"):
        assert refusal(fields, url) == LOOP, url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "http://127.1:8080/x",
        "http://0x7f.0.0.1:8080/x",
        "http://2130706433:8080/x",
        "http://[::ffff:127.0.0.1]:8080/x",
        "http://[::ffff:7f00:1]:8080/x",
    ],
)
def test_every_spelling_of_a_gateway_address_is_a_loop(url: str) -> None:
    assert refusal(LinkFields("http://127.0.0.1:8080"), url) == LOOP


def test_a_percent_escaped_host_is_refused() -> None:
    # Browsers decode it to sho.rt: it would slip past the loop check.
    assert refusal(LinkFields("https://sho.rt"), "https://sho%2Ert/x") == (
        "has a host that is not a valid domain name"
    )


@pytest.mark.parametrize(
    "url", ["https://sho.rt.example/x", "http://sho.rt/x", "https://sho.rt:8443/x"]
)
def test_other_hosts_and_ports_are_not_loops(url: str) -> None:
    assert refusal(LinkFields("https://sho.rt"), url) is None
