"""Scopes and resources: the registered vocabulary of what may be granted."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.catalog.models import Resource, Scope
from authserver.errors import AppError, NotFound
from authserver.uris import canonical_resource_uri

# RFC 6749 §3.3 allows more; we keep names readable and safe in every context.
SCOPE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$")

# Not a resource permission: asks for a refresh token (OpenID Connect §11, used by MCP).
OFFLINE_ACCESS = "offline_access"


def create_scope(session: Session, name: str, description: str, *, write: bool = False,
                 public: bool = True) -> Scope:
    if not SCOPE_NAME_RE.match(name) or name == OFFLINE_ACCESS:
        raise AppError(f"invalid scope name {name!r}")
    if not description.strip():
        raise AppError("a scope needs a description: it is what the consent page shows")
    if session.get(Scope, name) is not None:
        raise AppError(f"scope {name!r} already exists")
    scope = Scope(name=name, description=description.strip(), write=write, public=public)
    session.add(scope)
    session.flush()
    return scope


def list_scopes(session: Session) -> list[Scope]:
    return list(session.scalars(select(Scope).order_by(Scope.name)))


def get_scopes(session: Session, names: Iterable[str]) -> dict[str, Scope]:
    names = list(names)
    if not names:
        return {}
    return {s.name: s for s in session.scalars(select(Scope).where(Scope.name.in_(names)))}


def require_scopes(session: Session, names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    found = get_scopes(session, names)
    missing = [n for n in names if n not in found]
    if missing:
        raise AppError(f"unknown scope {missing[0]!r}")
    return names


def create_resource(session: Session, uri: str, name: str, scopes: Iterable[str] = ()) -> Resource:
    uri = canonical_resource_uri(uri)
    if not name.strip():
        raise AppError("a resource needs a name: it is shown on the consent page")
    scope_names = require_scopes(session, scopes)
    if session.get(Resource, uri) is not None:
        raise AppError(f"resource {uri!r} already exists")
    resource = Resource(uri=uri, name=name.strip(), scopes=scope_names)
    session.add(resource)
    session.flush()
    return resource


def get_resource(session: Session, uri: str) -> Resource | None:
    return session.get(Resource, uri)


def require_resource(session: Session, uri: str) -> Resource:
    resource = session.get(Resource, uri)
    if resource is None:
        raise NotFound(f"unknown resource {uri!r}")
    return resource


def require_resources(session: Session, uris: Iterable[str]) -> list[str]:
    return [require_resource(session, canonical_resource_uri(u)).uri for u in dict.fromkeys(uris)]


def list_resources(session: Session) -> list[Resource]:
    return list(session.scalars(select(Resource).order_by(Resource.uri)))


def set_resource_scopes(session: Session, uri: str, scopes: Iterable[str]) -> Resource:
    resource = require_resource(session, uri)
    resource.scopes = require_scopes(session, scopes)
    return resource
