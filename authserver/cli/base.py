"""What every command shares: its context (settings, a lazily opened database, the output) and
how commands are added to the parser and how failures are reported."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from sqlalchemy.exc import OperationalError, ProgrammingError

from authserver import migrate
from authserver.db import Database
from authserver.errors import AppError
from authserver.settings import ConfigError, Settings

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


    def fields(self, row: dict[str, Any]) -> None:
        """One object: ``key: value`` lines (JSON with --json)."""
        self.emit(row, "\n".join(f"{key}: {_cell(value)}" for key, value in row.items()))


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
        """Refuse before touching the database unless it exists at the latest schema. A SQLite file
        that is not there is never created here: a command that only reads must not leave an empty
        database behind (and a typo in the path must not look like an empty server)."""
        path = self.settings.sqlite_path()
        if path is not None and not path.exists():
            raise AppError(f"there is no database yet at {path}: create it with `authserver init` "
                           "(or set AUTHSERVER_HOME or AUTHSERVER_DATABASE_URL to where it is)")
        if not migrate.is_current(self.db):
            raise AppError("the database is not at the latest schema: run `authserver db upgrade`")

    def make_data_directory(self) -> None:
        """The directory of the SQLite database (AUTHSERVER_HOME by default), private to its owner
        when created here; SQLite creates the file but not the directories above it."""
        path = self.settings.sqlite_path()
        if path is not None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()


Command = Callable[[Context, argparse.Namespace], None]


class UsageError(Exception):
    """The command line itself is wrong (exit status 2); reported like every other error."""


class Parser(argparse.ArgumentParser):
    """Usage errors look like every other error: one ``error: …`` line (JSON with --json), exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class Commands:
    """The parser's command tree; each command group's module adds its own (``register``)."""

    def __init__(self, groups: Any, common: argparse.ArgumentParser) -> None:
        self.top = groups  # commands without a group: ``init``, ``serve``
        self._common = common

    def command(self, sub: Any, name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[self._common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    def group(self, name: str, help_text: str) -> Any:
        g = self.top.add_parser(name, parents=[self._common], help=help_text)
        return g.add_subparsers(dest="action", required=True, metavar="ACTION")


def report(exc: BaseException, as_json: bool = False) -> int:
    """The one line a failed command prints on standard error, and its exit status; unexpected
    errors go on up. With --json the line is ``{"error": "…"}`` (standard output stays for results)."""
    if isinstance(exc, UsageError):
        message, status = str(exc), 2
    elif isinstance(exc, (AppError, ConfigError)):
        message, status = str(exc), 1
    elif isinstance(exc, (OperationalError, ProgrammingError)):
        message = (f"database: {str(exc.orig).splitlines()[0]} "
                   "(is AUTHSERVER_DATABASE_URL right, and did `authserver db upgrade` run?)")
        status = 1
    else:
        raise exc
    print(json.dumps({"error": message}) if as_json else f"error: {message}", file=sys.stderr)
    return status
