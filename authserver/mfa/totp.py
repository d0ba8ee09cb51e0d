"""TOTP (RFC 6238) authenticators and recovery codes: enrolment, checking a code, disabling.

* The shared secret (160 random bits, base32 as authenticator apps expect) is stored encrypted:
  AES-256-GCM under a key derived from AUTHSERVER_SECRET_KEY for this purpose only
  (``keys.crypto.KeyEncryptor``), the user id as associated data, so a blob copied to another
  person's row does not decrypt. A database dump alone yields no secret.
* A code is accepted for the current 30-second step or the one before or after (clock drift),
  and only for a step after the last one accepted: the claim is one conditional UPDATE
  (``last_step < :step``, ``rowcount == 1``), so a code seen over someone's shoulder, or replayed
  on another node at the same moment, is refused.
* Recovery codes: 10 per set, 60 random bits each, shown once; only a SHA-256 hash of each
  (with the user id, so one table of guesses does not fit every account) is stored; using one
  is a conditional UPDATE (``used_at IS NULL``), so each works once, across every node.
* RFC 8176 ``amr`` of a sign-in: ``["pwd"]``; with a TOTP code ``["pwd", "otp", "mfa"]``; with a
  recovery code ``["pwd", "mfa"]`` (RFC 8176 has no value for a recovery code, and "otp" names
  HOTP/TOTP; "mfa" says two factors were shown, so a resource server can tell the cases apart).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import pyotp
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from authserver.db import affected, utcnow
from authserver.keys.crypto import KeyEncryptor
from authserver.mfa.models import RecoveryCode, TotpFactor
from authserver.secrets import hash_secret
from authserver.settings import Settings
from authserver.users.models import User

PURPOSE = "totp-secret-encryption"
VALID_WINDOW = 1  # steps either side of now
RECOVERY_CODES = 10
RECOVERY_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l: read from paper
RECOVERY_LENGTH = 12  # 60 bits
MAX_CODE = 64

AMR_PASSWORD = ["pwd"]
AMR_TOTP = ["pwd", "otp", "mfa"]
AMR_RECOVERY = ["pwd", "mfa"]


class Sealer:
    """Encrypts and decrypts TOTP secrets, each bound to its user id."""

    def __init__(self, secret_key: str) -> None:
        self._aead = KeyEncryptor(secret_key, PURPOSE)

    def seal(self, user_id: uuid.UUID, secret: str) -> bytes:
        return self._aead.encrypt(secret.encode(), b"totp:" + user_id.bytes)

    def open(self, user_id: uuid.UUID, blob: bytes) -> str:
        return self._aead.decrypt(blob, b"totp:" + user_id.bytes).decode()


def _factor(session: Session, user_id: uuid.UUID) -> TotpFactor | None:
    return session.get(TotpFactor, user_id)


def enrolled(session: Session, user_id: uuid.UUID) -> bool:
    """A confirmed TOTP authenticator: every sign-in needs a code."""
    return session.scalar(select(func.count()).select_from(TotpFactor).where(
        TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_not(None))) == 1


def required(settings: Settings, user: User) -> bool:
    """AUTHSERVER_REQUIRE_SECOND_FACTOR: must this person have one?"""
    policy = settings.require_second_factor
    return policy == "everyone" or (policy == "admins" and user.is_admin)


def must_enrol(session: Session, settings: Settings, user: User) -> bool:
    return required(settings, user) and not enrolled(session, user.id)


def pending_secret(session: Session, sealer: Sealer, user_id: uuid.UUID) -> str | None:
    """The secret of an enrolment begun and not confirmed yet (the page shows it again on reload)."""
    factor = _factor(session, user_id)
    if factor is None or factor.confirmed_at is not None:
        return None
    return sealer.open(user_id, factor.secret_encrypted)


def begin(session: Session, sealer: Sealer, user_id: uuid.UUID) -> str:
    """A new secret for an enrolment to confirm; replaces an unconfirmed one. Refused (ValueError)
    while a confirmed authenticator exists: it is disabled first."""
    factor = _factor(session, user_id)
    if factor is not None and factor.confirmed_at is not None:
        raise ValueError("a confirmed authenticator exists")
    secret = pyotp.random_base32()
    if factor is None:
        session.add(TotpFactor(user_id=user_id, secret_encrypted=sealer.seal(user_id, secret), last_step=0))
    else:
        factor.secret_encrypted, factor.last_step = sealer.seal(user_id, secret), 0
    session.flush()
    return secret


def provisioning_uri(secret: str, username: str, issuer_name: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer_name)


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    digits = normalise_totp(code)
    if digits is None:
        return None
    try:
        return pyotp.TOTP(secret).verify_and_get_timecode(digits, for_time=now, valid_window=VALID_WINDOW)
    except pyotp.OTPVerificationError:
        return None


def _claim_step(session: Session, user_id: uuid.UUID, step: int, *, confirmed: bool) -> bool:
    """RFC 6238 §5.2: a code is accepted once; one conditional UPDATE, so once across every node."""
    state = TotpFactor.confirmed_at.is_not(None) if confirmed else TotpFactor.confirmed_at.is_(None)
    return affected(session.execute(update(TotpFactor).where(
        TotpFactor.user_id == user_id, TotpFactor.last_step < step, state).values(last_step=step))) == 1


def confirm(session: Session, sealer: Sealer, user_id: uuid.UUID, code: str, now: datetime | None = None) -> bool:
    """The first code from the authenticator app: the enrolment is confirmed (and its step used)."""
    now = now or utcnow()
    factor = _factor(session, user_id)
    if factor is None or factor.confirmed_at is not None:
        return False
    step = _matching_step(sealer.open(user_id, factor.secret_encrypted), code, now)
    if step is None or not _claim_step(session, user_id, step, confirmed=False):
        return False
    session.execute(update(TotpFactor).where(TotpFactor.user_id == user_id).values(confirmed_at=now))
    session.expire(factor)
    return True


def verify(session: Session, sealer: Sealer, user_id: uuid.UUID, code: str, now: datetime | None = None) -> bool:
    """A code of a confirmed authenticator, for a step not used before (then it is used)."""
    now = now or utcnow()
    factor = _factor(session, user_id)
    if factor is None or factor.confirmed_at is None:
        return False
    step = _matching_step(sealer.open(user_id, factor.secret_encrypted), code, now)
    return step is not None and _claim_step(session, user_id, step, confirmed=True)


def disable(session: Session, user_id: uuid.UUID) -> bool:
    """Remove the authenticator and every recovery code; whether there was one."""
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    return affected(session.execute(delete(TotpFactor).where(TotpFactor.user_id == user_id))) == 1


# --- recovery codes ---

def normalise_totp(code: str) -> str | None:
    code = code.replace(" ", "").strip()
    return code if len(code) == 6 and code.isascii() and code.isdigit() else None


def _normalise_recovery(code: str) -> str | None:
    code = code.strip().lower().replace("-", "").replace(" ", "")
    if len(code) != RECOVERY_LENGTH or any(ch not in RECOVERY_ALPHABET for ch in code):
        return None
    return code


def _recovery_hash(user_id: uuid.UUID, normalised: str) -> str:
    return hash_secret(f"recovery:{user_id}:{normalised}")


def new_recovery_codes(session: Session, user_id: uuid.UUID) -> list[str]:
    """A fresh set (the old one stops working); shown once, as ``xxxx-xxxx-xxxx``."""
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = ["".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
             for _ in range(RECOVERY_CODES)]
    now = utcnow()
    session.add_all(RecoveryCode(code_hash=_recovery_hash(user_id, c), user_id=user_id, created_at=now)
                    for c in codes)
    session.flush()
    return [f"{c[:4]}-{c[4:8]}-{c[8:]}" for c in codes]


def use_recovery_code(session: Session, user_id: uuid.UUID, code: str, now: datetime | None = None) -> bool:
    """Spend one unused recovery code; exactly one caller succeeds for each code."""
    normalised = _normalise_recovery(code)
    if normalised is None:
        return False
    return affected(session.execute(update(RecoveryCode).where(
        RecoveryCode.code_hash == _recovery_hash(user_id, normalised), RecoveryCode.user_id == user_id,
        RecoveryCode.used_at.is_(None)).values(used_at=now or utcnow()))) == 1


def recovery_codes_left(session: Session, user_id: uuid.UUID) -> int:
    return session.scalar(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))) or 0


@dataclass(frozen=True)
class Checked:
    """What a second-step code turned out to be: ``amr`` of the sign-in when it was accepted."""

    method: Literal["totp", "recovery"] | None

    @property
    def amr(self) -> list[str] | None:
        return AMR_TOTP if self.method == "totp" else AMR_RECOVERY if self.method == "recovery" else None


def check(session: Session, sealer: Sealer, user_id: uuid.UUID, code: str, now: datetime | None = None) -> Checked:
    """A sign-in's second step: six digits are a TOTP code, anything else a recovery code."""
    if len(code) > MAX_CODE:
        return Checked(None)
    if normalise_totp(code) is not None:
        return Checked("totp" if verify(session, sealer, user_id, code, now) else None)
    return Checked("recovery" if use_recovery_code(session, user_id, code, now) else None)
