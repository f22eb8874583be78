"""Argon2id hashes checked a bounded number at a time, and the wrong tries
each (link, address) has left, in a bounded map."""

from __future__ import annotations

import asyncio

from services.link.passwords import Busy, Passwords, Tries


async def test_a_hash_is_argon2id_and_checks_the_password() -> None:
    passwords = Passwords()
    digest = await passwords.hash("correct horse")
    assert digest.startswith("$argon2id$")
    assert "correct horse" not in digest
    assert await passwords.verify(digest, "correct horse")
    assert not await passwords.verify(digest, "wrong horse")
    assert not await passwords.verify("not a hash", "correct horse")


async def test_checks_past_the_running_and_waiting_ones_are_refused() -> None:
    passwords = Passwords(checking=1, waiting=1)
    digest = await passwords.hash("correct horse")
    outcomes = await asyncio.gather(
        *(passwords.verify(digest, "wrong horse") for _ in range(6)), return_exceptions=True
    )
    assert outcomes.count(False) == 2
    assert all(isinstance(o, Busy) for o in outcomes if o is not False)
    # Once they are done, the next is checked.
    assert await passwords.verify(digest, "correct horse")


def test_the_sixth_try_in_a_minute_waits_and_a_right_one_does_not_count() -> None:
    tries = Tries()
    assert [tries.take("vault", "203.0.113.9") for _ in range(5)] == [0.0] * 5
    assert 59 < tries.take("vault", "203.0.113.9") <= 60
    assert tries.take("vault", "203.0.113.10") == 0.0  # another address
    assert tries.take("other", "203.0.113.9") == 0.0  # another link
    tries.right("other", "203.0.113.9")
    assert [tries.take("other", "203.0.113.9") for _ in range(5)] == [0.0] * 5


def test_tries_forget_the_least_recent_past_their_bound() -> None:
    tries = Tries(size=100)
    for i in range(1000):
        tries.take("vault", f"10.0.{i // 256}.{i % 256}")
    assert len(tries._tries) == 100
    assert ("vault", "10.0.3.231") in tries._tries  # the latest
    assert ("vault", "10.0.0.0") not in tries._tries


def test_tries_older_than_the_window_are_forgotten() -> None:
    tries = Tries(window=0.0)
    for _ in range(10):
        assert tries.take("vault", "203.0.113.9") == 0.0
