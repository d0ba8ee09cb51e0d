"""``/readyz``: whether this process can serve requests now, for load balancers and orchestrators.

``/healthz`` says the process answers; ``/readyz`` says it can do its work. Three checks, in order,
each a short query in one read-only transaction:

* ``database``: the database answers;
* ``migrations``: its ``alembic_version`` is ``migrate.HEAD``, the revision this code was written
  for (compared with the constant, not with alembic's scripts: the server process never loads
  alembic, see ``cli.serve._require_schema_apart``; a test keeps the constant equal to alembic's head);
* ``signing_key``: there is a current (unretired) signing key, without which no token can be issued.

200 ``{"status": "ready", "checks": {...: "ok"}}`` when all pass, else 503 with the first failing
check named (``"failed": "migrations"``) and the reason in its entry; the checks after it are not
run (``"skipped"``). No secret or connection detail is ever in the body: the database error's class
name only, the full error in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy import func, select, text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from authserver.db import Database
from authserver.keys.models import SigningKey
from authserver.migrate import HEAD

log = logging.getLogger("authserver.readiness")

CHECKS = ("database", "migrations", "signing_key")
NO_STORE = {"Cache-Control": "no-store"}


def check(db: Database) -> dict[str, Any]:
    """The readiness report: ``status``, each check's outcome and, when not ready, which failed."""
    results: dict[str, str] = dict.fromkeys(CHECKS, "skipped")
    failed: str | None = None
    try:
        with db.read_session() as session:
            session.execute(text("SELECT 1"))
            results["database"] = "ok"
            failed = "migrations"
            revisions = list(session.scalars(text("SELECT version_num FROM alembic_version")))
            if revisions != [HEAD]:
                results["migrations"] = f"database at {', '.join(revisions) or 'no revision'}, code needs {HEAD}"
                return _report(results, failed)
            results["migrations"] = "ok"
            failed = "signing_key"
            current = session.scalar(select(func.count()).select_from(SigningKey)
                                     .where(SigningKey.retired_at.is_(None))) or 0
            if not current:
                results["signing_key"] = "no current signing key (run `authserver keys rotate`)"
                return _report(results, failed)
            results["signing_key"] = "ok"
    except Exception as exc:
        log.warning("readiness check %s failed: %s", failed or "database", exc)
        name = failed or "database"
        results[name] = f"failed ({type(exc).__name__})"
        return _report(results, name)
    return _report(results, None)


def _report(results: dict[str, str], failed: str | None) -> dict[str, Any]:
    if failed is None:
        return {"status": "ready", "checks": results}
    return {"status": "not ready", "failed": failed, "checks": results}


def endpoint(db: Database) -> Callable[[Request], Awaitable[Response]]:
    async def readyz(request: Request) -> Response:
        report = await run_in_threadpool(check, db)
        return Response(orjson.dumps(report), status_code=200 if "failed" not in report else 503,
                        media_type="application/json", headers=NO_STORE)

    return readyz
