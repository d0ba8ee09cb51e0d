"""Clients: creation and change with validated redirect URIs and allow-lists, secrets stored as hashes.

``create_client`` and ``update_client`` share one validation (``_validate``) so the console's edit
form can never store what creation would refuse. It checks every field and reports each problem
under its field's name (``FieldError.errors``), so a form can show all of them at once next to
their fields; the exception's message is the first problem, for the CLI.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from authserver.catalog import repository as catalog
from authserver.catalog.repository import OFFLINE_ACCESS
from authserver.clients.jwks import ALGORITHMS, JwksError, check_jwks_uri, check_public_jwks
from authserver.clients.models import AUTH_METHODS, GRANT_TYPES, Client
from authserver.db import affected
from authserver.errors import AppError, FieldError, NotFound
from authserver.net import parse_networks
from authserver.secrets import hash_secret, new_client_id, new_secret
from authserver.tokens import refresh
from authserver.tokens.models import RefreshToken
from authserver.uris import check_redirect_uri, is_loopback_uri

KINDS = ("static", "dynamic", "metadata")
SELF_REGISTERED_KINDS = ("dynamic", "metadata")
# What RFC 7591 registration lets a client ask for (clients.registration); an edit keeps to it.
SELF_REGISTERED_GRANTS = ("authorization_code", "refresh_token")
MAX_ALLOWED_IPS = 50




@dataclass
class NewClient:
    name: str
    redirect_uris: list[str] = field(default_factory=list)
    public: bool = False
    grant_types: list[str] = field(default_factory=lambda: ["authorization_code", "refresh_token"])
    scopes: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    default_scopes: list[str] | None = None
    auth_method: str | None = None
    can_introspect: bool = False
    verified: bool = True
    kind: str = "static"
    client_id: str | None = None
    application_type: str | None = None
    # RFC 9449 §5.2: token requests without a DPoP proof are refused.
    dpop_bound_access_tokens: bool = False
    # private_key_jwt: the public keys (exactly one of the two) and optionally the one algorithm.
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    signing_alg: str | None = None
    # Where the client may authenticate from (CIDR blocks); empty: anywhere.
    allowed_ips: list[str] = field(default_factory=list)
    # AUTHSERVER_CIMD_ALLOW_LOOPBACK_HTTP: an http jwks_uri on a loopback host is accepted (tests).
    allow_loopback_http: bool = False


@dataclass
class CreatedClient:
    client: Client
    client_secret: str | None  # shown once, never stored


@dataclass(frozen=True)
class _Valid:
    """A spec that passed every rule, normalised (duplicates dropped, resources canonical)."""

    name: str
    auth_method: str
    grant_types: list[str]
    redirect_uris: list[str]
    scopes: list[str]
    resources: list[str]
    default_scopes: list[str]
    application_type: str
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    signing_alg: str | None = None
    allowed_ips: list[str] = field(default_factory=list)

    @property
    def public(self) -> bool:
        return self.auth_method == "none"

    @property
    def has_secret(self) -> bool:
        return self.auth_method.startswith("client_secret")


def _has_control(value: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in value)


def _validate(session: Session, spec: NewClient, *, self_registered: bool = False) -> _Valid:
    errors: dict[str, str] = {}
    name = spec.name.strip()
    if not name:
        errors["name"] = "a client needs a name: it is shown on the consent page"
    elif len(name) > 200:
        errors["name"] = "a client name has at most 200 characters"
    elif any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        # As at registration: control or bidirectional-override characters can disguise a name.
        errors["name"] = "a client name must not contain control or formatting characters"
    grant_types = list(dict.fromkeys(spec.grant_types))
    supported = SELF_REGISTERED_GRANTS if self_registered else GRANT_TYPES
    unsupported = [g for g in grant_types if g not in supported]
    if unsupported:
        errors["grant_types"] = f"unsupported grant type {unsupported[0]!r} (supported: {', '.join(supported)})"
    elif not grant_types:
        errors["grant_types"] = "a client needs at least one grant type"
    auth_method = spec.auth_method or ("none" if spec.public else "client_secret_basic")
    if auth_method not in AUTH_METHODS:
        errors["auth_method"] = f"unsupported token endpoint auth method {auth_method!r}"
    elif auth_method == "none" and "client_credentials" in grant_types:
        errors["grant_types"] = "a public client cannot use client_credentials"
    redirect_uris: list[str] = []
    for uri in dict.fromkeys(spec.redirect_uris):
        try:
            redirect_uris.append(check_redirect_uri(uri))
        except AppError as exc:
            errors.setdefault("redirect_uris", str(exc))
    if "authorization_code" in grant_types and not redirect_uris and "redirect_uris" not in errors:
        errors["redirect_uris"] = "the authorization_code grant needs at least one --redirect-uri"
    # Names with control characters are no names we know (and PostgreSQL text cannot hold NUL).
    scopes = [s for s in dict.fromkeys(spec.scopes) if s != OFFLINE_ACCESS]
    registered = catalog.get_scopes(session, [s for s in scopes if not _has_control(s)])
    missing = [s for s in scopes if s not in registered]
    if missing:
        errors["scopes"] = f"unknown scope {missing[0]!r}"
    resources: list[str] = []
    try:
        if any(_has_control(uri) for uri in spec.resources):
            raise AppError("malformed resource URI")
        resources = catalog.require_resources(session, spec.resources)
    except AppError as exc:
        errors["resources"] = str(exc)
    defaults = spec.default_scopes
    if defaults is None:
        defaults = [s for s in scopes if s in registered and not registered[s].write]  # least privilege
    elif not set(defaults) <= set(scopes):
        errors["default_scopes"] = "default scopes must be among the client's allowed scopes"
    jwks, jwks_uri, signing_alg = _keys(spec, auth_method, errors)
    allowed_ips: list[str] = []
    try:
        allowed_ips = [str(n) for n in parse_networks(spec.allowed_ips)]
    except ValueError as exc:
        errors["allowed_ips"] = str(exc)
    if len(allowed_ips) > MAX_ALLOWED_IPS:
        errors["allowed_ips"] = f"at most {MAX_ALLOWED_IPS} address blocks"
    if errors:
        raise FieldError(errors)
    application_type = spec.application_type or (
        "native" if redirect_uris and all(is_loopback_uri(u) for u in redirect_uris) else "web")
    return _Valid(name, auth_method, grant_types, redirect_uris, scopes, resources, list(defaults), application_type,
                  jwks, jwks_uri, signing_alg, list(dict.fromkeys(allowed_ips)))


def _keys(spec: NewClient, auth_method: str,
          errors: dict[str, str]) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """private_key_jwt's keys: exactly one of jwks (public keys only) and jwks_uri; none for other methods."""
    if auth_method != "private_key_jwt":
        return None, None, None
    if spec.signing_alg and spec.signing_alg not in ALGORITHMS:
        errors["signing_alg"] = f"unsupported signing algorithm {spec.signing_alg!r} (one of: {', '.join(ALGORITHMS)})"
    if (spec.jwks is None) == (not spec.jwks_uri):
        errors["jwks"] = "private_key_jwt needs the client's public keys: a JWK Set or a jwks_uri (one of the two)"
        return None, None, None
    try:
        if spec.jwks is not None:
            return check_public_jwks(spec.jwks), None, spec.signing_alg or None
        return None, check_jwks_uri(spec.jwks_uri, allow_loopback_http=spec.allow_loopback_http), \
            spec.signing_alg or None
    except JwksError as exc:
        errors["jwks"] = str(exc)
        return None, None, None


def create_client(session: Session, spec: NewClient) -> CreatedClient:
    valid = _validate(session, spec)
    client_id = spec.client_id or new_client_id()
    if session.get(Client, client_id) is not None:
        raise FieldError({"client_id": f"client {client_id!r} already exists"})
    secret = new_secret(32) if valid.has_secret else None
    client = Client(
        client_id=client_id, name=valid.name, kind=spec.kind,
        secret_hash=hash_secret(secret) if secret else None,
        token_endpoint_auth_method=valid.auth_method, application_type=valid.application_type,
        redirect_uris=valid.redirect_uris, grant_types=valid.grant_types, scopes=valid.scopes,
        resources=valid.resources, default_scopes=valid.default_scopes, can_introspect=spec.can_introspect,
        verified=spec.verified, dpop_bound_access_tokens=spec.dpop_bound_access_tokens,
        jwks=valid.jwks, jwks_uri=valid.jwks_uri,
        token_endpoint_auth_signing_alg=valid.signing_alg, allowed_ips=valid.allowed_ips,
    )
    session.add(client)
    session.flush()
    return CreatedClient(client, secret)


def update_client(session: Session, client_id: str, spec: NewClient) -> CreatedClient:
    """Change a client under the rules of ``create_client``.

    A client that becomes confidential gets a new secret (returned, shown once); one that becomes
    public loses its secret. Default scopes follow the same rule as at creation. A metadata-document
    client is refused: its document is authoritative and would overwrite the edit at the next fetch.
    Kind, ``client_id`` and ``verified`` never change here.
    """
    client = require(session, client_id)
    if client.kind == "metadata":
        raise AppError("a metadata-document client is defined by its document; it cannot be edited here")
    valid = _validate(session, spec, self_registered=client.self_registered)
    secret = None
    if not valid.has_secret:
        client.secret_hash = None
    elif client.secret_hash is None:
        secret = new_secret(32)
        client.secret_hash = hash_secret(secret)
    client.name = valid.name
    client.token_endpoint_auth_method = valid.auth_method
    client.application_type = valid.application_type
    client.redirect_uris = valid.redirect_uris
    client.grant_types = valid.grant_types
    client.scopes = valid.scopes
    client.resources = valid.resources
    client.default_scopes = valid.default_scopes
    client.can_introspect = spec.can_introspect
    client.dpop_bound_access_tokens = spec.dpop_bound_access_tokens
    client.jwks, client.jwks_uri = valid.jwks, valid.jwks_uri
    client.token_endpoint_auth_signing_alg = valid.signing_alg
    client.allowed_ips = valid.allowed_ips
    session.flush()
    return CreatedClient(client, secret)


def set_allowed_ips(session: Session, client_id: str, allowed_ips: list[str]) -> Client:
    """Replace a client's IP allow-list (empty: anywhere); an operator control."""
    client = require(session, client_id)
    try:
        networks = [str(n) for n in parse_networks(allowed_ips)]
    except ValueError as exc:
        raise FieldError("allowed_ips", str(exc)) from None
    if len(networks) > MAX_ALLOWED_IPS:
        raise FieldError("allowed_ips", f"at most {MAX_ALLOWED_IPS} address blocks")
    client.allowed_ips = list(dict.fromkeys(networks))
    return client


def set_keys(session: Session, client_id: str, *, jwks: dict[str, Any] | None, jwks_uri: str | None,
             signing_alg: str | None = None, allow_loopback_http: bool = False) -> Client:
    """Replace a private_key_jwt client's keys (a rotation): a JWK Set or a jwks_uri."""
    client = require(session, client_id)
    if client.token_endpoint_auth_method != "private_key_jwt":
        raise AppError("only a private_key_jwt client has keys; change its authentication method first")
    if client.kind == "metadata":
        raise AppError("a metadata-document client's keys come from its document")
    errors: dict[str, str] = {}
    spec = NewClient(name=client.name, jwks=jwks, jwks_uri=jwks_uri, signing_alg=signing_alg,
                     allow_loopback_http=allow_loopback_http)
    client.jwks, client.jwks_uri, client.token_endpoint_auth_signing_alg = _keys(spec, "private_key_jwt", errors)
    if errors:
        raise FieldError(errors)
    return client


def get(session: Session, client_id: str) -> Client | None:
    return session.get(Client, client_id)


def require(session: Session, client_id: str) -> Client:
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound(f"no client {client_id!r}")
    return client


def named(session: Session, name: str) -> list[Client]:
    """Clients with this name, ignoring case and surrounding spaces (how a person reads them)."""
    return list(session.scalars(select(Client).where(func.lower(Client.name) == name.strip().lower())
                                .order_by(Client.created_at, Client.client_id)))


def list_clients(session: Session) -> list[Client]:
    return list(session.scalars(select(Client).order_by(Client.created_at, Client.client_id)))


def count_by_kind(session: Session) -> dict[str, int]:
    """Clients per kind, every kind present (zero when none)."""
    counts: dict[str, int] = {kind: n for kind, n in session.execute(
        select(Client.kind, func.count()).group_by(Client.kind))}
    return {kind: counts.get(kind, 0) for kind in KINDS}


@dataclass(frozen=True)
class ClientQuery:
    """The console's client list: a substring of the name or client_id, a kind, a state."""

    search: str = ""
    kind: str = ""  # one of KINDS, or "" for all
    state: str = ""  # "active", "disabled", "unused" (never issued a token), or "" for all


STATES = ("active", "disabled", "unused")


def _conditions(query: ClientQuery) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if query.search:
        needle = query.search.lower()
        where.append(or_(func.lower(Client.name).contains(needle, autoescape=True),
                         func.lower(Client.client_id).contains(needle, autoescape=True)))
    if query.kind in KINDS:
        where.append(Client.kind == query.kind)
    if query.state == "active":
        where.append(Client.disabled.is_(False))
    elif query.state == "disabled":
        where.append(Client.disabled.is_(True))
    elif query.state == "unused":
        where.append(Client.last_used_at.is_(None))
    return where


def search_clients(session: Session, query: ClientQuery, *, offset: int, limit: int) -> tuple[list[Client], int]:
    """One page of matching clients, newest first, and how many match in all."""
    where = _conditions(query)
    total = session.scalar(select(func.count()).select_from(Client).where(*where)) or 0
    rows = session.scalars(select(Client).where(*where).order_by(Client.created_at.desc(), Client.client_id)
                           .offset(offset).limit(limit))
    return list(rows), total


def _stale(now: datetime, cutoff: datetime) -> tuple[ColumnElement[bool], ...]:
    """The clean-up rule: self-registered, created before ``cutoff``, not used since, and holding no
    live refresh token (never used implies none). Static clients are the operator's and never match.

    A live refresh token always protects its client, even one never marked used, as in
    ``tokens.purge``: deleting it would cut off a person's working connection.
    """
    return (Client.kind.in_(SELF_REGISTERED_KINDS), Client.created_at < cutoff,
            or_(Client.last_used_at.is_(None), Client.last_used_at < cutoff),
            ~exists().where(RefreshToken.client_id == Client.client_id, *refresh.live(now)))


def stale_clients(session: Session, now: datetime, cutoff: datetime) -> list[Client]:
    return list(session.scalars(select(Client).where(*_stale(now, cutoff))
                                .order_by(Client.created_at, Client.client_id)))


def delete_stale_clients(session: Session, now: datetime, cutoff: datetime) -> list[str]:
    """Delete what ``stale_clients`` lists, decided again by the DELETE itself; the ids deleted.

    One statement, so a client that gets a refresh token meanwhile is kept.
    """
    result = session.execute(delete(Client).where(*_stale(now, cutoff)).returning(Client.client_id))
    return sorted(result.scalars().all())


def delete_client(session: Session, client_id: str) -> None:
    if affected(session.execute(delete(Client).where(Client.client_id == client_id))) != 1:
        raise NotFound(f"no client {client_id!r}")


def set_disabled(session: Session, client_id: str, disabled: bool) -> Client:
    """A disabled client is refused at /authorize and at client authentication (so its refresh
    tokens stop working), and introspection reports its access tokens inactive; enabling it
    again restores all of that, since nothing was revoked."""
    client = require(session, client_id)
    client.disabled = disabled
    return client


def set_dpop_bound(session: Session, client_id: str, required: bool) -> Client:
    """RFC 9449 §5.2: whether the client's token requests must carry a DPoP proof."""
    client = require(session, client_id)
    if client.kind == "metadata":
        raise AppError("a metadata-document client is defined by its document; it cannot be edited here")
    client.dpop_bound_access_tokens = required
    return client


def rotate_secret(session: Session, client_id: str) -> str:
    client = require(session, client_id)
    if client.is_public:
        raise AppError("a public client has no secret")
    if client.secret_hash is None:
        raise AppError("this client authenticates with its key (private_key_jwt), not a secret")
    secret = new_secret(32)
    client.secret_hash = hash_secret(secret)
    return secret


def allowed(values: Iterable[str], allow_list: Iterable[str]) -> bool:
    return set(values) <= set(allow_list)


def allowing_scopes(session: Session) -> dict[str, list[tuple[str, str]]]:
    """Scope name → (client_id, name) of every client whose allow-list names it (for the console).

    The allow-lists are JSON, which has no portable "contains" query; the console reads the three
    columns it needs of every client, which is fine at console scale.
    """
    found: dict[str, list[tuple[str, str]]] = {}
    for client_id, name, scopes in session.execute(select(Client.client_id, Client.name, Client.scopes)):
        for scope in scopes or []:
            found.setdefault(scope, []).append((client_id, name))
    return found


def allowing_resource(session: Session, uri: str) -> list[tuple[str, str]]:
    return [(client_id, name) for client_id, name, resources
            in session.execute(select(Client.client_id, Client.name, Client.resources)) if uri in (resources or [])]


def remove_scope(session: Session, scope: str) -> list[str]:
    """Take ``scope`` out of every client's allow-list and default scopes; the client ids changed."""
    changed = []
    for client in session.scalars(select(Client)):
        if scope in client.scopes or scope in client.default_scopes:
            client.scopes = [s for s in client.scopes if s != scope]
            client.default_scopes = [s for s in client.default_scopes if s != scope]
            changed.append(client.client_id)
    return changed


def remove_resource(session: Session, uri: str) -> list[str]:
    """Take ``uri`` out of every client's resource allow-list; the client ids changed."""
    changed = []
    for client in session.scalars(select(Client)):
        if uri in client.resources:
            client.resources = [r for r in client.resources if r != uri]
            changed.append(client.client_id)
    return changed
