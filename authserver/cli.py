"""The `authserver` command line: database, server, users, scopes, resources, clients, keys.

Every command runs in one transaction (nothing half-written on error), prints a
one-line ``error: …`` and exits non-zero on bad input, and prints JSON with --json.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from sqlalchemy.exc import OperationalError, ProgrammingError

from authserver import migrate
from authserver.audit.log import record
from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.clients.jwks import ALGORITHMS
from authserver.db import Database, utcnow
from authserver.errors import AppError
from authserver.interaction import sessions
from authserver.keys.models import SigningKey
from authserver.keys.ring import published_keys
from authserver.secrets import new_secret
from authserver.services import build_services
from authserver.settings import ConfigError, Settings, load_settings
from authserver.tokens.purge import purge
from authserver.users import repository as users
from authserver.users.models import ROLES

CLI_ACTOR = "cli"


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, data: Any, text: str) -> None:
        print(json.dumps(data, indent=2, default=str) if self.as_json else text)

    def table(self, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
        if self.as_json:
            print(json.dumps(rows, indent=2, default=str))
            return
        if not rows:
            print("(none)")
            return
        widths = {c: max(len(c), *(len(_cell(r[c])) for r in rows)) for c in columns}
        print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
        for row in rows:
            print("  ".join(_cell(row[c]).ljust(widths[c]) for c in columns).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


class Context:
    def __init__(self, settings: Settings, out: Output) -> None:
        self.settings = settings
        self.out = out
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.settings.database_url)
        return self._db

    def require_schema(self) -> None:
        if not migrate.is_current(self.db):
            raise AppError("the database is not at the latest schema: run `authserver db upgrade`")


# ---- db -------------------------------------------------------------------------------------

def _upgrade(ctx: Context) -> str | None:
    services = build_services(ctx.settings, ctx.db)  # refuses a missing secret before anything is written
    migrate.upgrade(ctx.db)
    services.keys.ensure_key()
    return migrate.current_revision(ctx.db)


def cmd_db_upgrade(ctx: Context, args: argparse.Namespace) -> None:
    revision = _upgrade(ctx)
    ctx.out.emit({"revision": revision}, f"database at revision {revision}")


def cmd_db_purge(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        counts = purge(session, utcnow(), ctx.settings.refresh_reuse_grace)
    ctx.out.emit(counts, "purged: " + ", ".join(f"{n} {name}" for name, n in counts.items()))


def cmd_init(ctx: Context, args: argparse.Namespace) -> None:
    """Everything `make run` needs: schema, a signing key, and a first admin if there is none."""
    revision = _upgrade(ctx)  # one output: --json prints a single document
    upgraded = f"database at revision {revision}\n"
    with ctx.db.session() as session:
        if users.any_admin(session):
            ctx.out.emit({"revision": revision, "admin_created": False},
                         upgraded + "an admin account exists already")
            return
        password = new_secret(12)
        user = users.create_user(session, args.admin, password, ["admin"])
        record(session, "user.created", actor=CLI_ACTOR, username=user.username, roles=user.roles)
    ctx.out.emit(
        {"revision": revision, "admin_created": True, "username": args.admin, "password": password},
        upgraded + f"created admin {args.admin!r} with one-time password: {password}\n"
        f"(shown once; change it with: authserver users set-password {args.admin} --password-stdin)",
    )


def cmd_serve(ctx: Context, args: argparse.Namespace) -> None:
    import uvicorn

    ctx.settings.resolved_secret_key()  # fail now, not in each worker
    _require_schema_apart(ctx)
    # uvloop and httptools (uvicorn's fastest loop and parser, both dependencies) explicitly, so a
    # missing wheel fails loudly instead of falling back. The access log is off unless asked for:
    # it costs about 5 % of a token request, and the audit log records what matters.
    shorthand = proxy_environment(args.proxy_headers, os.environ)
    if shorthand:
        os.environ.update(shorthand)
        load_settings()  # a bad FORWARDED_ALLOW_IPS is one error line now, not one per worker
    uvicorn.run("authserver.app:create_app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=ctx.settings.log_level, proxy_headers=False,
                server_header=False, loop="uvloop", http="httptools", access_log=args.access_log)


def proxy_environment(proxy_headers: bool, environ: Mapping[str, str]) -> dict[str, str]:
    """What ``serve`` adds to the environment so that ``AUTHSERVER_TRUSTED_PROXIES`` is the one rule
    for whose ``X-Forwarded-For`` is believed (``net.client_address``, in every worker).

    uvicorn's own proxy handling is always off: it would rewrite the client address before our
    middleware sees it, under a different rule and a different setting. ``--proxy-headers`` stays
    as a shorthand: when ``AUTHSERVER_TRUSTED_PROXIES`` is unset it trusts ``FORWARDED_ALLOW_IPS``
    (uvicorn's variable, comma-separated; ``*`` is every address), else loopback.
    """
    if not proxy_headers or environ.get("AUTHSERVER_TRUSTED_PROXIES", "").strip():
        return {}
    allowed = [item.strip() for item in environ.get("FORWARDED_ALLOW_IPS", "").split(",") if item.strip()]
    if "*" in allowed:
        allowed = ["0.0.0.0/0", "::/0"]
    return {"AUTHSERVER_TRUSTED_PROXIES": json.dumps(allowed or ["127.0.0.1", "::1"])}


def _require_schema_apart(ctx: Context) -> None:
    """``require_schema`` in a forked child, so the server process never loads alembic (~10 MB
    of its idle RSS) nor keeps the connection the check opened; the child reports as ``main``."""
    if not hasattr(os, "fork"):
        ctx.require_schema()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's outcome is its exit status
        code = 1
        try:
            ctx.require_schema()
            code = 0
        except Exception as exc:
            code = _report(exc)
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(code if code > 0 else 1)  # the child said why


# ---- users ----------------------------------------------------------------------------------

def _user_row(user: Any) -> dict[str, Any]:
    return {"id": str(user.id), "username": user.username, "roles": user.roles, "disabled": user.disabled,
            "created_at": user.created_at.isoformat()}


def _read_password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password, and whether it was generated (and must be shown)."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise AppError("no password on standard input")
        return password, False
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat password: "):
            raise AppError("the passwords differ")
        return first, False
    return new_secret(12), True


def cmd_users_create(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    password, generated = _read_password(args)
    with ctx.db.session() as session:
        user = users.create_user(session, args.username, password, args.role or ["user"])
        record(session, "user.created", actor=CLI_ACTOR, username=user.username, roles=user.roles)
        row = _user_row(user)
    text = f"created user {row['username']} ({' '.join(row['roles'])})"
    if generated:
        row["password"] = password
        text += f"\none-time password: {password}"
    ctx.out.emit(row, text)


def cmd_users_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        rows = [_user_row(u) for u in users.list_users(session)]
    ctx.out.table(rows, ["username", "roles", "disabled", "created_at"])


def cmd_users_set_password(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    password, generated = _read_password(args)
    with ctx.db.session() as session:
        user = users.get_by_username(session, args.username)
        if user is None:
            raise AppError(f"no user {args.username!r}")
        users.set_password(session, user, password)
        # Whoever signed in with the old password (a leaked one-time password) is signed out.
        ended = sessions.end_all(session, user.id)
        record(session, "user.password_set", actor=CLI_ACTOR, username=user.username, sessions_ended=ended)
        row = _user_row(user)
    text = f"password set for {args.username}"
    if generated:
        row["password"] = password
        text += f"\none-time password: {password}"
    ctx.out.emit(row, text)


def cmd_users_disable(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        user = users.set_disabled(session, args.username, True)
        record(session, "user.disabled", actor=CLI_ACTOR, username=user.username)
        row = _user_row(user)
    ctx.out.emit(row, f"disabled user {args.username}")


# ---- scopes and resources -------------------------------------------------------------------

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


# ---- clients --------------------------------------------------------------------------------

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


# ---- keys -----------------------------------------------------------------------------------

def _key_row(key: SigningKey) -> dict[str, Any]:
    return {"kid": key.kid, "alg": key.alg, "created_at": key.created_at.isoformat(),
            "status": "current" if key.retired_at is None else "retired",
            "published_until": key.publish_until.isoformat() if key.publish_until else None}


def cmd_keys_rotate(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    services = build_services(ctx.settings, ctx.db)
    kid = services.keys.rotate()
    with ctx.db.session() as session:
        record(session, "key.rotated", actor=CLI_ACTOR, kid=kid)
    ctx.out.emit({"kid": kid}, f"new signing key {kid}; previous keys stay published for verification")


def cmd_keys_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        rows = [_key_row(k) for k in published_keys(session)]
    ctx.out.table(rows, ["kid", "alg", "status", "created_at", "published_until"])


# ---- parser ---------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """Usage errors look like every other error: one ``error: …`` line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    parser = Parser(prog="authserver", parents=[common],
                    description="OAuth 2.1 authorization server for MCP servers")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def command(sub: Any, name: str, func: Callable[[Context, argparse.Namespace], None],
                help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    def group(name: str, help_text: str) -> Any:
        g = groups.add_parser(name, parents=[common], help=help_text)
        return g.add_subparsers(dest="action", required=True, metavar="ACTION")

    db = group("db", "database schema")
    command(db, "upgrade", cmd_db_upgrade, "migrate the database to the latest schema")
    command(db, "purge", cmd_db_purge, "delete expired codes, requests, sessions, refresh tokens, deny-list rows")

    p = command(groups, "init", cmd_init, "migrate, create a signing key and a first admin if none exists")
    p.add_argument("--admin", default="admin", help="username of the first admin (default: admin)")

    p = command(groups, "serve", cmd_serve, "serve HTTP")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--access-log", action="store_true", help="log every request (off by default)")
    p.add_argument("--proxy-headers", action="store_true",
                   help="shorthand: without AUTHSERVER_TRUSTED_PROXIES, believe X-Forwarded-For from the "
                        "addresses in FORWARDED_ALLOW_IPS (default loopback)")

    us = group("users", "people who sign in")
    p = command(us, "create", cmd_users_create, "create a user")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--role", action="append", choices=list(ROLES),
                   help="admin: the console and every change; auditor: the console read-only; user (default)")
    command(us, "list", cmd_users_list, "list users")
    p = command(us, "set-password", cmd_users_set_password, "set a user's password")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = command(us, "disable", cmd_users_disable, "disable a user")
    p.add_argument("username")

    sc = group("scopes", "permissions a client can ask for")
    p = command(sc, "create", cmd_scopes_create, "register a scope")
    p.add_argument("name")
    p.add_argument("--description", required=True, help="plain words shown on the consent page")
    p.add_argument("--write", action="store_true", help="the scope changes or deletes data")
    p.add_argument("--private", action="store_true", help="leave it out of scopes_supported")
    command(sc, "list", cmd_scopes_list, "list scopes")

    rs = group("resources", "MCP servers (protected resources)")
    p = command(rs, "create", cmd_resources_create, "register a resource")
    p.add_argument("uri")
    p.add_argument("--name", required=True)
    p.add_argument("--scope", action="append", metavar="NAME")
    command(rs, "list", cmd_resources_list, "list resources")

    cl = group("clients", "OAuth clients")
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

    ks = group("keys", "token signing keys")
    command(ks, "rotate", cmd_keys_rotate, "make a new current signing key")
    command(ks, "list", cmd_keys_list, "list published keys")
    return parser


def _report(exc: BaseException) -> int:
    """The one line a failed command prints, and its exit status; unexpected errors go on up."""
    if isinstance(exc, (AppError, ConfigError)):
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, (OperationalError, ProgrammingError)):
        print(f"error: database: {str(exc.orig).splitlines()[0]} "
              "(is AUTHSERVER_DATABASE_URL right, and did `authserver db upgrade` run?)", file=sys.stderr)
        return 1
    raise exc


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(getattr(args, "json", False))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx: Context | None = None
    try:
        ctx = Context(load_settings(), out)
        args.func(ctx, args)
        return 0
    except (AppError, ConfigError, OperationalError, ProgrammingError) as exc:
        return _report(exc)
    finally:
        if ctx is not None and ctx._db is not None:
            ctx._db.dispose()


if __name__ == "__main__":
    sys.exit(main())
