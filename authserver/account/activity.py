"""A person's own activity: sign-ins, consents, disconnections, password and two-step changes, tool calls.

Read from the audit log, and only rows whose ``actor`` is this person's user id (an indexed
column): a person never sees anyone else's rows, whatever the page is asked. Newest first, in
keyset pages by id (stable while new events arrive, and cheap however far back one goes).

Each event becomes one plain sentence: a message id with named placeholders, translated and
filled where it is shown, so a translator can reorder the words. App and MCP server names are
looked up now; an app or server deleted since falls back to its id, so history stays readable.
Events not listed in ``SENTENCES`` (token issuance, admin changes made by this person…) are
not shown here: they are the operator's audit log, not the person's account history.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from authserver.audit import log as audit
from authserver.audit.models import AuditEvent
from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.web.i18n import N_

PAGE_SIZE = 50
MAX_SHOWN_NAME = 200  # tool names come from MCP servers' reports: bounded before they reach a page

FAILED, DENIED = N_("Failed"), N_("Denied")


@dataclass(frozen=True)
class ActivityRow:
    id: int
    at: datetime
    sentence: str  # a message id with %(name)s placeholders
    values: dict[str, str]
    mark: str | None = None  # a message id ("Failed", "Denied") for what did not succeed
    details: list[str] = field(default_factory=list)  # plain-words scope descriptions


@dataclass(frozen=True)
class ActivityPage:
    rows: list[ActivityRow]
    older: int | None  # ``before`` for the next (older) page, None on the last one
    first: bool  # no newer page exists


class _Names:
    """App, server and scope names for one page, each looked up once."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._apps: dict[str, str] = {}
        self._servers: dict[str, str] = {}
        self._scopes: dict[str, str] = {}

    def app(self, client_id: str | None) -> str:
        if not client_id:
            return "?"
        if client_id not in self._apps:
            client = clients.get(self._session, client_id)
            self._apps[client_id] = client.name if client else client_id
        return self._apps[client_id]

    def server(self, uri: object) -> str:
        key = str(uri or "")
        if not key:
            return "?"
        if key not in self._servers:
            resource = catalog.get_resource(self._session, key)
            self._servers[key] = resource.name if resource else key
        return self._servers[key]

    def scopes(self, names: object) -> list[str]:
        wanted = [str(n) for n in names if n != catalog.OFFLINE_ACCESS] if isinstance(names, list) else []
        missing = [n for n in wanted if n not in self._scopes]
        if missing:
            found = catalog.get_scopes(self._session, missing)
            self._scopes.update({n: found[n].description if n in found else n for n in missing})
        return [self._scopes[n] for n in wanted]


def page(session: Session, user_id: uuid.UUID, before: int | None = None) -> ActivityPage:
    """One page of the person's activity, newest first."""
    events = audit.by_actor(session, str(user_id), SENTENCES, before=before, limit=PAGE_SIZE + 1)
    names = _Names(session)
    rows = [_row(event, names) for event in events[:PAGE_SIZE]]
    older = events[PAGE_SIZE - 1].id if len(events) > PAGE_SIZE else None
    return ActivityPage(rows, older, first=before is None)


def _row(event: AuditEvent, names: _Names) -> ActivityRow:
    detail: dict[str, Any] = event.detail if isinstance(event.detail, dict) else {}
    return SENTENCES[event.event](event, detail, names)


def _ip(event: AuditEvent) -> str:
    return event.ip or "?"


def _signed_in(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    if event.client_id:
        return ActivityRow(event.id, event.at, N_("You signed in from %(ip)s to connect %(app)s"),
                           {"ip": _ip(event), "app": names.app(event.client_id)})
    return ActivityRow(event.id, event.at, N_("You signed in from %(ip)s"), {"ip": _ip(event)})


def _sign_in_failed(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    return ActivityRow(event.id, event.at, N_("Someone tried to sign in to your account from %(ip)s"),
                       {"ip": _ip(event)}, mark=FAILED)


def _sign_in_paused(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    return ActivityRow(event.id, event.at, N_("Sign-in to your account was paused after %(count)s failed attempts"),
                       {"count": str(detail.get("failures", "?"))}, mark=FAILED)


def _signed_out(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    return ActivityRow(event.id, event.at, N_("You signed out"), {})


def _allowed(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    values = {"app": names.app(event.client_id), "server": names.server(detail.get("resource"))}
    sentence = (N_("You allowed %(app)s to use %(server)s") if detail.get("stay_connected", True)
                else N_("You allowed %(app)s to use %(server)s for one session"))
    return ActivityRow(event.id, event.at, sentence, values, details=names.scopes(detail.get("scopes")))


def _refused(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    return ActivityRow(event.id, event.at, N_("You did not allow %(app)s to use %(server)s"),
                       {"app": names.app(event.client_id), "server": names.server(detail.get("resource"))},
                       mark=DENIED, details=names.scopes(detail.get("scopes")))


def _disconnected(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    return ActivityRow(event.id, event.at, N_("You disconnected %(app)s from %(server)s"),
                       {"app": names.app(event.client_id), "server": names.server(detail.get("resource"))})


def _password_changed(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    return ActivityRow(event.id, event.at, N_("You changed your password"), {})


def _password_change_failed(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    return ActivityRow(event.id, event.at, N_("A password change from %(ip)s was refused"), {"ip": _ip(event)},
                       mark=FAILED)


def _second_factor_on(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    return ActivityRow(event.id, event.at, N_("You turned on two-step verification"), {})


def _second_factor_off(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    return ActivityRow(event.id, event.at, N_("You turned off two-step verification"), {})


def _second_factor_failed(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    """After the right password (or in a signed-in session): whoever typed it knows the password."""
    return ActivityRow(event.id, event.at, N_("A wrong two-step verification code was entered from %(ip)s"),
                       {"ip": _ip(event)}, mark=FAILED)


def _recovery_code_used(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    return ActivityRow(event.id, event.at, N_("A recovery code was used to sign in from %(ip)s (%(left)s left)"),
                       {"ip": _ip(event), "left": str(detail.get("recovery_codes_left", "?"))})


def _recovery_codes_replaced(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    return ActivityRow(event.id, event.at, N_("You made new recovery codes"), {})


def _tool_called(event: AuditEvent, detail: dict[str, Any], names: _Names) -> ActivityRow:
    """Reported by the MCP server (contract: tool, tool_outcome success|error|denied, resource, called_at)."""
    values = {"app": names.app(event.client_id), "server": names.server(detail.get("resource")),
              "tool": str(detail.get("tool") or "?")[:MAX_SHOWN_NAME]}
    at = _reported_time(detail.get("called_at")) or event.at
    outcome = detail.get("tool_outcome")
    if outcome == "denied":
        return ActivityRow(event.id, at, N_("%(app)s was not allowed to use %(tool)s on %(server)s"), values,
                           mark=DENIED)
    if outcome == "error" or event.outcome == audit.FAILURE:
        return ActivityRow(event.id, at, N_("%(app)s used %(tool)s on %(server)s, which reported an error"),
                           values, mark=FAILED)
    return ActivityRow(event.id, at, N_("%(app)s used %(tool)s on %(server)s"), values)


def _reported_time(value: object) -> datetime | None:
    """When the tool ran, as the MCP server reported it (ISO 8601, UTC when no offset is given)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


SENTENCES: dict[str, Callable[[AuditEvent, dict[str, Any], _Names], ActivityRow]] = {
    "login.succeeded": _signed_in,
    "login.failed": _sign_in_failed,
    "login.locked": _sign_in_paused,
    "logout": _signed_out,
    "consent.granted": _allowed,
    "consent.denied": _refused,
    "grant.disconnected": _disconnected,
    "password.changed": _password_changed,
    "password.change_failed": _password_change_failed,
    "tool.called": _tool_called,
    "mfa.enrolled": _second_factor_on,
    "mfa.disabled": _second_factor_off,
    "mfa.failed": _second_factor_failed,
    "mfa.recovery_used": _recovery_code_used,
    "mfa.recovery_codes_replaced": _recovery_codes_replaced,
}


@dataclass(frozen=True)
class Pause:
    """Sign-in to the account was paused (``login.locked``, interaction.signin) at ``at``."""

    at: datetime
    failures: int


def pause_before_this_sign_in(session: Session, user_id: uuid.UUID) -> Pause | None:
    """The latest pause of sign-in to this account since the person's previous sign-in: what the
    account page tells them once they are back (the notice goes with their next sign-in)."""
    actor = str(user_id)
    sign_ins = audit.by_actor(session, actor, ["login.succeeded"], limit=2)
    locks = audit.by_actor(session, actor, ["login.locked"], limit=1)
    if not locks or (len(sign_ins) == 2 and locks[0].id < sign_ins[1].id):
        return None
    failures = locks[0].detail.get("failures") if isinstance(locks[0].detail, dict) else None
    return Pause(locks[0].at, failures if isinstance(failures, int) else 0)
