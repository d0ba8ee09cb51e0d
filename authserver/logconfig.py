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

uvicorn applies this dictionary in each worker process (``log_config``), so it holds only
what can be pickled.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

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


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's default ``log_config`` with the access-log filter, and the app's loggers at ``level``."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_request_line": {"()": RedactRequestLine}}
    config["handlers"]["access"]["filters"] = ["redact_request_line"]
    config["formatters"]["authserver"] = {"()": "uvicorn.logging.DefaultFormatter",
                                          "fmt": "%(levelprefix)s %(name)s: %(message)s", "use_colors": None}
    config["handlers"]["authserver"] = {"formatter": "authserver", "class": "logging.StreamHandler",
                                        "stream": "ext://sys.stderr"}
    config["loggers"]["authserver"] = {"handlers": ["authserver"], "level": level.upper(), "propagate": False}
    return config
