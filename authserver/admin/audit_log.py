"""Console section: the audit log (``/admin/audit``) and its JSON-lines export.

Filters: a person (a username, resolved to the user id events carry as ``actor``; any other text
is taken as a raw actor such as ``cli`` or a client id), a client, an event type, an outcome, and a
time range (``from``/``to`` dates in UTC, ``to`` inclusive, or ``since=1h|24h|7d``). Pages go by
id (``?before=``). The export takes the same filters, streams one JSON object a line and stops at
``EXPORT_CAP`` rows, so a careless click cannot tie up a worker for long.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response, StreamingResponse

from authserver.admin import common
from authserver.audit import queries
from authserver.audit.log import FAILURE, SUCCESS
from authserver.audit.models import AuditEvent
from authserver.db import utcnow
from authserver.deps import ServicesDep
from authserver.errors import NO_STORE
from authserver.interaction.cookies import Cookies
from authserver.users import repository as users
from authserver.web import pages

PAGE_SIZE = 50
EXPORT_CAP = 100_000
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
OUTCOMES = (SUCCESS, FAILURE)
DETAIL_CHARS = 160


@dataclass(frozen=True)
class EventRow:
    event: AuditEvent
    actor_name: str | None  # the username when the actor is a user id
    detail: str  # compact JSON, cut to fit a table cell


def event_rows(session: Session, events: Iterable[AuditEvent]) -> list[EventRow]:
    """Events as the console shows them: actors named, details compact."""
    events = list(events)
    names = users.usernames(session, {e.actor for e in events if e.actor})
    rows = []
    for e in events:
        detail = json.dumps(e.detail, separators=(",", ":"), ensure_ascii=False, default=str) if e.detail else ""
        if len(detail) > DETAIL_CHARS:
            detail = detail[:DETAIL_CHARS - 1] + "…"
        rows.append(EventRow(e, names.get(e.actor or ""), detail))
    return rows


@dataclass
class AuditQuery:
    """The filter form as typed (shown back), the filter it means, and any field it could not read."""

    typed: dict[str, str]
    where: queries.AuditFilter
    errors: dict[str, str] = field(default_factory=dict)

    def link(self, **extra: str) -> dict[str, str]:
        """Query parameters repeating these filters (for the pager and the export link)."""
        return {k: v for k, v in {**self.typed, **extra}.items() if v}


def printable(value: str) -> str:
    """A typed filter without control characters (no event has them; PostgreSQL text cannot hold NUL)."""
    return "".join(ch for ch in value if ord(ch) >= 0x20 and ord(ch) != 0x7F).strip()


def _date(value: str, name: str, errors: dict[str, str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors[name] = "a date as YYYY-MM-DD"
        return None


def read_query(session: Session, params: Mapping[str, str], now: datetime) -> AuditQuery:
    typed = {k: printable(params.get(k, ""))[:2048] for k in ("user", "client_id", "event", "outcome", "from", "to",
                                                               "since")}
    errors: dict[str, str] = {}
    actor = None
    if typed["user"]:
        found = users.get_by_username(session, typed["user"])
        actor = str(found.id) if found else typed["user"]  # "cli", a client id, or a user id pasted as is
    if typed["outcome"] and typed["outcome"] not in OUTCOMES:
        errors["outcome"] = "success or failure"
    if typed["since"] and typed["since"] not in SINCE:
        errors["since"] = "1h, 24h or 7d"
    first, last = _date(typed["from"], "from", errors), _date(typed["to"], "to", errors)
    starts = [datetime.combine(first, time.min, UTC)] if first else []
    if typed["since"] in SINCE:
        starts.append(now - SINCE[typed["since"]])
    where = queries.AuditFilter(
        actor=actor, client_id=typed["client_id"] or None, event=typed["event"] or None,
        outcome=typed["outcome"] if typed["outcome"] in OUTCOMES else None,
        start=max(starts) if starts else None,
        end=datetime.combine(last, time.min, UTC) + timedelta(days=1) if last else None)
    return AuditQuery(typed, where, errors)


def _before(value: str | None) -> int | None:
    """A keyset cursor; anything that is no 64-bit id (SQLite would overflow) means the first page."""
    try:
        before = int(value) if value else None
    except ValueError:
        return None
    return before if before is not None and 0 < before < 2**63 else None


def router(cookies: Cookies) -> APIRouter:
    api = APIRouter()

    @api.get("/audit")
    def audit_log(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            query = read_query(session, request.query_params, utcnow())
            before = _before(request.query_params.get("before"))
            found = queries.page(session, query.where, before=before, limit=PAGE_SIZE + 1)
            rows = event_rows(session, found[:PAGE_SIZE])
            types = queries.event_types(session)
        return pages.render(request, cookies, "admin/audit.html", {
            "section": "audit", "query": query, "rows": rows, "event_types": types, "outcomes": OUTCOMES,
            "since_choices": list(SINCE), "paged": before is not None,
            "next_before": rows[-1].event.id if len(found) > PAGE_SIZE else None,
        }, who=who, status_code=400 if query.errors else 200)

    @api.get("/audit/export")
    def export(request: Request, services: ServicesDep) -> Response:
        now = utcnow()
        with services.db.read_session() as session:
            common.reader(session, request, cookies)
            query = read_query(session, request.query_params, now)
        if query.errors:
            return Response("; ".join(f"{k}: {v}" for k, v in query.errors.items()) + "\n", status_code=400,
                            media_type="text/plain", headers=NO_STORE)
        name = f"audit-{now:%Y%m%dT%H%M%SZ}.jsonl"
        headers: dict[str, Any] = {**NO_STORE, "Content-Disposition": f'attachment; filename="{name}"'}
        return StreamingResponse(queries.export_lines(services.db, query.where, EXPORT_CAP),
                                 media_type="application/x-ndjson", headers=headers)

    return api
