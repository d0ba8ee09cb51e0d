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


def register(commands: Commands) -> None:
    command = commands.command
    cl = commands.group("clients", "OAuth clients")
    p = command(cl, "create", cmd_clients_create, "register a client")
    p.add_argument("--name", required=True)
    p.add_argument("--redirect-uri", action="append", metavar="URI")
    p.add_argument("--public", action="store_true", help="no secret (token_endpoint_auth_method none)")
    p.add_argument("--auth-method", choices=["client_secret_basic", "client_secret_post", "private_key_jwt", "none"])
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--jwks-file", metavar="PATH", help="private_key_jwt: the client's public JWK Set (- for stdin)")
    keys.add_argument("--jwks-uri", metavar="URI", help="private_key_jwt: https URL of the client's JWK Set")
    p.add_argument("--signing-alg", choices=list(ALGORITHMS), help="private_key_jwt: the one algorithm accepted")
    p.add_argument("--allowed-ip", action="append", metavar="CIDR",
                   help="authenticate only from these addresses (default: anywhere)")
    p.add_argument("--grant-type", action="append", metavar="G",
                   choices=["authorization_code", "refresh_token", "client_credentials"])
    p.add_argument("--scope", action="append", metavar="S")
    p.add_argument("--default-scope", action="append", metavar="S",
                   help="what a request without scope gets (default: the read-only allowed scopes)")
    p.add_argument("--resource", action="append", metavar="URI")
    p.add_argument("--introspect", action="store_true",
                   help="may call the introspection endpoint for tokens of its resources")
    p.add_argument("--dpop-bound-access-tokens", action="store_true",
                   help="every token request must carry a DPoP proof (RFC 9449 §5.2)")
    command(cl, "list", cmd_clients_list, "list clients")
    p = command(cl, "rotate-secret", cmd_clients_rotate_secret, "replace a confidential client's secret")
    p.add_argument("client_id")
    p = command(cl, "dpop", cmd_clients_dpop, "require (on) or stop requiring (off) DPoP proofs from a client")
    p.add_argument("client_id")
    p.add_argument("state", choices=["on", "off"])
    p = command(cl, "set-keys", cmd_clients_set_keys, "replace a private_key_jwt client's public keys")
    p.add_argument("client_id")
    keys = p.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks-file", metavar="PATH", help="the client's public JWK Set (- for stdin)")
    keys.add_argument("--jwks-uri", metavar="URI", help="https URL of the client's JWK Set")
    p.add_argument("--signing-alg", choices=list(ALGORITHMS), help="the one algorithm accepted")
    p = command(cl, "set-allowed-ips", cmd_clients_set_allowed_ips,
                "replace the addresses a client may authenticate from (none given: anywhere)")
    p.add_argument("client_id")
    p.add_argument("--allowed-ip", action="append", metavar="CIDR")
    p = command(cl, "delete", cmd_clients_delete, "delete a client")
    p.add_argument("client_id")
