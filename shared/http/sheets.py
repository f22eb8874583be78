"""CSV answers (a link's figures, raw clicks): rows written by the csv
module, so quotes, commas and newlines in a value survive, and values
neutralised before a spreadsheet can read them as formulas.

A referrer or a user agent is whatever a stranger sent: ``=HYPERLINK(…)``
would run as a formula in the spreadsheet of whoever opens the export
(CSV injection, OWASP). A text value that starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return gets a leading ``'``, which spreadsheets
show as text; numbers, times and booleans are written as they are. The
NDJSON export carries every value exactly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

import msgspec

MEDIA_TYPE: Final = "text/csv; charset=utf-8"
_FORMULA: Final = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """``value`` as a CSV cell: None empty, text that could start a formula
    quoted, booleans and times as the JSON answers write them."""
    if value is None:
        return ""
    if isinstance(value, str):
        return f"'{value}" if value.startswith(_FORMULA) else value
    if isinstance(value, bool):
        return "true" if value else "false"  # as JSON says it, not Python's True
    if isinstance(value, datetime):
        # RFC 3339, as the JSON answers spell it (msgspec: UTC as Z).
        return msgspec.json.encode(value).decode().strip('"')
    return value


def rows(records: Iterable[Sequence[Any]]) -> bytes:
    """``records`` as CSV lines (``\\r\\n``, RFC 4180), each value through :func:`cell`."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerows([cell(v) for v in record] for record in records)
    return out.getvalue().encode()


def attachment(filename: str) -> dict[str, str]:
    """The header that makes a browser save the answer as ``filename``
    (plain ASCII: the callers build it from checked parts)."""
    return {"content-disposition": f'attachment; filename="{filename}"'}
