"""The error classes the worker loop acts on: the class decides the outcome."""

from __future__ import annotations


class PermanentError(Exception):
    """The message can never succeed (undecodable, invalid): dead-letter it at once."""

    @classmethod
    def from_decode(cls, exc: Exception) -> PermanentError:
        return cls(f"invalid payload: {exc}")


class TransientError(Exception):
    """Worth retrying later (database down, timeout): nak with backoff."""

    @classmethod
    def from_exception(cls, exc: BaseException) -> TransientError:
        return cls(f"{type(exc).__name__}: {exc}")


class CommandError(Exception):
    """A ``linkflow`` command that cannot work as asked (a server it cannot
    reach, a URL it cannot use): printed as one line, exit status 1."""
