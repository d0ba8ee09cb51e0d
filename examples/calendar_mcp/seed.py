"""Seed authserver's database for the calendar demo; safe to run any number of times.

Creates (or brings back in line) the scopes ``read:calendar`` and ``write:calendar``, the
resource (the demo server's MCP URL) allowing both, a demo person whose password is printed,
and the demo server's own confidential client, "Calendar MCP server" (``calendar-mcp-server``:
``client_credentials``, ``can_introspect`` for the resource), with which it reports tool calls.
Each run sets a fresh password for that person (unless ``--password`` or
``CALENDAR_DEMO_PASSWORD`` gives one), so the printed one always works. Uses the same
``AUTHSERVER_*`` settings as the ``authserver`` command; run ``authserver init`` first.

    python -m examples.calendar_mcp.seed [--resource URL] [--username demo] [--wait URL ...]
    python -m examples.calendar_mcp.seed --client-env [--resource URL]

``--free-ports PORT...`` only checks that nothing listens on those ports (``make demo`` runs it
first, so a port in use is one clear line at once). ``--wait`` first polls the given URLs until
they answer (used by ``make demo`` so the summary is printed once both servers are up).
``--client-env`` seeds, gives the server's client a new
secret and prints only ``CALENDAR_MCP_CLIENT_ID=…`` and ``CALENDAR_MCP_CLIENT_SECRET=…`` lines,
which ``make demo`` exports to the demo server before starting it (a secret is stored only as a
hash, so each start needs a fresh one).
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from sqlalchemy.orm import Session

from authserver import migrate
from authserver.audit.log import record
from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.db import Database
from authserver.errors import AppError
from authserver.secrets import new_secret
from authserver.settings import ConfigError, load_settings
from authserver.uris import canonical_resource_uri
from authserver.users import repository as users
from examples.calendar_mcp.server import DEFAULT_RESOURCE

ACTOR = "calendar-demo-seed"
MCP_CLIENT_ID = "calendar-mcp-server"
MCP_CLIENT_NAME = "Calendar MCP server"
SCOPES = [
    ("read:calendar", "See your calendar events", False),
    ("write:calendar", "Create and change events in your calendar", True),
]


@dataclass
class Seeded:
    resource: str
    username: str
    password: str
    created: list[str]
    client_id: str = MCP_CLIENT_ID
    client_secret: str | None = None  # set when the client was created or its secret rotated


def seed(db: Database, resource: str = DEFAULT_RESOURCE, *, username: str = "demo",
         password: str | None = None, rotate_client_secret: bool = False) -> Seeded:
    """Idempotent: creates what is missing, corrects what differs, and (re)sets the demo password.

    The demo server's client gets a secret when it is created, or a new one with ``rotate_client_secret``.
    """
    password = password or new_secret(12)
    created: list[str] = []
    with db.session() as s:
        existing = catalog.get_scopes(s, [name for name, _, _ in SCOPES])
        for name, description, write in SCOPES:
            scope = existing.get(name)
            if scope is None:
                catalog.create_scope(s, name, description, write=write)
                record(s, "scope.created", actor=ACTOR, scope=name, write=write)
                created.append(f"scope {name}")
            else:
                scope.description, scope.write = description, write
        uri = canonical_resource_uri(resource)
        names = [name for name, _, _ in SCOPES]
        if catalog.get_resource(s, uri) is None:
            catalog.create_resource(s, uri, "Calendar (demo)", names)
            record(s, "resource.created", actor=ACTOR, resource=uri, scopes=names)
            created.append(f"resource {uri}")
        else:
            catalog.set_resource_scopes(s, uri, names)
        user = users.get_by_username(s, username)
        if user is None:
            user = users.create_user(s, username, password)
            record(s, "user.created", actor=ACTOR, username=username, roles=user.roles)
            created.append(f"user {username}")
        else:
            users.set_password(s, user, password)
            user.disabled = False
        secret = _seed_mcp_client(s, uri, created, rotate_client_secret)
    return Seeded(uri, username, password, created, MCP_CLIENT_ID, secret)


def _seed_mcp_client(s: Session, uri: str, created: list[str], rotate_secret: bool) -> str | None:
    """The demo server's own client: introspects and reports tool calls for the calendar resource."""
    client = clients.get(s, MCP_CLIENT_ID)
    if client is None:
        made = clients.create_client(s, clients.NewClient(
            name=MCP_CLIENT_NAME, client_id=MCP_CLIENT_ID, grant_types=["client_credentials"], resources=[uri],
            can_introspect=True))
        record(s, "client.created", actor=ACTOR, client_id=MCP_CLIENT_ID, name=MCP_CLIENT_NAME)
        created.append(f"client {MCP_CLIENT_ID}")
        return made.client_secret
    client.name, client.grant_types, client.resources = MCP_CLIENT_NAME, ["client_credentials"], [uri]
    client.token_endpoint_auth_method, client.can_introspect, client.disabled = "client_secret_basic", True, False
    if not rotate_secret:
        return None
    secret = clients.rotate_secret(s, MCP_CLIENT_ID)
    record(s, "client.secret_rotated", actor=ACTOR, client_id=MCP_CLIENT_ID)
    return secret


def wait_for(urls: Sequence[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AppError(f"{url} did not answer within {timeout:.0f} s")
            time.sleep(0.2)


def taken_ports(ports: Sequence[int], host: str = "127.0.0.1") -> list[int]:
    """The ports another process listens on already (bound the way uvicorn binds, SO_REUSEADDR on,
    so a port only lingering in TIME_WAIT counts as free)."""
    taken = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                taken.append(port)
    return taken


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.calendar_mcp.seed", description=__doc__.split("\n")[0])
    parser.add_argument("--resource", default=os.environ.get("CALENDAR_MCP_RESOURCE", DEFAULT_RESOURCE),
                        help="the demo MCP server's URL (default: %(default)s)")
    parser.add_argument("--username", default="demo")
    parser.add_argument("--password", default=os.environ.get("CALENDAR_DEMO_PASSWORD"),
                        help="default: a new random one each run")
    parser.add_argument("--wait", nargs="*", default=[], metavar="URL", help="wait until these URLs answer")
    parser.add_argument("--free-ports", nargs="+", type=int, metavar="PORT",
                        help="only check that nothing listens on these ports of 127.0.0.1 (exit 1 if one is taken)")
    parser.add_argument("--client-env", action="store_true",
                        help="give the demo server's client a new secret; print only its CALENDAR_MCP_CLIENT_* lines")
    args = parser.parse_args(argv)
    if args.free_ports:
        taken = taken_ports(args.free_ports)
        if taken:
            print(f"error: port {' and '.join(map(str, taken))} on 127.0.0.1 {'is' if len(taken) == 1 else 'are'} "
                  "in use (another `make demo` or `make run`?): stop it, or choose other ports with "
                  "make demo DEMO_PORT=8100 DEMO_MCP_PORT=8101", file=sys.stderr)
            return 1
        return 0
    db: Database | None = None
    try:
        wait_for(args.wait)
        settings = load_settings()
        db = Database(settings.database_url)
        if not migrate.is_current(db):
            raise AppError("the database is not at the latest schema: run `authserver init` first")
        result = seed(db, args.resource, username=args.username, password=args.password,
                      rotate_client_secret=args.client_env)
    except (AppError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if db is not None:
            db.dispose()
    if args.client_env:
        print(f"CALENDAR_MCP_CLIENT_ID={shlex.quote(result.client_id)}\n"
              f"CALENDAR_MCP_CLIENT_SECRET={shlex.quote(result.client_secret or '')}")
        return 0
    rule = "-" * 72
    print(f"\n{rule}\n Calendar demo ready{' (created ' + ', '.join(result.created) + ')' if result.created else ''}\n"
          f"\n  MCP server URL (paste into your MCP client):  {result.resource}\n"
          f"  Sign in as:  {result.username}  /  {result.password}\n"
          f"  Authorization server:  {settings.issuer}\n"
          f"\n  Tools: list_events (read:calendar), create_event (write:calendar: asks again, step-up)\n"
          f"  Each tool call is reported to authserver (audit event tool.called) by the client {result.client_id}\n"
          f" Ctrl-C stops both servers.\n{rule}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
