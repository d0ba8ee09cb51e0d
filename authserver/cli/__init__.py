"""The `authserver` command line: database, server, users, scopes, resources, clients, keys, audit log.

One module per command group, each adding its own commands to the parser (``register``); this
module assembles them and runs one. Every command runs in one transaction (nothing half-written
on error), prints a one-line ``error: …`` on standard error and exits non-zero on bad input, and
prints JSON with --json (its errors too: ``{"error": "…"}``, on standard error).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sqlalchemy.exc import OperationalError, ProgrammingError

from authserver.cli import audit, catalog, clients, db, keys, serve, users
from authserver.cli.base import Commands, Context, Output, Parser, UsageError, report
from authserver.errors import AppError
from authserver.settings import ConfigError, load_settings

GROUPS = (db, serve, users, catalog, clients, keys, audit)  # the order of `authserver --help`


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    parser = Parser(prog="authserver", parents=[common],
                    description="OAuth 2.1 authorization server for MCP servers")
    commands = Commands(parser.add_subparsers(dest="group", required=True, metavar="COMMAND"), common)
    for group in GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return report(exc, as_json="--json" in argv)  # asked for JSON, even on a command line that is wrong
    out = Output(getattr(args, "json", False))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx: Context | None = None
    try:
        ctx = Context(load_settings(), out)
        args.func(ctx, args)
        return 0
    except (AppError, ConfigError, OperationalError, ProgrammingError) as exc:
        return report(exc, out.as_json)
    finally:
        if ctx is not None:
            ctx.close()
