"""Single use of signed one-time proofs across every process: DPoP proof ``jti`` values and
``private_key_jwt`` assertion ``jti`` values.

A proof is remembered until it could no longer be accepted anyway (its ``iat`` window or its
``exp``), in the database every node shares, so a proof replayed to another node is refused too.
A claim is one INSERT whose primary key does the checking: two nodes racing with the same proof
cannot both succeed, whatever the isolation level. The value stored is a SHA-256 of the ``jti``
and who presented it, so the table's size per row is fixed and it holds nothing an attacker
chose verbatim.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import String, delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from authserver.db import Base, Database, affected

MAX_JTI_LENGTH = 256


class UsedJti(Base):
    """A proof ``jti`` already accepted, kept until ``expires_at``."""

    __tablename__ = "used_jtis"

    # sha256(kind NUL issuer NUL jti): the kind keeps DPoP and client assertions apart.
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


def replay_key(kind: str, issuer: str, jti: str) -> str:
    return hashlib.sha256(f"{kind}\0{issuer}\0{jti}".encode()).hexdigest()


def claim(db: Database, kind: str, issuer: str, jti: str, expires_at: datetime) -> bool:
    """True the first time (kind, issuer, jti) is presented; False for a replay.

    Its own short transaction, committed before the caller goes on: a proof accepted by a request
    that then fails is still spent (RFC 9449 §11.1, RFC 7523 §3: a jti is used once, whatever the
    outcome), and no caller's rollback can un-spend it.
    """
    try:
        with db.session() as session:
            session.execute(insert(UsedJti).values(key=replay_key(kind, issuer, jti), expires_at=expires_at))
    except IntegrityError:
        return False
    return True


def purge(session: Session, now: datetime) -> int:
    return affected(session.execute(delete(UsedJti).where(UsedJti.expires_at < now)))
