"""``authserver clients …``: OAuth clients, their secrets, keys, DPoP rule and address allow-list."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from authserver.audit.log import record
from authserver.cli.base import CLI_ACTOR, Commands, Context
from authserver.clients import repository as clients
from authserver.clients.jwks import ALGORITHMS
from authserver.errors import AppError


def _client_row(client: Any) -> dict[str, Any]:
    return {
        "client_id": client.client_id, "name": client.name, "kind": client.kind,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "redirect_uris": client.redirect_uris, "grant_types": client.grant_types,
        "scopes": client.scopes, "default_scopes": client.default_scopes, "resources": client.resources,
        "can_introspect": client.can_introspect, "disabled": client.disabled,
        "dpop_bound_access_tokens": client.dpop_bound_access_tokens,
        "jwks_uri": client.jwks_uri, "jwks_kids": [k.get("kid") for k in (client.jwks or {}).get("keys", [])],
        "token_endpoint_auth_signing_alg": client.token_endpoint_auth_signing_alg,
        "allowed_ips": client.allowed_ips,
    }


def _read_jwks(path: str | None) -> dict[str, Any] | None:
    """A JWK Set from a file (``-``: standard input); only the public keys belong in it."""
    if path is None:
        return None
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
        value = json.loads(text)
    except OSError as exc:
        raise AppError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise AppError(f"{path} is not JSON (a JWK Set: {{\"keys\": [...]}})") from None
    if not isinstance(value, dict):
        raise AppError(f"{path} is not a JWK Set")
    return value


def _refuse_a_duplicate_name(session: Any, name: str, args: argparse.Namespace, *, other_than: str = "") -> None:
    """Two clients with one name look the same on the consent page and in every list; that is
    almost always a command run twice, so it takes --allow-duplicate-name."""
    if args.allow_duplicate_name:
        return
    same = [c.client_id for c in clients.named(session, name) if c.client_id != other_than]
    if same:
        raise AppError(f"a client named {name.strip()!r} exists already ({same[0]}); "
                       "use --allow-duplicate-name to have two")


def cmd_clients_create(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    grants = args.grant_type or (["client_credentials"] if args.introspect and not args.redirect_uri
                                 else ["authorization_code", "refresh_token"])
    spec = clients.NewClient(
        name=args.name, redirect_uris=args.redirect_uri or [], public=args.public, grant_types=grants,
        scopes=args.scope or [], resources=args.resource or [], default_scopes=args.default_scope,
        auth_method=args.auth_method, can_introspect=args.introspect,
        dpop_bound_access_tokens=args.dpop_bound_access_tokens, jwks=_read_jwks(args.jwks_file),
        jwks_uri=args.jwks_uri, signing_alg=args.signing_alg, allowed_ips=args.allowed_ip or [],
        allow_loopback_http=ctx.settings.cimd_allow_loopback_http,
    )
    with ctx.db.session() as session:
        _refuse_a_duplicate_name(session, args.name, args)
        created = clients.create_client(session, spec)
        record(session, "client.created", actor=CLI_ACTOR, client_id=created.client.client_id,
               name=created.client.name)
        row = _client_row(created.client)
    text = f"client_id: {row['client_id']}"
    if created.client_secret:
        row["client_secret"] = created.client_secret
        text += f"\nclient_secret: {created.client_secret}\n(the secret is shown once and stored only as a hash)"
    ctx.out.emit(row, text)


def cmd_clients_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        rows = [_client_row(c) for c in clients.list_clients(session)]
    ctx.out.table(rows, ["client_id", "name", "kind", "token_endpoint_auth_method", "scopes", "resources"])


def cmd_clients_show(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.read_session() as session:
        client = clients.require(session, args.client_id)
        row = _client_row(client) | {
            "created_at": client.created_at.isoformat(),
            "last_used_at": client.last_used_at.isoformat() if client.last_used_at else None}
    ctx.out.fields(row)


def cmd_clients_update(ctx: Context, args: argparse.Namespace) -> None:
    """Change what the options name; the rest stays. A list option replaces the whole list. The
    rules of ``clients create`` apply (``clients.update_client``)."""
    ctx.require_schema()
    with ctx.db.session() as session:
        client = clients.require(session, args.client_id)
        before = _client_row(client)
        name = client.name if args.name is None else args.name
        if name.strip().lower() != client.name.lower():  # a rename: to a name nobody else has
            _refuse_a_duplicate_name(session, name, args, other_than=client.client_id)
        scopes = client.scopes if args.scope is None else args.scope
        defaults = args.default_scope if args.default_scope is not None else (
            None if args.scope is not None else client.default_scopes)  # new scopes: the least-privilege default
        spec = clients.NewClient(
            name=name, redirect_uris=client.redirect_uris if args.redirect_uri is None else args.redirect_uri,
            grant_types=client.grant_types if args.grant_type is None else args.grant_type,
            auth_method=args.auth_method or client.token_endpoint_auth_method, scopes=scopes,
            resources=client.resources if args.resource is None else args.resource, default_scopes=defaults,
            can_introspect=client.can_introspect if args.introspect is None else args.introspect,
            dpop_bound_access_tokens=client.dpop_bound_access_tokens, jwks=client.jwks,
            jwks_uri=client.jwks_uri, signing_alg=client.token_endpoint_auth_signing_alg,
            allowed_ips=client.allowed_ips, allow_loopback_http=ctx.settings.cimd_allow_loopback_http)
        updated = clients.update_client(session, client.client_id, spec)
        after = _client_row(updated.client)
        changed = sorted(k for k in after if after[k] != before[k])
        record(session, "client.updated", actor=CLI_ACTOR, client_id=client.client_id, changed=changed,
               **{k: after[k] for k in changed}, new_secret=updated.client_secret is not None)
    text = f"client {args.client_id} updated: {', '.join(changed)}" if changed else "nothing changed"
    if updated.client_secret:
        after["client_secret"] = updated.client_secret
        text += f"\nclient_secret: {updated.client_secret}\n(it is confidential now; the secret is shown once)"
    ctx.out.emit(after, text)


def _set_disabled(ctx: Context, client_id: str, disabled: bool) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        client = clients.set_disabled(session, client_id, disabled)
        record(session, "client.disabled" if disabled else "client.enabled", actor=CLI_ACTOR,
               client_id=client_id, name=client.name)
        row = _client_row(client)
    ctx.out.emit(row, f"client {client_id} {'disabled' if disabled else 'enabled'}")


def cmd_clients_disable(ctx: Context, args: argparse.Namespace) -> None:
    """At once: its refresh is refused and introspection reports its access tokens inactive."""
    _set_disabled(ctx, args.client_id, True)


def cmd_clients_enable(ctx: Context, args: argparse.Namespace) -> None:
    _set_disabled(ctx, args.client_id, False)


def cmd_clients_rotate_secret(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        secret = clients.rotate_secret(session, args.client_id)
        record(session, "client.secret_rotated", actor=CLI_ACTOR, client_id=args.client_id)
    ctx.out.emit({"client_id": args.client_id, "client_secret": secret},
                 f"client_secret: {secret}\n(the previous secret no longer works; this one is shown once)")


def cmd_clients_dpop(ctx: Context, args: argparse.Namespace) -> None:
    """RFC 9449 §5.2 ``dpop_bound_access_tokens`` on an existing client."""
    ctx.require_schema()
    required = args.state == "on"
    with ctx.db.session() as session:
        clients.set_dpop_bound(session, args.client_id, required)
        record(session, "client.updated", actor=CLI_ACTOR, client_id=args.client_id,
               dpop_bound_access_tokens=required)
    ctx.out.emit({"client_id": args.client_id, "dpop_bound_access_tokens": required},
                 f"client {args.client_id}: DPoP {'required' if required else 'optional'} on token requests")


def cmd_clients_set_keys(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    jwks = _read_jwks(args.jwks_file)
    with ctx.db.session() as session:
        client = clients.set_keys(session, args.client_id, jwks=jwks, jwks_uri=args.jwks_uri,
                                  signing_alg=args.signing_alg,
                                  allow_loopback_http=ctx.settings.cimd_allow_loopback_http)
        record(session, "client.updated", actor=CLI_ACTOR, client_id=args.client_id, changed=["keys"],
               jwks_uri=client.jwks_uri)
        row = _client_row(client)
    ctx.out.emit(row, f"keys of {args.client_id} replaced")


def cmd_clients_set_allowed_ips(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        client = clients.set_allowed_ips(session, args.client_id, args.allowed_ip or [])
        record(session, "client.updated", actor=CLI_ACTOR, client_id=args.client_id, changed=["allowed_ips"],
               allowed_ips=client.allowed_ips)
        row = _client_row(client)
    ctx.out.emit(row, f"{args.client_id} may authenticate from: {' '.join(row['allowed_ips']) or 'anywhere'}")


def cmd_clients_delete(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        clients.delete_client(session, args.client_id)
        record(session, "client.deleted", actor=CLI_ACTOR, client_id=args.client_id)
    ctx.out.emit({"client_id": args.client_id, "deleted": True}, f"deleted client {args.client_id}")


AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
GRANTS = ["authorization_code", "refresh_token", "client_credentials"]


def _allow_duplicate_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-duplicate-name", action="store_true",
                   help="allow a name another client has already (refused by default)")


def register(commands: Commands) -> None:
    command = commands.command
    cl = commands.group("clients", "OAuth clients")
    p = command(cl, "create", cmd_clients_create, "register a client")
    p.add_argument("--name", required=True, help="shown on the consent page and in every list")
    _allow_duplicate_name(p)
    p.add_argument("--redirect-uri", action="append", metavar="URI",
                   help="an exact redirect URI (https, or http on a loopback host); repeat for more")
    p.add_argument("--public", action="store_true", help="no secret (token_endpoint_auth_method none)")
    p.add_argument("--auth-method", choices=AUTH_METHODS,
                   help="how it authenticates at the token endpoint (default client_secret_basic, "
                        "or none with --public)")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--jwks-file", metavar="PATH", help="private_key_jwt: the client's public JWK Set (- for stdin)")
    keys.add_argument("--jwks-uri", metavar="URI", help="private_key_jwt: https URL of the client's JWK Set")
    p.add_argument("--signing-alg", choices=list(ALGORITHMS), help="private_key_jwt: the one algorithm accepted")
    p.add_argument("--allowed-ip", action="append", metavar="CIDR",
                   help="authenticate only from these addresses (default: anywhere)")
    p.add_argument("--grant-type", action="append", metavar="G", choices=GRANTS,
                   help="authorization_code, refresh_token or client_credentials; repeat for more (default: "
                        "the first two, or client_credentials with --introspect and no --redirect-uri)")
    p.add_argument("--scope", action="append", metavar="S", help="a scope it may ask for; repeat for more")
    p.add_argument("--default-scope", action="append", metavar="S",
                   help="what a request without scope gets (default: the read-only allowed scopes)")
    p.add_argument("--resource", action="append", metavar="URI",
                   help="a resource (MCP server) it may get tokens for; repeat for more")
    p.add_argument("--introspect", action="store_true",
                   help="may call the introspection endpoint for tokens of its resources")
    p.add_argument("--dpop-bound-access-tokens", action="store_true",
                   help="every token request must carry a DPoP proof (RFC 9449 §5.2)")
    command(cl, "list", cmd_clients_list, "list clients")
    p = command(cl, "show", cmd_clients_show, "show one client (never its secret)")
    p.add_argument("client_id", help="which client")
    p = command(cl, "update", cmd_clients_update,
                "change a client: only what the options name; a list option replaces the whole list")
    p.add_argument("client_id", help="which client")
    p.add_argument("--name", help="a new name")
    _allow_duplicate_name(p)
    p.add_argument("--redirect-uri", action="append", metavar="URI", help="the redirect URIs (replaces them all)")
    p.add_argument("--auth-method", choices=AUTH_METHODS,
                   help="a new authentication method; becoming confidential prints a new secret once")
    p.add_argument("--grant-type", action="append", metavar="G", choices=GRANTS,
                   help="the grant types (replaces them all)")
    p.add_argument("--scope", action="append", metavar="S", help="the allowed scopes (replaces them all)")
    p.add_argument("--default-scope", action="append", metavar="S",
                   help="the default scopes (replaces them; with a new --scope list and without this: "
                        "its read-only scopes)")
    p.add_argument("--resource", action="append", metavar="URI", help="the allowed resources (replaces them all)")
    p.add_argument("--introspect", action=argparse.BooleanOptionalAction, default=None,
                   help="may (or, with --no-introspect, may not) call the introspection endpoint")
    p = command(cl, "disable", cmd_clients_disable,
                "disable a client at once: sign-ins and refresh refused, its access tokens read inactive")
    p.add_argument("client_id", help="which client")
    p = command(cl, "enable", cmd_clients_enable, "enable a disabled client again")
    p.add_argument("client_id", help="which client")
    p = command(cl, "rotate-secret", cmd_clients_rotate_secret, "replace a confidential client's secret")
    p.add_argument("client_id", help="which client")
    p = command(cl, "dpop", cmd_clients_dpop, "require (on) or stop requiring (off) DPoP proofs from a client")
    p.add_argument("client_id", help="which client")
    p.add_argument("state", choices=["on", "off"], help="on: every token request needs a DPoP proof")
    p = command(cl, "set-keys", cmd_clients_set_keys, "replace a private_key_jwt client's public keys")
    p.add_argument("client_id", help="which client")
    keys = p.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks-file", metavar="PATH", help="the client's public JWK Set (- for stdin)")
    keys.add_argument("--jwks-uri", metavar="URI", help="https URL of the client's JWK Set")
    p.add_argument("--signing-alg", choices=list(ALGORITHMS), help="the one algorithm accepted")
    p = command(cl, "set-allowed-ips", cmd_clients_set_allowed_ips,
                "replace the addresses a client may authenticate from (none given: anywhere)")
    p.add_argument("client_id", help="which client")
    p.add_argument("--allowed-ip", action="append", metavar="CIDR",
                   help="an address or CIDR block; repeat for more")
    p = command(cl, "delete", cmd_clients_delete,
                "delete a client with its consents, codes and refresh tokens")
    p.add_argument("client_id", help="which client")
