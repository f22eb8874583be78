"""The bench's few HTTP calls through the standard library (``http.client``),
so that ``linkflow bench`` runs on the run install, without the dev extra.

A :class:`Client` keeps one connection per host open, as a browser would,
and never follows a redirect: the bench reads the ``location`` it gets."""

from __future__ import annotations

import http.client
import json as jsonlib
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit


class HTTPError(RuntimeError):
    """A response outside 2xx/3xx where the bench needs one."""


@dataclass
class Response:
    status_code: int
    headers: http.client.HTTPMessage
    text: str

    def raise_for_status(self) -> Response:
        if self.status_code >= 400:
            raise HTTPError(f"HTTP {self.status_code}: {self.text[:500]}")
        return self


@dataclass
class Client:
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 10
    _conns: dict[str, http.client.HTTPConnection] = field(default_factory=dict)

    def request(self, method: str, url: str, json: Any = None) -> Response:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.netloc:
            raise ValueError(f"the bench speaks plain http to its own servers, not {url!r}")
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        headers = dict(self.headers)
        body = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers["content-type"] = "application/json"
        # A kept connection the server has closed meanwhile fails on its
        # first use: then once more, on a new one.
        reused = parts.netloc in self._conns
        try:
            return self._send(parts.netloc, method, path, body, headers)
        except (http.client.HTTPException, ConnectionError):
            if not reused:
                raise
        return self._send(parts.netloc, method, path, body, headers)

    def _send(
        self, netloc: str, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Response:
        conn = self._conns.get(netloc)
        if conn is None:
            conn = self._conns[netloc] = http.client.HTTPConnection(netloc, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
        except BaseException:
            conn.close()
            del self._conns[netloc]
            raise
        return Response(resp.status, resp.headers, text)

    def get(self, url: str) -> Response:
        return self.request("GET", url)

    def head(self, url: str) -> Response:
        return self.request("HEAD", url)

    def post(self, url: str, json: Any = None) -> Response:
        return self.request("POST", url, json)

    def patch(self, url: str, json: Any = None) -> Response:
        return self.request("PATCH", url, json)

    def delete(self, url: str) -> Response:
        return self.request("DELETE", url)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
