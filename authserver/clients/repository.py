"""Clients: creation with validated redirect URIs and allow-lists, secrets stored as hashes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from authserver.catalog import repository as catalog
from authserver.catalog.repository import OFFLINE_ACCESS
from authserver.clients.models import AUTH_METHODS, GRANT_TYPES, Client
from authserver.db import affected
from authserver.errors import AppError, NotFound
from authserver.secrets import hash_secret, new_secret
from authserver.uris import check_redirect_uri, is_loopback_uri


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


@dataclass
class CreatedClient:
    client: Client
    client_secret: str | None  # shown once, never stored


def create_client(session: Session, spec: NewClient) -> CreatedClient:
    if not spec.name.strip():
        raise AppError("a client needs a name: it is shown on the consent page")
    grant_types = list(dict.fromkeys(spec.grant_types))
    for grant in grant_types:
        if grant not in GRANT_TYPES:
            raise AppError(f"unsupported grant type {grant!r} (supported: {', '.join(GRANT_TYPES)})")
    auth_method = spec.auth_method or ("none" if spec.public else "client_secret_basic")
    if auth_method not in AUTH_METHODS:
        raise AppError(f"unsupported token endpoint auth method {auth_method!r}")
    public = auth_method == "none"
    if public and "client_credentials" in grant_types:
        raise AppError("a public client cannot use client_credentials")
    redirect_uris = [check_redirect_uri(uri) for uri in dict.fromkeys(spec.redirect_uris)]
    if "authorization_code" in grant_types and not redirect_uris:
        raise AppError("the authorization_code grant needs at least one --redirect-uri")
    scopes = [s for s in dict.fromkeys(spec.scopes) if s != OFFLINE_ACCESS]
    catalog.require_scopes(session, scopes)
    resources = catalog.require_resources(session, spec.resources)
    defaults = spec.default_scopes
    if defaults is None:
        registered = catalog.get_scopes(session, scopes)
        defaults = [s for s in scopes if not registered[s].write]  # least privilege: read-only
    elif not set(defaults) <= set(scopes):
        raise AppError("default scopes must be among the client's allowed scopes")
    client_id = spec.client_id or new_secret(16)
    if session.get(Client, client_id) is not None:
        raise AppError(f"client {client_id!r} already exists")
    secret = None if public else new_secret(32)
    application_type = spec.application_type or (
        "native" if redirect_uris and all(is_loopback_uri(u) for u in redirect_uris) else "web")
    client = Client(
        client_id=client_id, name=spec.name.strip(), kind=spec.kind,
        secret_hash=hash_secret(secret) if secret else None,
        token_endpoint_auth_method=auth_method, application_type=application_type,
        redirect_uris=redirect_uris, grant_types=grant_types, scopes=scopes, resources=resources,
        default_scopes=list(defaults), can_introspect=spec.can_introspect, verified=spec.verified,
    )
    session.add(client)
    session.flush()
    return CreatedClient(client, secret)


def get(session: Session, client_id: str) -> Client | None:
    return session.get(Client, client_id)


def require(session: Session, client_id: str) -> Client:
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound(f"no client {client_id!r}")
    return client


def list_clients(session: Session) -> list[Client]:
    return list(session.scalars(select(Client).order_by(Client.created_at, Client.client_id)))


def delete_client(session: Session, client_id: str) -> None:
    if affected(session.execute(delete(Client).where(Client.client_id == client_id))) != 1:
        raise NotFound(f"no client {client_id!r}")


def rotate_secret(session: Session, client_id: str) -> str:
    client = require(session, client_id)
    if client.is_public:
        raise AppError("a public client has no secret")
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
