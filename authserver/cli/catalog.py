"""``authserver scopes …`` and ``authserver resources …``: the catalog of permissions and MCP servers."""

from __future__ import annotations

import argparse
from typing import Any

from authserver.audit.log import record
from authserver.catalog import repository as catalog
from authserver.cli.base import CLI_ACTOR, Commands, Context


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


def register(commands: Commands) -> None:
    sc = commands.group("scopes", "permissions a client can ask for")
    p = commands.command(sc, "create", cmd_scopes_create, "register a scope")
    p.add_argument("name")
    p.add_argument("--description", required=True, help="plain words shown on the consent page")
    p.add_argument("--write", action="store_true", help="the scope changes or deletes data")
    p.add_argument("--private", action="store_true", help="leave it out of scopes_supported")
    commands.command(sc, "list", cmd_scopes_list, "list scopes")

    rs = commands.group("resources", "MCP servers (protected resources)")
    p = commands.command(rs, "create", cmd_resources_create, "register a resource")
    p.add_argument("uri")
    p.add_argument("--name", required=True)
    p.add_argument("--scope", action="append", metavar="NAME")
    commands.command(rs, "list", cmd_resources_list, "list resources")
