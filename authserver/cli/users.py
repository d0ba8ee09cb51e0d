"""``authserver users …``: people who sign in."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from authserver.audit.log import record
from authserver.cli.base import CLI_ACTOR, Commands, Context
from authserver.errors import AppError
from authserver.interaction import sessions
from authserver.mfa import totp
from authserver.secrets import new_secret
from authserver.users import repository as users
from authserver.users.models import ROLES

ONE_TIME = "(shown once; it must be changed at the first sign-in)"


def _password_options(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    source.add_argument("--generate", action="store_true",
                        help="generate a one-time password and print it once (changed at the first sign-in)")
    p.add_argument("--one-time", action="store_true",
                   help="the person must change the password at their first sign-in (implied by --generate)")


def _user_row(user: Any) -> dict[str, Any]:
    return {"id": str(user.id), "username": user.username, "roles": user.roles, "disabled": user.disabled,
            "must_change_password": user.must_change_password, "created_at": user.created_at.isoformat()}


def _read_password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password, and whether it was generated (and must be shown).

    Each source is asked for: ``--password-stdin``, ``--generate``, or a terminal's prompt. Without
    any (a script, a pipe that is empty) nothing is assumed: generating one then would replace a
    person's password with one they never see, so that is an error.
    """
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise AppError("no password on standard input")
        return password, False
    if args.generate:
        return new_secret(12), True
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat password: "):
            raise AppError("the passwords differ")
        return first, False
    raise AppError("no password given: pipe one with --password-stdin, or use --generate for a one-time "
                   "password (standard input is not a terminal to ask on)")


def cmd_users_create(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    password, generated = _read_password(args)
    with ctx.db.session() as session:
        user = users.create_user(session, args.username, password, args.role or ["user"],
                                 one_time=generated or args.one_time)
        record(session, "user.created", actor=CLI_ACTOR, username=user.username, roles=user.roles,
               one_time=user.must_change_password)
        row = _user_row(user)
    text = f"created user {row['username']} ({' '.join(row['roles'])})"
    if generated:
        row["password"] = password
        text += f"\none-time password: {password}\n{ONE_TIME}"
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
        users.set_password(session, user, password, one_time=generated or args.one_time)
        # Whoever signed in with the old password (a leaked one-time password) is signed out.
        ended = sessions.end_all(session, user.id)
        record(session, "user.password_set", actor=CLI_ACTOR, username=user.username, sessions_ended=ended,
               one_time=user.must_change_password)
        row = _user_row(user)
    text = f"password set for {args.username}"
    if generated:
        row["password"] = password
        text += f"\none-time password: {password}\n{ONE_TIME}"
    ctx.out.emit(row, text)


def cmd_users_disable(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        user = users.set_disabled(session, args.username, True)
        record(session, "user.disabled", actor=CLI_ACTOR, username=user.username)
        row = _user_row(user)
    ctx.out.emit(row, f"disabled user {args.username}")


def cmd_users_enable(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        user = users.set_disabled(session, args.username, False)
        record(session, "user.enabled", actor=CLI_ACTOR, username=user.username)
        row = _user_row(user)
    ctx.out.emit(row, f"enabled user {args.username}: they can sign in again")


def cmd_users_reset_second_factor(ctx: Context, args: argparse.Namespace) -> None:
    """Someone lost both the phone and the recovery codes: off, and signed out everywhere."""
    ctx.require_schema()
    with ctx.db.session() as session:
        user = users.get_by_username(session, args.username)
        if user is None:
            raise AppError(f"no user {args.username!r}")
        if not totp.disable(session, user.id):
            raise AppError(f"{args.username} has no two-step verification")
        ended = sessions.end_all(session, user.id)
        record(session, "user.second_factor_reset", actor=CLI_ACTOR, username=user.username, sessions_ended=ended)
        row = _user_row(user)
    ctx.out.emit({**row, "sessions_ended": ended},
                 f"two-step verification of {args.username} is off; signed out of {ended} session(s)")


def cmd_users_delete(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        user = users.get_by_username(session, args.username)
        if user is None:
            raise AppError(f"no user {args.username!r}")
        user_id = str(user.id)
        users.delete_user(session, user)
        record(session, "user.deleted", actor=CLI_ACTOR, username=args.username, user_id=user_id)
    ctx.out.emit({"username": args.username, "id": user_id, "deleted": True},
                 f"deleted user {args.username} (their sessions, consents and refresh tokens went with them)")


def register(commands: Commands) -> None:
    us = commands.group("users", "people who sign in")
    p = commands.command(us, "create", cmd_users_create, "create a user")
    p.add_argument("username", help="1-150 letters, digits and . _ @ + -")
    _password_options(p)
    p.add_argument("--role", action="append", choices=list(ROLES),
                   help="admin: the console and every change; auditor: the console read-only; user (default)")
    commands.command(us, "list", cmd_users_list, "list users")
    p = commands.command(us, "set-password", cmd_users_set_password, "set a user's password")
    p.add_argument("username", help="whose password")
    _password_options(p)
    p = commands.command(us, "disable", cmd_users_disable,
                         "disable a user: they cannot sign in and are signed out everywhere")
    p.add_argument("username", help="who (not the last enabled admin)")
    p = commands.command(us, "enable", cmd_users_enable, "enable a disabled user again")
    p.add_argument("username", help="who")
    p = commands.command(us, "reset-second-factor", cmd_users_reset_second_factor,
                         "turn off a user's two-step verification (lost phone and recovery codes); signs them out")
    p.add_argument("username", help="who")
    p = commands.command(us, "delete", cmd_users_delete,
                         "delete a user with their sessions, consents and refresh tokens")
    p.add_argument("username", help="who (not the last enabled admin)")
