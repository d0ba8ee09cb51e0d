"""Seed authserver's database for the calendar demo; safe to run any number of times.

Creates (or brings back in line) the scopes ``read:calendar`` and ``write:calendar``, the
resource (the demo server's MCP URL) allowing both, and a demo person whose password is
printed. Each run sets a fresh password for that person (unless ``--password`` or
``CALENDAR_DEMO_PASSWORD`` gives one), so the printed one always works. Uses the same
``AUTHSERVER_*`` settings as the ``authserver`` command; run ``authserver init`` first.

    python -m examples.calendar_mcp.seed [--resource URL] [--username demo] [--wait URL ...]

``--wait`` first polls the given URLs until they answer (used by ``make demo`` so the summary
is printed once both servers are up).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from authserver import migrate
from authserver.audit.log import record
from authserver.catalog import repository as catalog
from authserver.db import Database
from authserver.errors import AppError
from authserver.secrets import new_secret
from authserver.settings import ConfigError, load_settings
from authserver.uris import canonical_resource_uri
from authserver.users import repository as users
from examples.calendar_mcp.server import DEFAULT_RESOURCE

ACTOR = "calendar-demo-seed"
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


def seed(db: Database, resource: str = DEFAULT_RESOURCE, *, username: str = "demo",
         password: str | None = None) -> Seeded:
    """Idempotent: creates what is missing, corrects what differs, and (re)sets the demo password."""
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
    return Seeded(uri, username, password, created)


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.calendar_mcp.seed", description=__doc__.split("\n")[0])
    parser.add_argument("--resource", default=os.environ.get("CALENDAR_MCP_RESOURCE", DEFAULT_RESOURCE),
                        help="the demo MCP server's URL (default: %(default)s)")
    parser.add_argument("--username", default="demo")
    parser.add_argument("--password", default=os.environ.get("CALENDAR_DEMO_PASSWORD"),
                        help="default: a new random one each run")
    parser.add_argument("--wait", nargs="*", default=[], metavar="URL", help="wait until these URLs answer")
    args = parser.parse_args(argv)
    db: Database | None = None
    try:
        wait_for(args.wait)
        settings = load_settings()
        db = Database(settings.database_url)
        if not migrate.is_current(db):
            raise AppError("the database is not at the latest schema: run `authserver init` first")
        result = seed(db, args.resource, username=args.username, password=args.password)
    except (AppError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if db is not None:
            db.dispose()
    rule = "-" * 72
    print(f"\n{rule}\n Calendar demo ready{' (created ' + ', '.join(result.created) + ')' if result.created else ''}\n"
          f"\n  MCP server URL (paste into your MCP client):  {result.resource}\n"
          f"  Sign in as:  {result.username}  /  {result.password}\n"
          f"  Authorization server:  {settings.issuer}\n"
          f"\n  Tools: list_events (read:calendar), create_event (write:calendar: asks again, step-up)\n"
          f" Ctrl-C stops both servers.\n{rule}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
