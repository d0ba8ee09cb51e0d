"""What ``authserver serve`` logs: uvicorn's configuration, with two changes.

* The access log (``serve --access-log``) never writes a secret in a request line. Our own URLs
  carry one in a single place, the id of a pending authorization request in
  ``/interaction/{id}`` (a bearer value stored only as a hash, see ``interaction.flow``), written
  ``/interaction/<id>``. Query strings are left out whole (``?<query>``): ours carry nothing
  secret, but a client may send anything there (a ``client_secret`` or a ``code`` as a query
  parameter, a link with a token in it), and a log keeps it long after.
* The app's own loggers (``authserver.*``) write to standard error at ``AUTHSERVER_LOG_LEVEL``,
  like uvicorn's (without this they would be at the root logger's ``WARNING``, and in a worker
  process of ``--workers`` at Python's last-resort handler).

``AUTHSERVER_LOG_FORMAT`` picks the shape of every line: ``text`` (the default, for a person at
a terminal: uvicorn's coloured prefixes) or ``json`` (for log collectors: one JSON object per line,
``JsonFormatter``: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the ``request_id`` of
the request being handled, and what the line is about: for access lines ``route`` (the route
template, never the path), ``method``, ``status``, ``latency_ms``, ``client_id``; for audit events
``event``, ``outcome``, ``actor``, ``client_id``, ``ip``, ``detail``). With ``json``, ``serve
--access-log`` writes the app's own access lines (``observe.access_line``: they know the route
and the client) instead of uvicorn's.

Audit events are log lines too (``authserver.events`` at INFO; ``audit.log.log_events``): one log
record may carry many (``audit_events``, a batch of the token path's events written by the
audit buffer's thread), and both formatters write each event as its own line.

uvicorn applies this dictionary in each worker process (``log_config``), so it holds only
what can be pickled.
"""

from __future__ import annotations

import copy
import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson

INTERACTION_ID = re.compile(r"(/interaction/)[^/]+")


def redact_target(target: str) -> str:
    """A request target as the access log writes it: no query string, no interaction id."""
    path, query_mark, _ = target.partition("?")
    return INTERACTION_ID.sub(r"\1<id>", path) + ("?<query>" if query_mark else "")


class RedactRequestLine(logging.Filter):
    """On uvicorn's access handler: its records' arguments are (client, method, target, HTTP version,
    status); the target is redacted before the line is formatted."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], redact_target(args[2]), args[3], args[4])
        return True


EVENT_FIELDS = ("event", "outcome", "actor", "client_id", "ip", "detail")
ACCESS_FIELDS = ("route", "method", "status", "latency_ms", "client_id")


def _request_id() -> str | None:
    from authserver.observe import REQUEST_ID

    return REQUEST_ID.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for the fields); never the raw request line."""

    def format(self, record: logging.LogRecord) -> str:
        base: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name}
        request_id = getattr(record, "request_id", None) or _request_id()
        if request_id:
            base["request_id"] = request_id
        events = getattr(record, "audit_events", None)
        if events is not None:
            # The hot path's events arrive in batches of hundreds: the shared fields are encoded once
            # and each event (its row as stored: event, outcome, actor, client_id, ip, detail, at) once.
            head = orjson.dumps(base)[:-1] + b',"message":'
            dumps = orjson.dumps
            return b"\n".join(head + dumps(row["event"]) + b"," + dumps(row, default=str)[1:]
                               for row in events).decode()
        line = {**base, "message": record.getMessage()}
        for name in ACCESS_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self._line(line)

    @staticmethod
    def _line(fields: dict[str, Any]) -> str:
        return orjson.dumps(fields, default=str).decode()


class TextFormatter(logging.Formatter):
    """uvicorn's text lines; a record of audit events becomes one line per event."""

    def __init__(self, fmt: str | None = None, use_colors: bool | None = None) -> None:
        from uvicorn.logging import DefaultFormatter

        super().__init__()
        self._inner = DefaultFormatter(fmt, use_colors=use_colors)

    def format(self, record: logging.LogRecord) -> str:
        events = getattr(record, "audit_events", None)
        if events is None:
            return self._inner.format(record)
        # The shared prefix (level, logger) formatted once for the batch, each event's text put in it.
        template = self._inner.format(logging.makeLogRecord({**record.__dict__, "msg": "\x00", "args": None,
                                                             "audit_events": None}))
        return "\n".join(template.replace("\x00", row["event"] + " " + " ".join(
            f"{k}={row[k]}" for k in EVENT_FIELDS[1:] if row.get(k) not in (None, {}))) for row in events)


def uvicorn_log_config(level: str, log_format: str = "text", access_log: bool = False) -> dict[str, Any]:
    """uvicorn's default ``log_config`` with the access-log filter, and the app's loggers at ``level``;
    with ``log_format`` json every line JSON, and ``access_log`` the app's own access lines."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_request_line": {"()": RedactRequestLine}}
    config["handlers"]["access"]["filters"] = ["redact_request_line"]
    config["formatters"]["authserver"] = {"()": TextFormatter,
                                          "fmt": "%(levelprefix)s %(name)s: %(message)s", "use_colors": None}
    config["handlers"]["authserver"] = {"formatter": "authserver", "class": "logging.StreamHandler",
                                        "stream": "ext://sys.stderr"}
    config["loggers"]["authserver"] = {"handlers": ["authserver"], "level": level.upper(), "propagate": False}
    json_access = log_format == "json" and access_log
    # The app's own access lines (JSON only; with text, uvicorn's): INFO turns them on (observe.Observe).
    config["loggers"]["authserver.access"] = {"level": "INFO" if json_access else "WARNING"}
    if log_format == "json":
        for name in ("default", "access", "authserver"):
            config["formatters"][name] = {"()": JsonFormatter}
    return config
