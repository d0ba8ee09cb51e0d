"""Checking a username and password: one rule for the authorization flow and the sign-in page.

A sign-in is three steps, so that no transaction is open during the ~30 ms of argon2id (on
SQLite a write transaction holds the database's one write lock; every other writer would wait):

1. ``prepare``: the throttle's gate (``Throttle.admit``, shared counters in short transactions of
   their own, see ``authserver.limits``), then, in the caller's read transaction, the account.
2. ``verify``, with no transaction: argon2id, on the bounded pool of ``users.passwords`` (never
   on the event loop). An unknown username is verified against a dummy hash, so its answer takes
   as long as a real account's; a hash made with older parameters is rehashed here too. Then the
   throttle learns the verdict (a failure counts against the address; a success clears the
   username's failures from this address).
3. ``conclude``, in the caller's write transaction: the account is read again (disabled, or its
   password changed meanwhile: a failure), a rehash is saved, and a failure is audited. The
   caller records ``login.succeeded`` and the new session in that same transaction.

Throttling (numbers are the defaults, each an ``AUTHSERVER_SIGNIN_*`` setting):

* **username + address** (IPv6: its /64): after 5 failures of one typed username from one
  address, each further attempt waits 30 s, 60 s, 120 s … up to 15 min. Many people behind one
  shared egress address (a hosted MCP client's proxy, an office NAT) are each throttled on
  their own username only: one person's failures never slow another's sign-in.
* **username, from any address**: after 10 failures, the same back-off, so guessing spread over
  many addresses is slowed too. When the wait reaches its longest (the lock), ``login.locked``
  is audited for a real account and the account page tells its owner at their next sign-in.
* **address**: 100 failures in 15 min from one address refuse every sign-in from it for the rest
  of the window (a ceiling, high enough for a shared egress).

An attempt reserves its place before argon2 runs (``hit`` of the failure counters; past the free
budget it must take the back-off hold, which one attempt across all nodes gets), so attempts
racing on many nodes learn no more verdicts than the budget, with or without the right
password. A throttled attempt runs no argon2 and learns nothing. All of it is keyed by the
*typed* username (an HMAC of it: what people type there is often a password), whether or not an
account has it, with one message for every throttled attempt: unknown and real usernames behave
the same, in answers and in timing. A success does not clear the username's failures from other
addresses (a guesser would get a fresh budget whenever the owner signs in).

Audit: every verified failure is ``login.failed`` (the name kept only when it is a real
account's). Throttled attempts are counted, not logged one by one: ``login.throttled`` is written
for the 1st, 10th, 100th … throttled attempt of a rule's key, with the count so far.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver import limits as keys
from authserver.audit.log import record
from authserver.limits import Limiter
from authserver.net import address_group
from authserver.settings import Settings
from authserver.users import repository as users
from authserver.users.models import User
from authserver.users.passwords import hash_password, needs_rehash, verify_password
from authserver.web.i18n import N_

BAD_LOGIN = N_("That username and password do not match an active account.")
THROTTLED = N_("Too many failed sign-ins. Wait a few minutes and try again.")
MAX_USERNAME, MAX_PASSWORD = 150, 1024
MAX_EXPONENT = 20


@dataclass
class Gate:
    """What the throttle decided for one attempt."""

    refused: str | None = None  # the rule that refused it: "pair", "account" or "address"
    retry_after: int = 0
    throttled_count: int = 0  # the how-manieth throttled attempt of that rule's key (for the audit)
    locked: bool = False  # this attempt took the account's longest wait: the lock engaged
    account_failures: int = 0
    holds: list[str] = field(default_factory=list)  # the back-off holds this attempt took


class Throttle:
    """Sign-in throttling on shared counters (see the module docstring)."""

    def __init__(self, limits: Limiter, settings: Settings, secret: str) -> None:
        self.limits = limits
        self.settings = settings
        self._secret = secret

    def _keys(self, username: str, ip: str | None) -> dict[str, str]:
        name = keys.key(self._secret, "signin-username", username)
        group = address_group(ip) or "-"
        return {"pair": f"signin:pair:{keys.key(self._secret, name, group)}", "account": f"signin:account:{name}",
                "address": f"signin:address:{keys.key(self._secret, 'address', group)}"}

    def _delay(self, failures: int, free: int) -> float:
        s = self.settings
        return float(min(s.signin_backoff_seconds * 2 ** min(failures - free, MAX_EXPONENT), s.signin_lock_seconds))

    def admit(self, username: str, ip: str | None) -> Gate:
        s, limits = self.settings, self.limits
        k = self._keys(username, ip)
        for rule in ("pair", "account"):
            hold = limits.peek(k[rule] + ":hold")
            if hold.count:
                return self._refuse(rule, k[rule], hold.retry_after)
        address = limits.peek(k["address"]) if ip else None
        if address is not None and address.count >= s.signin_address_failure_limit:
            return self._refuse("address", k["address"], address.retry_after)
        gate = Gate()
        taken: list[str] = []
        held: list[str] = []
        for rule, free in (("pair", s.signin_failure_limit), ("account", s.signin_account_failure_limit)):
            failures = limits.hit(k[rule], s.signin_failure_window, extend=True).count
            taken.append(rule)
            if rule == "account":
                gate.account_failures = failures
            if failures < free:
                continue
            delay = self._delay(failures, free)
            if not limits.acquire(k[rule] + ":hold", delay):
                for spent in taken:  # someone else took the hold first: this attempt is not counted
                    limits.hit(k[spent], s.signin_failure_window, -1)
                limits.reset(*held)
                return self._refuse(rule, k[rule], max(1, int(delay)))
            held.append(k[rule] + ":hold")
            gate.holds.append(k[rule] + ":hold")
            if rule == "account" and delay >= s.signin_lock_seconds:
                gate.locked = True
        return gate

    def _refuse(self, rule: str, key: str, retry_after: int) -> Gate:
        counted = self.limits.hit(key + ":throttled", self.settings.signin_failure_window, extend=True).count
        return Gate(refused=rule, retry_after=retry_after, throttled_count=counted)

    def failed(self, username: str, ip: str | None) -> None:
        if ip:
            self.limits.hit(self._keys(username, ip)["address"], self.settings.signin_address_window)

    def succeeded(self, username: str, ip: str | None, gate: Gate) -> None:
        """The right password: this address's record for the username goes, and the attempt's own
        place in the username's count, and any wait it started, are given back (it was no
        failure). Failures from elsewhere stay."""
        k = self._keys(username, ip)
        self.limits.reset(k["pair"], k["pair"] + ":hold", k["pair"] + ":throttled", *gate.holds)
        self.limits.hit(k["account"], self.settings.signin_failure_window, -1)


@dataclass
class Attempt:
    """One sign-in attempt between its steps; what was read, then what argon2 said."""

    username: str
    malformed: bool
    ip: str | None
    gate: Gate = field(default_factory=Gate)
    throttle: Throttle | None = None
    user_id: uuid.UUID | None = None
    stored_hash: str | None = None
    verified: bool = False
    new_hash: str | None = None  # the password hashed again with today's parameters

    @property
    def throttled(self) -> bool:
        return self.gate.refused is not None

    @property
    def well_formed(self) -> bool:
        """Input worth an argon2 verification (and that PostgreSQL can store)."""
        return not self.malformed and 0 < len(self.username) <= MAX_USERNAME

    @property
    def named(self) -> bool:
        """A username that may be looked up (and audited when it is an account's)."""
        return not self.malformed and len(self.username) <= MAX_USERNAME


def prepare(session: Session, throttle: Throttle, username: str, *, malformed: bool,
            ip: str | None) -> Attempt:
    """Step 1: the throttle's gate (its own short transactions), then a read of the account."""
    attempt = Attempt(username, malformed, ip, gate=throttle.admit(username, ip), throttle=throttle)
    if not attempt.throttled and attempt.well_formed:
        row = session.execute(select(User.id, User.password_hash).where(User.username == username)).first()
        if row is not None:
            attempt.user_id, attempt.stored_hash = row[0], row[1]
    return attempt


def verify(attempt: Attempt, password: str) -> Attempt:
    """Step 2, with no transaction open: argon2id (a dummy verification for an unknown username),
    then the throttle learns the verdict."""
    if attempt.throttled:
        return attempt  # no argon2 work, and nothing learnt
    if attempt.well_formed and len(password) <= MAX_PASSWORD:
        attempt.verified = verify_password(attempt.stored_hash, password)
        if attempt.verified and attempt.stored_hash is not None and needs_rehash(attempt.stored_hash):
            attempt.new_hash = hash_password(password)
    if attempt.throttle is not None:
        if attempt.verified and attempt.user_id is not None:
            attempt.throttle.succeeded(attempt.username, attempt.ip, attempt.gate)
        else:
            attempt.throttle.failed(attempt.username, attempt.ip)
    return attempt


def conclude(session: Session, attempt: Attempt, *, client_id: str | None = None) -> tuple[User | None, str | None]:
    """Step 3, in the write transaction that also starts the session: ``(user, None)`` when the
    password was right and the account is enabled, else ``(None, error message id)``, audited."""
    user = None
    if attempt.throttled:
        error: str | None = THROTTLED
    elif not attempt.verified or attempt.user_id is None:
        error = BAD_LOGIN
    else:
        user = users.get(session, attempt.user_id)
        if user is None or user.disabled or user.password_hash != attempt.stored_hash:
            user, error = None, BAD_LOGIN  # disabled, removed or given another password meanwhile
        else:
            error = None
    if error is not None:
        known = attempt.named and users.get_by_username(session, attempt.username)
        actor = str(known.id) if known else None
        named = {"username": attempt.username} if known else {}
        gate = attempt.gate
        if gate.refused is None:
            record(session, "login.failed", actor=actor, client_id=client_id, ip=attempt.ip, **named)
            if gate.locked:
                record(session, "login.locked", actor=actor, client_id=client_id, ip=attempt.ip,
                       failures=gate.account_failures, **named)
        elif worth_a_row(gate.throttled_count):
            record(session, "login.throttled", actor=actor, client_id=client_id, ip=attempt.ip, rule=gate.refused,
                   throttled_attempts=gate.throttled_count, retry_after=gate.retry_after, **named)
        return None, error
    assert user is not None
    if attempt.new_hash is not None:
        user.password_hash = attempt.new_hash
    return user, None


def worth_a_row(n: int) -> bool:
    """1, 10, 100, 1000…: a throttled key's audit rows grow with the logarithm of its attempts."""
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


def shown_username(username: str, malformed: bool) -> str:
    """What the form shows again after a failure."""
    return username if not malformed and len(username) <= MAX_USERNAME else ""
