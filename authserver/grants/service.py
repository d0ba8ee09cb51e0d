"""Connected apps and disconnecting them.

Disconnecting ends the grant at once on every node: its refresh families are revoked in the
database, the remembered consent is forgotten (the next authorization asks again), and
introspection reports every access token issued under the grant up to that moment as
inactive (``tokens.lookup``). That takes two rules, because ``iat`` has whole seconds: the
consent row keeps ``tokens_revoked_at``, a cut-off for tokens issued in an earlier second,
and the tokens of the last hour are deny-listed by ``jti`` (from the grant's codes and refresh
tokens), which alone can tell a token issued just before the disconnect from one issued just
after a new consent in the same second. Resource servers that verify JWTs locally only see it
when the short-lived token expires, as with any revocation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from authserver.audit.log import record
from authserver.catalog import repository as catalog
from authserver.catalog.models import Resource
from authserver.catalog.repository import OFFLINE_ACCESS
from authserver.clients.models import Client
from authserver.errors import NotFound
from authserver.interaction.models import Consent
from authserver.tokens import codes, refresh
from authserver.tokens.models import RefreshToken


@dataclass(frozen=True)
class ScopeView:
    name: str
    description: str
    write: bool


@dataclass(frozen=True)
class ConnectedApp:
    client_id: str
    client_name: str
    resource: str
    resource_name: str
    scopes: list[ScopeView]
    stay_connected: bool
    granted_at: datetime
    last_used_at: datetime | None
    live_refresh_families: int


def connected_apps(session: Session, user_id: uuid.UUID, now: datetime) -> list[ConnectedApp]:
    """One row per (client, MCP server) the person has allowed, most recently used first."""
    rows = session.execute(
        select(Consent, Client.name, Resource.name)
        .join(Client, Client.client_id == Consent.client_id)
        .outerjoin(Resource, Resource.uri == Consent.resource)
        .where(Consent.user_id == user_id)
    ).all()
    live = _live_families(session, now, RefreshToken.user_id == user_id)
    # Keys are built here, not in SQL: PostgreSQL text cannot hold the NUL a separator would need.
    last_refresh = {(client_id, resource): at for client_id, resource, at in session.execute(
        select(RefreshToken.client_id, RefreshToken.resource, func.max(RefreshToken.created_at))
        .where(RefreshToken.user_id == user_id).group_by(RefreshToken.client_id, RefreshToken.resource)).all()}
    names = {n for consent, _, _ in rows for n in consent.scopes}
    registered = catalog.get_scopes(session, names)
    apps = []
    for consent, client_name, resource_name in rows:
        scopes = [s for s in consent.scopes if s != OFFLINE_ACCESS]
        if not scopes:
            continue  # disconnected (or never more than "stay connected")
        key = (consent.client_id, consent.resource)
        used = [t for t in (consent.last_used_at, last_refresh.get(key)) if t is not None]
        views = [ScopeView(s, registered[s].description if s in registered else s,
                           bool(registered[s].write) if s in registered else False) for s in scopes]
        apps.append(ConnectedApp(
            client_id=consent.client_id, client_name=client_name, resource=consent.resource,
            resource_name=resource_name or consent.resource, scopes=sorted(views, key=lambda v: not v.write),
            stay_connected=consent.stay_connected, granted_at=consent.created_at,
            last_used_at=max(used) if used else None, live_refresh_families=live.get(key, 0)))
    return sorted(apps, key=lambda a: a.last_used_at or a.granted_at, reverse=True)


def _live_families(session: Session, now: datetime, *where: object) -> dict[tuple[str, str], int]:
    rows = session.execute(
        select(RefreshToken.client_id, RefreshToken.resource, func.count(func.distinct(RefreshToken.family_id)))
        .where(RefreshToken.revoked_at.is_(None), RefreshToken.rotated_at.is_(None),
               RefreshToken.expires_at > now, RefreshToken.family_expires_at > now, *where)  # type: ignore[arg-type]
        .group_by(RefreshToken.client_id, RefreshToken.resource)).all()
    return {(client_id, resource): n for client_id, resource, n in rows}


def live_grants_by_client(session: Session, client_ids: list[str], now: datetime) -> dict[str, int]:
    """Live refresh families per client (the console's "active grants")."""
    if not client_ids:
        return {}
    rows = session.execute(
        select(RefreshToken.client_id, func.count(func.distinct(RefreshToken.family_id)))
        .where(RefreshToken.client_id.in_(client_ids), RefreshToken.revoked_at.is_(None),
               RefreshToken.rotated_at.is_(None), RefreshToken.expires_at > now, RefreshToken.family_expires_at > now)
        .group_by(RefreshToken.client_id)).all()
    return {client_id: n for client_id, n in rows}


def disconnect(session: Session, user_id: uuid.UUID, client_id: str, resource: str, now: datetime, *,
               actor: str, ip: str | None) -> int:
    """End the grant; the number of refresh families revoked."""
    consent = session.scalar(select(Consent).where(
        Consent.user_id == user_id, Consent.client_id == client_id, Consent.resource == resource).with_for_update())
    if consent is None:
        raise NotFound("no such connected app")
    families = revoke_refresh_families(session, now, RefreshToken.user_id == user_id,
                                       RefreshToken.client_id == client_id, RefreshToken.resource == resource)
    for jti, expires_at in codes.issued_access_tokens(session, user_id, client_id, resource, now):
        refresh.deny_access_token(session, jti, expires_at, now)
    forgotten = [s for s in consent.scopes if s != OFFLINE_ACCESS]
    consent.scopes = []
    consent.stay_connected = True
    consent.tokens_revoked_at = now
    record(session, "grant.disconnected", actor=actor, client_id=client_id, ip=ip, user=str(user_id),
           resource=resource, scopes=forgotten, families=families)
    return families


def revoke_refresh_families(session: Session, now: datetime, *where: object) -> int:
    family_ids = list(session.scalars(select(RefreshToken.family_id).distinct().where(
        RefreshToken.revoked_at.is_(None), *where)))  # type: ignore[arg-type]
    for family_id in family_ids:
        refresh.revoke_family(session, family_id, now)
    return len(family_ids)


def live_grant_count(session: Session, now: datetime) -> int:
    """Live refresh families across all clients (the dashboard's "active grants")."""
    return session.scalar(select(func.count(func.distinct(RefreshToken.family_id)))
                          .where(*refresh.live(now))) or 0


@dataclass(frozen=True)
class ClientFootprint:
    """What deleting a client takes with it (the database cascades; this is what the operator is told)."""

    consents: int
    refresh_families: int
    live_refresh_families: int


def client_footprint(session: Session, client_id: str, now: datetime) -> ClientFootprint:
    consents = session.scalar(select(func.count()).select_from(Consent).where(Consent.client_id == client_id)) or 0
    families = session.scalar(select(func.count(func.distinct(RefreshToken.family_id)))
                              .where(RefreshToken.client_id == client_id)) or 0
    live = live_grants_by_client(session, [client_id], now).get(client_id, 0)
    return ClientFootprint(consents, families, live)
