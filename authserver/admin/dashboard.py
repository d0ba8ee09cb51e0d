"""Console section: the dashboard (``/admin``), what an operator checks first.

Clients by kind, active grants (live refresh families), tokens issued in the last 24 hours
(``token.issued`` and ``token.refreshed`` events), failed sign-ins in the last 24 hours, and the
latest audit events. Each number comes from the domain that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from authserver.admin import common
from authserver.admin.audit_log import EventRow, event_rows
from authserver.audit import queries
from authserver.audit.queries import AuditFilter
from authserver.clients import repository as clients
from authserver.db import utcnow
from authserver.deps import ServicesDep
from authserver.grants import service as grants
from authserver.interaction.cookies import Cookies
from authserver.web import pages

DAY = timedelta(hours=24)
RECENT_EVENTS = 20
TOKEN_EVENTS = ("token.issued", "token.refreshed")
FAILED_SIGN_INS = ("login.failed",)


@dataclass(frozen=True)
class Overview:
    clients_by_kind: dict[str, int]
    active_grants: int
    tokens_last_day: int
    failed_sign_ins_last_day: int
    recent: list[EventRow]


def overview(session: Session, now: datetime) -> Overview:
    return Overview(
        clients_by_kind=clients.count_by_kind(session),
        active_grants=grants.live_grant_count(session, now),
        tokens_last_day=queries.count(session, TOKEN_EVENTS, now - DAY),
        failed_sign_ins_last_day=queries.count(session, FAILED_SIGN_INS, now - DAY),
        recent=event_rows(session, queries.page(session, AuditFilter(), limit=RECENT_EVENTS)),
    )


def router(cookies: Cookies) -> APIRouter:
    api = APIRouter()

    @api.get("")
    def dashboard(request: Request, services: ServicesDep) -> Response:
        with services.db.read_session() as session:
            who = common.reader(session, request, cookies)
            shown = overview(session, utcnow())
        return pages.render(request, cookies, "admin/dashboard.html", {"section": "dashboard", "overview": shown},
                            who=who)

    return api
