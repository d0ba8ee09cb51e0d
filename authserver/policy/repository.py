"""The registration policy and initial access tokens, as the operator set them in the console.

The policy is three ``server_settings`` rows (``registration.mode``, ``cimd.allowed_hosts``,
``cimd.denied_hosts``); a key without a row falls back to its environment value, so the
environment gives the defaults until an operator saves. Initial access tokens (RFC 7591 §3) are
256-bit values of which only the SHA-256 hash is stored; a presented token is looked up by its
hash (the index compares digests of a secret the caller does not know, so the lookup's timing says
nothing about any stored token), and use is one ``UPDATE … WHERE`` so it holds across nodes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from authserver.clients.metadata_document import HostPolicy, host_pattern_error
from authserver.db import affected, utcnow
from authserver.errors import FieldError, NotFound
from authserver.policy.models import InitialAccessToken, ServerSetting
from authserver.secrets import hash_secret, new_secret
from authserver.settings import Settings

MODES = ("open", "token", "off")
MODE_KEY, ALLOWED_KEY, DENIED_KEY = "registration.mode", "cimd.allowed_hosts", "cimd.denied_hosts"
MAX_PATTERNS = 200
MAX_LABEL_LENGTH = 200


@dataclass(frozen=True)
class RegistrationPolicy:
    mode: str  # open | token | off
    allowed_hosts: tuple[str, ...]  # empty: metadata documents from any host
    denied_hosts: tuple[str, ...]
    saved: bool = False  # False: every value is still the environment's default

    @property
    def registration_enabled(self) -> bool:
        return self.mode != "off"

    @property
    def hosts(self) -> HostPolicy:
        return HostPolicy.of(self.allowed_hosts or None, self.denied_hosts)


def defaults(settings: Settings) -> RegistrationPolicy:
    return RegistrationPolicy(settings.registration, tuple(settings.cimd_allowed_hosts),
                              tuple(settings.cimd_denied_hosts))


def load(session: Session, settings: Settings) -> RegistrationPolicy:
    base = defaults(settings)
    rows = {row.key: row.value for row in session.scalars(
        select(ServerSetting).where(ServerSetting.key.in_((MODE_KEY, ALLOWED_KEY, DENIED_KEY))))}
    mode = rows.get(MODE_KEY)
    return RegistrationPolicy(
        mode if mode in MODES else base.mode,
        _patterns(rows.get(ALLOWED_KEY), base.allowed_hosts),
        _patterns(rows.get(DENIED_KEY), base.denied_hosts),
        saved=bool(rows),
    )


def _patterns(value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return default


def parse_patterns(text: str, field: str) -> tuple[str, ...]:
    """One pattern a line, blank lines ignored; each must be one ``HostPolicy`` can match."""
    patterns = [line.strip().lower() for line in text.splitlines() if line.strip()]
    if len(patterns) > MAX_PATTERNS:
        raise FieldError(field, f"at most {MAX_PATTERNS} patterns")
    for pattern in patterns:
        error = host_pattern_error(pattern)
        if error:
            raise FieldError(field, error)
    return tuple(dict.fromkeys(patterns))


def save(session: Session, mode: str, allowed_hosts: Iterable[str], denied_hosts: Iterable[str],
         by: str) -> None:
    if mode not in MODES:
        raise FieldError("mode", "choose open, token or off")
    for key, value in ((MODE_KEY, mode), (ALLOWED_KEY, list(allowed_hosts)), (DENIED_KEY, list(denied_hosts))):
        row = session.get(ServerSetting, key)
        if row is None:
            session.add(ServerSetting(key=key, value=value, updated_by=by))
        else:
            row.value, row.updated_by = value, by
    session.flush()


# --- Initial access tokens -------------------------------------------------------------------

def create_token(session: Session, label: str, expires_at: datetime | None, by: str,
                 now: datetime | None = None) -> tuple[InitialAccessToken, str]:
    """A new token and its value, which exists only in this return value (show it once)."""
    label = label.strip()
    if not label:
        raise FieldError("label", "a label says who the token is for")
    if len(label) > MAX_LABEL_LENGTH:
        raise FieldError("label", f"at most {MAX_LABEL_LENGTH} characters")
    if expires_at is not None and expires_at <= (now or utcnow()):
        raise FieldError("expires_at", "the expiry must be in the future")
    value = new_secret(32)
    row = InitialAccessToken(token_hash=hash_secret(value), label=label, created_by=by, expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, value


def list_tokens(session: Session) -> list[InitialAccessToken]:
    return list(session.scalars(select(InitialAccessToken).order_by(InitialAccessToken.created_at.desc())))


def require_token(session: Session, token_id: uuid.UUID) -> InitialAccessToken:
    row = session.get(InitialAccessToken, token_id)
    if row is None:
        raise NotFound("no such initial access token")
    return row


def revoke_token(session: Session, token_id: uuid.UUID, now: datetime | None = None) -> InitialAccessToken:
    row = require_token(session, token_id)
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
    return row


def use_token(session: Session, value: str, now: datetime | None = None) -> bool:
    """Whether ``value`` is a live console-made token (not revoked, not expired); records the use."""
    if not value or len(value) > 100:
        return False
    now = now or utcnow()
    return affected(session.execute(
        update(InitialAccessToken)
        .where(InitialAccessToken.token_hash == hash_secret(value), InitialAccessToken.revoked_at.is_(None),
               or_(InitialAccessToken.expires_at.is_(None), InitialAccessToken.expires_at > now))
        .values(last_used_at=now)
    )) == 1
