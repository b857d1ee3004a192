"""Log lines for operators: ``text`` for a terminal, ``json`` (one object per line) for a log pipeline.

Every line carries the request id of the HTTP request it was written under (``None`` outside one): the id comes from
a valid ``X-Request-ID`` header or is made here, and is echoed back in the response (observability/http.py).

The JSON format never carries free text that could hold what a user wrote: the event is the logger's message
*template* (``"could not write %d request records (%s); retrying"``), its arguments only where they are numbers or
booleans (or where the call site vouches for them with ``extra={"safe_args": True}``), and an exception by its type
and the place it was raised, never its message. The text format is for a developer's terminal and prints messages in
full.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid
from contextvars import ContextVar

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

request_id_var: ContextVar[str | None] = ContextVar("upcoach_request_id", default=None)

# What a caller may send as X-Request-ID: a proxy's id (uuid, hex, ULID...), never free text.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id_from(header: str | None) -> str:
    """The caller's request id when it is a plain token, else a new one."""
    if header and _VALID_ID.match(header):
        return header
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Stamps every record with the current request id (attached to handlers, so third-party loggers get it too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def _safe_args(args: object) -> list[object]:
    values = args.values() if isinstance(args, dict) else args if isinstance(args, tuple) else (args,)
    return [v if isinstance(v, int | float | bool) or v is None else f"<{type(v).__name__}>" for v in values]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", None),
            "event": str(record.msg),
        }
        if record.args:
            # Strings only from call sites that vouch for them (extra={"safe_args": True}: route templates...).
            safe = getattr(record, "safe_args", False) and isinstance(record.args, tuple)
            line["args"] = list(record.args) if safe else _safe_args(record.args)
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            frames = traceback.extract_tb(record.exc_info[2])
            if frames:
                last = frames[-1]
                line["exc_where"] = f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"
        return json.dumps(line, separators=(",", ":"))


def configure_logging(level: str, log_format: str) -> None:
    """Root logging for ``upcoach serve``; uvicorn's own loggers are routed through the same handler."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers[:] = []
        uv.propagate = True
