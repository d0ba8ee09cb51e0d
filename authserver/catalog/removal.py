"""Removing a scope or a resource, everywhere it is named (the catalog's and the clients' allow-lists).

Apart from the repository because the clients domain depends on the catalog (it validates its
allow-lists against it), so the catalog repository cannot import clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from authserver.catalog import repository as catalog
from authserver.clients import repository as clients


@dataclass(frozen=True)
class Usage:
    """Who allows a scope (or may use a resource): shown before a delete, and on the list."""

    resources: list[str]
    clients: list[tuple[str, str]]  # (client_id, name)


def scope_usage(session: Session) -> dict[str, Usage]:
    by_resource = catalog.resources_allowing(session)
    by_client = clients.allowing_scopes(session)
    return {scope.name: Usage(by_resource.get(scope.name, []), by_client.get(scope.name, []))
            for scope in catalog.list_scopes(session)}


def delete_scope(session: Session, name: str) -> Usage:
    """Delete the scope and remove it from every resource's and client's allow-list.

    Live tokens keep the scope string until they expire; refresh narrows to the resource's
    allow-list, so a refreshed token no longer carries it.
    """
    usage = scope_usage(session).get(name, Usage([], []))
    clients.remove_scope(session, name)
    catalog.delete_scope(session, name)
    return usage


def resource_usage(session: Session, uri: str) -> list[tuple[str, str]]:
    return clients.allowing_resource(session, uri)


def delete_resource(session: Session, uri: str) -> list[tuple[str, str]]:
    """Delete the resource and remove it from clients' allow-lists (were it registered again, they
    would not silently regain it). Refresh tokens for it fail at their next refresh
    (``oauth.grants.refresh_token``); issued access tokens live until they expire."""
    users = resource_usage(session, uri)
    catalog.delete_resource(session, uri)
    clients.remove_resource(session, uri)
    return users
