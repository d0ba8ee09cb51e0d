"""What every console route shares: the role check and the audit event of each change.

Reading needs ``admin`` or ``auditor``; any change (every POST) needs ``admin``, checked on the
server before the form is even read as a change. Every change is recorded with the acting
person as ``actor``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request

from authserver.audit.log import record
from authserver.interaction.cookies import Cookies
from authserver.oauth.params import Params
from authserver.web import pages
from authserver.web.pages import SignedIn

READ_ROLES = ("admin", "auditor")
WRITE_ROLES = ("admin",)


def reader(session: Session, request: Request, cookies: Cookies) -> SignedIn:
    return pages.require_signed_in(session, request, cookies, *READ_ROLES)


def writer(session: Session, request: Request, cookies: Cookies, form: Params) -> SignedIn:
    """An admin, with this session's CSRF token on the form."""
    who = pages.require_signed_in(session, request, cookies, *WRITE_ROLES)
    pages.check_csrf(cookies, who, form)
    return who


def audit(session: Session, who: SignedIn, request: Request, event: str, *, client_id: str | None = None,
          **detail: Any) -> None:
    """An admin change, as an audit event in the same transaction as the change."""
    record(session, event, actor=str(who.user.id), client_id=client_id,
           ip=request.client.host if request.client else None, by=who.user.username, **detail)


def may_write(who: SignedIn) -> bool:
    """Templates hide change buttons from auditors; the server refuses them anyway."""
    return "admin" in who.roles
