"""``authserver db upgrade|purge`` and ``authserver init``: the schema, a signing key, a first admin."""

from __future__ import annotations

import argparse

from authserver import migrate
from authserver.audit.log import record
from authserver.cli.base import CLI_ACTOR, Commands, Context
from authserver.db import utcnow
from authserver.secrets import new_secret
from authserver.services import build_services
from authserver.tokens.purge import purge
from authserver.users import repository as users


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


def register(commands: Commands) -> None:
    db = commands.group("db", "database schema")
    commands.command(db, "upgrade", cmd_db_upgrade, "migrate the database to the latest schema")
    commands.command(db, "purge", cmd_db_purge,
                     "delete expired codes, requests, sessions, refresh tokens, deny-list rows")

    p = commands.command(commands.top, "init", cmd_init,
                         "migrate, create a signing key and a first admin if none exists")
    p.add_argument("--admin", default="admin", help="username of the first admin (default: admin)")
