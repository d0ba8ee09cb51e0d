"""Refresh tokens: opaque 256-bit values, stored hashed, one family per grant.

Rotation's hot path (``rotate``) is written in Core statements on a bare connection, not the
ORM: one read of the presented row (with its user's and resource's state joined in), then the
claim and the successor's INSERT as one atomic write. Everything else (revocation, reuse
detection) stays with the ORM session of the request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import ColumnElement, Connection, Table, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from authserver.catalog.models import Resource
from authserver.db import Database, DriverStatement, affected
from authserver.secrets import hash_secret, new_secret
from authserver.tokens.models import RefreshToken, RevokedAccessToken
from authserver.users.models import User

TABLE = cast(Table, RefreshToken.__table__)


@dataclass(frozen=True)
class RefreshGrant:
    family_id: uuid.UUID
    client_id: str
    user_id: uuid.UUID | None
    scopes: list[str]
    resource: str
    auth_time: datetime | None
    family_expires_at: datetime
    # RFC 9449 §5: the DPoP key thumbprint every member of the family must be used with.
    dpop_jkt: str | None = None
    amr: list[str] | None = None  # RFC 8176: how the person signed in at the start of the family


def new_row(grant: RefreshGrant, *, now: datetime, idle_ttl: int, access_jti: str,
            access_expires_at: datetime) -> tuple[str, dict[str, Any]]:
    """A new member of ``grant``'s family: its token, and the column values of its row (not stored yet)."""
    token = new_secret(32)
    return token, {
        "token_hash": hash_secret(token), "family_id": grant.family_id, "client_id": grant.client_id,
        "user_id": grant.user_id, "scopes": grant.scopes, "resource": grant.resource, "auth_time": grant.auth_time,
        "created_at": now, "expires_at": min(now + timedelta(seconds=idle_ttl), grant.family_expires_at),
        "family_expires_at": grant.family_expires_at, "access_jti": access_jti,
        "access_expires_at": access_expires_at, "dpop_jkt": grant.dpop_jkt, "amr": grant.amr,
    }


def create(session: Session, grant: RefreshGrant, *, now: datetime, idle_ttl: int, access_jti: str,
           access_expires_at: datetime) -> str:
    token, row = new_row(grant, now=now, idle_ttl=idle_ttl, access_jti=access_jti,
                         access_expires_at=access_expires_at)
    session.add(RefreshToken(**row))
    return token


def find(session: Session, token: str) -> RefreshToken | None:
    if len(token) > 100:
        return None
    return session.scalar(select(RefreshToken).where(RefreshToken.token_hash == hash_secret(token)))


def deny_access_token(session: Session, jti: str, expires_at: datetime, now: datetime) -> None:
    """Deny-list a jti; idempotent, and safe when two revocations race (ON CONFLICT DO NOTHING)."""
    if expires_at <= now:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(RevokedAccessToken).values(jti=jti, expires_at=expires_at)
                    .on_conflict_do_nothing(index_elements=["jti"]))


def revoke_family(session: Session, family_id: uuid.UUID, now: datetime) -> int:
    """Revoke every member of a family and deny-list the access tokens they issued.

    The UPDATE is repeated until it touches nothing: on PostgreSQL a rotation that was
    in flight commits a successor the first statement could not see (READ COMMITTED
    re-evaluates only the rows it found), and each new statement sees it.
    """
    while affected(session.execute(update(RefreshToken).where(RefreshToken.family_id == family_id,
                                                     RefreshToken.revoked_at.is_(None))
                          .values(revoked_at=now))):
        pass
    members = list(session.execute(select(RefreshToken.access_jti, RefreshToken.access_expires_at)
                                   .where(RefreshToken.family_id == family_id)))
    for jti, expires_at in members:
        if jti and expires_at:
            deny_access_token(session, jti, expires_at, now)
    return len(members)


def live(now: datetime | ColumnElement[datetime]) -> tuple[ColumnElement[bool], ...]:
    """The conditions of a refresh token that can still be used: what makes a grant "live"."""
    return (RefreshToken.revoked_at.is_(None), RefreshToken.rotated_at.is_(None), RefreshToken.expires_at > now,
            RefreshToken.family_expires_at > now)


# ---- rotation's hot path ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Presented:
    """A refresh token's row as read before the claim, with the state of its user and resource.

    What a grant is (family, client, user, scopes, resource, auth_time, absolute expiry) never
    changes once written, so what is read here stays true; whether the token is still usable is
    decided by the claim alone (``claim``), never by this read.
    """

    grant: RefreshGrant
    expires_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None
    user_found: bool
    user_disabled: bool
    resource_scopes: list[str] | None  # None: no such resource

    def looks_live(self, client_id: str, now: datetime) -> bool:
        """Claimable as read (the claim decides). The DPoP binding is checked by the caller."""
        return (self.grant.client_id == client_id and self.rotated_at is None and self.revoked_at is None
                and self.expires_at > now and self.grant.family_expires_at > now)


# The hot path's statements are built once: building a statement and its cache key costs more
# Python than executing it.
PEEK = (
    select(RefreshToken.family_id, RefreshToken.client_id, RefreshToken.user_id, RefreshToken.scopes,
           RefreshToken.resource, RefreshToken.auth_time, RefreshToken.family_expires_at, RefreshToken.expires_at,
           RefreshToken.rotated_at, RefreshToken.revoked_at, RefreshToken.dpop_jkt, RefreshToken.amr,
           User.id.label("found_user_id"),
           User.disabled,
           Resource.uri.label("found_resource"), Resource.scopes.label("resource_scopes"))
    .outerjoin(User, User.id == RefreshToken.user_id)
    .outerjoin(Resource, Resource.uri == RefreshToken.resource)
    .where(RefreshToken.token_hash == bindparam("token_hash"))
)
_NOW = bindparam("now", type_=TABLE.c.rotated_at.type)
# (SQLAlchemy reserves the column names for the SET clause: the conditions are bound under others.)
CLAIM = (update(RefreshToken)
         .where(RefreshToken.token_hash == bindparam("presented"), RefreshToken.client_id == bindparam("claimant"),
                *live(_NOW))
         .values(rotated_at=_NOW, successor_response=bindparam("sealed")))
# The successor's columns, as ``new_row`` gives them; bound as new_<column> in CLAIM_AND_INSERT.
SUCCESSOR_COLUMNS = ("token_hash", "family_id", "client_id", "user_id", "scopes", "resource", "auth_time",
                     "created_at", "expires_at", "family_expires_at", "access_jti", "access_expires_at", "dpop_jkt",
                     "amr")
_CLAIMED = CLAIM.returning(RefreshToken.token_hash).cte("claimed")
# PostgreSQL: WITH claimed AS (UPDATE … RETURNING) INSERT … SELECT … FROM claimed. The successor is
# inserted only if the claim matched, and one statement is atomic on its own: it needs no
# BEGIN/COMMIT around it (the connection is in autocommit).
CLAIM_AND_INSERT = (
    insert(TABLE)
    .from_select(SUCCESSOR_COLUMNS,
                 select(*(bindparam(f"new_{name}", type_=TABLE.c[name].type) for name in SUCCESSOR_COLUMNS))
                 .select_from(_CLAIMED))
    .add_cte(_CLAIMED)
    .returning(TABLE.c.token_hash)
)
INSERT = insert(TABLE)
# On PostgreSQL both run on the driver (see DriverStatement): the hot path's CPU is mostly these two.
PEEK_ON_DRIVER = DriverStatement(PEEK)
CLAIM_AND_INSERT_ON_DRIVER = DriverStatement(CLAIM_AND_INSERT)


def peek(conn: Connection, token_hash: str) -> Presented | None:
    params = {"token_hash": token_hash}
    if conn.dialect.name == "postgresql":
        rows: Sequence[Sequence[Any]] = PEEK_ON_DRIVER.rows(conn, params)
    else:
        rows = conn.execute(PEEK, params).all()
    if not rows:
        return None
    (family_id, owner, user_id, scopes, resource, auth_time, family_expires_at, expires_at, rotated_at, revoked_at,
     dpop_jkt, amr, found_user_id, disabled, found_resource, resource_scopes) = rows[0]
    grant = RefreshGrant(family_id=family_id, client_id=owner, user_id=user_id, scopes=list(scopes),
                         resource=resource, auth_time=auth_time, family_expires_at=family_expires_at,
                         dpop_jkt=dpop_jkt, amr=list(amr) if amr is not None else None)
    return Presented(grant=grant, expires_at=expires_at, rotated_at=rotated_at, revoked_at=revoked_at,
                     user_found=found_user_id is not None, user_disabled=bool(disabled),
                     resource_scopes=list(resource_scopes) if found_resource is not None else None)


def claim(conn: Connection, token_hash: str, *, client_id: str, now: datetime, successor: dict[str, Any],
          successor_response: bytes | None) -> bool:
    """Mark the token rotated and store its successor, atomically; False when it was not claimable
    (already rotated, revoked, expired, another client's): then nothing is written.

    The conditional UPDATE is the single-use rule: of several racing claims (threads, processes,
    nodes) exactly one matches. The sealed successor response is written by that same statement,
    so a racer that finds the token rotated finds the response the grace window hands out.
    """
    params = {"presented": token_hash, "claimant": client_id, "now": now, "sealed": successor_response}
    if conn.dialect.name == "postgresql":
        params.update({f"new_{name}": successor[name] for name in SUCCESSOR_COLUMNS})
        from psycopg.types.json import Json  # only here: a SQLite server never loads psycopg

        params["new_scopes"] = Json(successor["scopes"])  # psycopg's adapter (the statement casts it to json)
        params["new_amr"] = Json(successor["amr"]) if successor["amr"] is not None else None
        return bool(CLAIM_AND_INSERT_ON_DRIVER.rows(conn, params))
    # SQLite has no data-modifying CTEs: two statements in one short BEGIN IMMEDIATE transaction.
    with conn.begin():
        if affected(conn.execute(CLAIM, params)) != 1:
            return False
        conn.execute(INSERT, successor)
    return True


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Successor(Generic[T]):
    row: dict[str, Any]  # the new member's column values (``new_row``)
    response: bytes | None  # the sealed token response, kept for the grace window
    result: T  # what ``rotate`` returns when the claim wins


def rotate(db: Database, token_hash: str, *, client_id: str, now: datetime,
           prepare: Callable[[Presented], Successor[T] | None]) -> T | None:
    """Rotate the presented token in one read and one atomic write.

    ``prepare`` is given the row as read and builds the successor before anything is written, or
    returns None to decline (the token is not usable as it looks: the caller takes the general
    path, which decides why). The successor's ``result`` is returned when the claim won; None when
    declined or when the claim did not match.
    """
    if db.is_sqlite:
        # Read (deferred: never waits for a writer) and prepare before taking the write lock,
        # so the lock is held for the two statements and the commit only.
        with db.read_connection() as conn:
            presented = peek(conn, token_hash)
        successor = prepare(presented) if presented is not None else None
        if successor is None:
            return None
        with db.engine.connect() as conn:
            won = claim(conn, token_hash, client_id=client_id, now=now, successor=successor.row,
                        successor_response=successor.response)
        return successor.result if won else None
    with db.autocommit_connection() as conn:
        # Two round trips in all: the read and the claim (no BEGIN or COMMIT).
        presented = peek(conn, token_hash)
        successor = prepare(presented) if presented is not None else None
        if successor is None:
            return None
        won = claim(conn, token_hash, client_id=client_id, now=now, successor=successor.row,
                    successor_response=successor.response)
        return successor.result if won else None
