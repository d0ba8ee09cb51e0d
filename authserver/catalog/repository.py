"""Scopes and resources: the registered vocabulary of what may be granted."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.catalog.models import Resource, Scope
from authserver.errors import AppError, FieldError, NotFound
from authserver.uris import canonical_resource_uri

# RFC 6749 §3.3 allows more; we keep names readable and safe in every context.
SCOPE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}")  # fullmatch: `$` allows a final newline

# Not a resource permission: asks for a refresh token (OpenID Connect §11, used by MCP).
OFFLINE_ACCESS = "offline_access"


def create_scope(session: Session, name: str, description: str, *, write: bool = False,
                 public: bool = True) -> Scope:
    if not SCOPE_NAME_RE.fullmatch(name) or name == OFFLINE_ACCESS:
        raise FieldError("name", f"invalid scope name {name!r}: letters, digits and _ . : / - (up to 100), "
                                 f"not {OFFLINE_ACCESS}")
    if not description.strip():
        raise FieldError("description", "a scope needs a description: it is what the consent page shows")
    if session.get(Scope, name) is not None:
        raise FieldError("name", f"scope {name!r} already exists")
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
        raise FieldError("scopes", f"unknown scope {missing[0]!r}")
    return names


def create_resource(session: Session, uri: str, name: str, scopes: Iterable[str] = ()) -> Resource:
    try:
        uri = canonical_resource_uri(uri)
    except AppError as exc:
        raise FieldError("uri", str(exc)) from exc
    if not name.strip():
        raise FieldError("name", "a resource needs a name: it is shown on the consent page")
    scope_names = require_scopes(session, scopes)
    if session.get(Resource, uri) is not None:
        raise FieldError("uri", f"resource {uri!r} already exists")
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


def update_scope(session: Session, name: str, description: str, *, write: bool, public: bool) -> Scope:
    """The name is the scope's identity (tokens and allow-lists carry it), so it never changes."""
    scope = require_scope(session, name)
    if not description.strip():
        raise FieldError("description", "a scope needs a description: it is what the consent page shows")
    scope.description, scope.write, scope.public = description.strip(), write, public
    return scope


def require_scope(session: Session, name: str) -> Scope:
    scope = session.get(Scope, name)
    if scope is None:
        raise NotFound(f"unknown scope {name!r}")
    return scope


def resources_allowing(session: Session) -> dict[str, list[str]]:
    """Scope name → URIs of the resources whose allow-list names it."""
    found: dict[str, list[str]] = {}
    for resource in list_resources(session):
        for scope in resource.scopes:
            found.setdefault(scope, []).append(resource.uri)
    return found


def delete_scope(session: Session, name: str) -> list[str]:
    """Delete the scope and take it out of every resource's allow-list; the resource URIs changed.
    Clients' allow-lists belong to the clients domain (see ``catalog.removal``)."""
    scope = require_scope(session, name)
    changed = []
    for resource in list_resources(session):
        if name in resource.scopes:
            resource.scopes = [s for s in resource.scopes if s != name]
            changed.append(resource.uri)
    session.delete(scope)
    session.flush()
    return changed


def update_resource(session: Session, uri: str, name: str, scopes: Iterable[str]) -> Resource:
    resource = require_resource(session, uri)
    if not name.strip():
        raise FieldError("name", "a resource needs a name: it is shown on the consent page")
    resource.name = name.strip()
    resource.scopes = require_scopes(session, scopes)
    return resource


def delete_resource(session: Session, uri: str) -> None:
    session.delete(require_resource(session, uri))
    session.flush()
