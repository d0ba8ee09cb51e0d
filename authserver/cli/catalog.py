"""``authserver scopes …`` and ``authserver resources …``: the catalog of permissions and MCP servers."""

from __future__ import annotations

import argparse
from typing import Any

from authserver.audit.log import record
from authserver.catalog import removal
from authserver.catalog import repository as catalog
from authserver.cli.base import CLI_ACTOR, Commands, Context
from authserver.errors import AppError
from authserver.uris import canonical_resource_uri


def _scope_row(scope: Any) -> dict[str, Any]:
    return {"name": scope.name, "description": scope.description, "write": scope.write, "public": scope.public}


def cmd_scopes_create(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        scope = catalog.create_scope(session, args.name, args.description, write=args.write,
                                     public=not args.private)
        record(session, "scope.created", actor=CLI_ACTOR, scope=scope.name, write=scope.write)
        row = _scope_row(scope)
    ctx.out.emit(row, f"created scope {row['name']}{' (write)' if row['write'] else ''}")


def cmd_scopes_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        rows = [_scope_row(s) for s in catalog.list_scopes(session)]
    ctx.out.table(rows, ["name", "write", "public", "description"])


def cmd_scopes_update(ctx: Context, args: argparse.Namespace) -> None:
    """The name is the scope's identity (tokens and allow-lists carry it); the rest may change."""
    ctx.require_schema()
    with ctx.db.session() as session:
        scope = catalog.require_scope(session, args.name)
        scope = catalog.update_scope(
            session, scope.name, scope.description if args.description is None else args.description,
            write=scope.write if args.write is None else args.write,
            public=scope.public if args.public is None else args.public)
        record(session, "scope.updated", actor=CLI_ACTOR, scope=scope.name, write=scope.write, public=scope.public)
        row = _scope_row(scope)
    ctx.out.emit(row, f"updated scope {row['name']}")


def cmd_scopes_delete(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        usage = removal.delete_scope(session, args.name)
        client_ids = [client_id for client_id, _ in usage.clients]
        record(session, "scope.deleted", actor=CLI_ACTOR, scope=args.name, resources=usage.resources,
               clients=client_ids)
    text = f"deleted scope {args.name}"
    if usage.resources or client_ids:
        text += f"; removed from the allow-lists of: {' '.join(usage.resources + client_ids)}"
    ctx.out.emit({"name": args.name, "deleted": True, "resources": usage.resources, "clients": client_ids}, text)


def _resource_uri(uri: str) -> str:
    """As ``resources create`` stored it (RFC 3986 canonical form); a malformed URI names no resource."""
    try:
        return canonical_resource_uri(uri)
    except AppError:
        raise AppError(f"unknown resource {uri!r}") from None


def _resource_row(resource: Any) -> dict[str, Any]:
    return {"uri": resource.uri, "name": resource.name, "scopes": resource.scopes}


def cmd_resources_create(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        resource = catalog.create_resource(session, args.uri, args.name, args.scope or [])
        record(session, "resource.created", actor=CLI_ACTOR, resource=resource.uri, scopes=resource.scopes)
        row = _resource_row(resource)
    ctx.out.emit(row, f"created resource {row['uri']}")


def cmd_resources_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        rows = [_resource_row(r) for r in catalog.list_resources(session)]
    ctx.out.table(rows, ["uri", "name", "scopes"])


def cmd_resources_update(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        resource = catalog.require_resource(session, _resource_uri(args.uri))
        resource = catalog.update_resource(session, resource.uri, resource.name if args.name is None else args.name,
                                           resource.scopes if args.scope is None else args.scope)
        record(session, "resource.updated", actor=CLI_ACTOR, resource=resource.uri, scopes=resource.scopes)
        row = _resource_row(resource)
    ctx.out.emit(row, f"updated resource {row['uri']}")


def cmd_resources_delete(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    uri = _resource_uri(args.uri)
    with ctx.db.session() as session:
        client_ids = [client_id for client_id, _ in removal.delete_resource(session, uri)]
        record(session, "resource.deleted", actor=CLI_ACTOR, resource=uri, clients=client_ids)
    text = f"deleted resource {uri}" + (f"; removed from clients: {' '.join(client_ids)}" if client_ids else "")
    ctx.out.emit({"uri": uri, "deleted": True, "clients": client_ids}, text)


def register(commands: Commands) -> None:
    sc = commands.group("scopes", "permissions a client can ask for")
    p = commands.command(sc, "create", cmd_scopes_create, "register a scope")
    p.add_argument("name", help="what clients ask for, e.g. read:calendar")
    p.add_argument("--description", required=True, help="plain words shown on the consent page")
    p.add_argument("--write", action="store_true", help="the scope changes or deletes data")
    p.add_argument("--private", action="store_true", help="leave it out of scopes_supported")
    commands.command(sc, "list", cmd_scopes_list, "list scopes")
    p = commands.command(sc, "update", cmd_scopes_update,
                         "change a scope's description, write flag or listing (never its name)")
    p.add_argument("name", help="which scope")
    p.add_argument("--description", help="plain words shown on the consent page")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                   help="the scope changes or deletes data (--no-write: it only reads)")
    listing = p.add_mutually_exclusive_group()
    listing.add_argument("--private", dest="public", action="store_false", default=None,
                         help="leave it out of scopes_supported")
    listing.add_argument("--public", dest="public", action="store_true", default=None,
                         help="list it in scopes_supported")
    p = commands.command(sc, "delete", cmd_scopes_delete,
                         "delete a scope and take it out of every resource's and client's allow-list")
    p.add_argument("name", help="which scope")

    rs = commands.group("resources", "MCP servers (protected resources)")
    p = commands.command(rs, "create", cmd_resources_create, "register a resource")
    p.add_argument("uri", help="the MCP server's URL, e.g. https://mcp.example.com/mcp")
    p.add_argument("--name", required=True, help="shown on the consent page")
    p.add_argument("--scope", action="append", metavar="NAME", help="a scope it accepts; repeat for more")
    commands.command(rs, "list", cmd_resources_list, "list resources")
    p = commands.command(rs, "update", cmd_resources_update, "change a resource's name or scopes (never its URI)")
    p.add_argument("uri", help="which resource")
    p.add_argument("--name", help="shown on the consent page")
    p.add_argument("--scope", action="append", metavar="NAME",
                   help="the scopes it accepts (replaces them all); repeat for more")
    p = commands.command(rs, "delete", cmd_resources_delete,
                         "delete a resource and take it out of every client's allow-list")
    p.add_argument("uri", help="which resource")
