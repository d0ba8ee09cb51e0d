"""``authserver db upgrade|purge`` and ``authserver init``: the schema, a signing key, a first admin."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from authserver import migrate
from authserver.audit.log import record
from authserver.cli.base import CLI_ACTOR, Commands, Context
from authserver.db import utcnow
from authserver.secrets import new_secret
from authserver.services import build_services
from authserver.settings import DATABASE_FILE_NAME, SECRET_FILE_NAME
from authserver.tokens.purge import purge
from authserver.users import repository as users


def _upgrade(ctx: Context) -> str | None:
    services = build_services(ctx.settings, ctx.db)  # refuses a missing secret before anything is written
    ctx.make_data_directory()
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


def _where(ctx: Context) -> tuple[dict[str, Any], str]:
    """Where the data lives, as ``init`` prints it: the data directory, the database, the secret key."""
    settings = ctx.settings
    secret_file = None if settings.secret_key else settings.secret_file()
    data = {"home": str(settings.home), "database": settings.database_location(),
            "secret_key_file": str(secret_file) if secret_file else None}
    text = (f"data directory: {settings.home} (AUTHSERVER_HOME)\n"
            f"database: {data['database']}\n"
            f"secret key: {secret_file or 'AUTHSERVER_SECRET_KEY'}\n")
    return data, text


def _note_a_database_left_behind(ctx: Context) -> None:
    """Before AUTHSERVER_HOME the default database was ./authserver.db in whatever directory a
    command ran in; one found here is not the one in use, which would otherwise go unnoticed."""
    here = Path.cwd() / DATABASE_FILE_NAME
    if ctx.settings.uses_default_database and here.exists() and here != ctx.settings.sqlite_path():
        print(f"note: {here} is not used: the database is {ctx.settings.sqlite_path()}; to keep using "
              f"the old one, move it and {SECRET_FILE_NAME} into {ctx.settings.home} or set "
              f"AUTHSERVER_DATABASE_URL=sqlite:///{here}", file=sys.stderr)


def cmd_init(ctx: Context, args: argparse.Namespace) -> None:
    """Everything `make run` needs: schema, a signing key, and a first admin if there is none."""
    _note_a_database_left_behind(ctx)
    revision = _upgrade(ctx)  # one output: --json prints a single document
    where, where_text = _where(ctx)
    upgraded = where_text + f"database at revision {revision}\n"
    with ctx.db.session() as session:
        if users.any_admin(session):
            ctx.out.emit({**where, "revision": revision, "admin_created": False},
                         upgraded + "an admin account exists already")
            return
        password = new_secret(12)
        user = users.create_user(session, args.admin, password, ["admin"], one_time=True)
        record(session, "user.created", actor=CLI_ACTOR, username=user.username, roles=user.roles, one_time=True)
    ctx.out.emit(
        {**where, "revision": revision, "admin_created": True, "username": args.admin, "password": password,
         "must_change_password": True},
        upgraded + f"created admin {args.admin!r} with one-time password: {password}\n"
        "(shown once; the first sign-in with it asks for a new password at once)",
    )


def register(commands: Commands) -> None:
    db = commands.group("db", "database schema")
    commands.command(db, "upgrade", cmd_db_upgrade, "migrate the database to the latest schema")
    commands.command(db, "purge", cmd_db_purge,
                     "delete expired codes, requests, sessions, refresh tokens, deny-list rows")

    p = commands.command(commands.top, "init", cmd_init,
                         "migrate, create a signing key and a first admin if none exists")
    p.add_argument("--admin", default="admin", help="username of the first admin (default: admin)")
