"""One log format for every service: JSON lines (SPEC, Deployment) with the
service, level, logger, message and, where a line concerns one request or
one click, the ``request_id`` that travelled with it from the redirect
through the event's ``X-Request-Id`` header to the worker.

A line about one request passes its id as ``extra={"request_id": ...}``.
``LINKFLOW_LOG_FORMAT=text`` gives the older one-line text format, easier to
read in a terminal under ``linkflow up``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import msgspec

from shared.settings import Common

_encode = msgspec.json.Encoder().encode


class JsonLines(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "service": self._service,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            line["request_id"] = request_id
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def configure(service: str, common: Common) -> None:
    """Logging for ``service``, and the warnings every service gives at start."""
    handler = logging.StreamHandler()
    if common.log_format == "text":
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
        )
    else:
        handler.setFormatter(JsonLines(service))
    logging.basicConfig(level=common.log_level, handlers=[handler])
    if not common.auth:
        logging.getLogger(service).warning(
            "LINKFLOW_AUTH=off: API keys are not checked; anyone who reaches this service "
            "may call every /api route"
        )
