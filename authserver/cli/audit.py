"""``authserver audit list|tail|purge``: the audit log from the command line.

* ``list`` prints the latest matching events (``--limit``, default 50), oldest first, like a log;
* ``tail`` prints the latest few (``--lines``, default 10), then follows: it polls for newer events
  (``--interval`` seconds, default 1) and prints each as it arrives, until interrupted (Ctrl-C or
  SIGTERM; exit status 0). With ``--json`` both print one JSON object per line (``tail`` can only
  stream; ``list`` the same, for one shape);
* ``purge --older-than 90d`` deletes events older than that, in batches of ``PURGE_BATCH`` rows,
  each its own short transaction (so a purge of millions never holds a long lock), and records an
  ``audit.purged`` event saying how many went. The purge timer of every server does the same when
  ``AUTHSERVER_AUDIT_RETENTION_DAYS`` is set (``tokens.purge.Purger``).

Filters: ``--user USERNAME`` (the person's events: they are recorded under the user's id),
``--client CLIENT_ID``, ``--type EVENT`` (``login.failed``), ``--since 1h`` (a duration: a number
and ``s``, ``m``, ``h``, ``d`` or ``w``). A bad value is a usage error before the database is read.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from datetime import timedelta
from types import FrameType
from typing import Any

from authserver.audit import queries
from authserver.audit.log import record
from authserver.audit.models import AuditEvent
from authserver.cli.base import CLI_ACTOR, Commands, Context
from authserver.db import utcnow
from authserver.errors import AppError
from authserver.users import repository as users

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
COLUMNS = ["id", "at", "event", "outcome", "actor", "client_id", "ip"]
PURGE_BATCH = queries.PURGE_BATCH


def duration(text: str) -> timedelta:
    """``90d``, ``1h``, ``30m``…: a positive whole number and a unit (argparse type)."""
    match = re.fullmatch(r"\s*(\d{1,9})\s*([smhdw])\s*", text)
    if re.fullmatch(r"\s*\d+\s*", text):
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be more than 0" if int(text) == 0 else
                                         f"{text!r} needs a unit (s, m, h, d or w: {text.strip()}d)")
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (a number and s, m, h, d or w: 90d, 1h)")
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be more than 0")
    if seconds > 100 * 365 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: at most 100 years")
    return timedelta(seconds=seconds)


def positive(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 100000")
    return int(text)


def interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0.05 to 3600")
    return value


def _filter(ctx: Context, args: argparse.Namespace) -> queries.AuditFilter:
    actor = None
    if args.user:
        with ctx.db.read_session() as session:
            user = users.get_by_username(session, args.user)
            if user is None:
                raise AppError(f"no user named {args.user!r}")
            actor = str(user.id)
    start = utcnow() - args.since if args.since else None
    return queries.AuditFilter(actor=actor, client_id=args.client or None, event=args.type or None, start=start)


def _row(event: AuditEvent) -> dict[str, Any]:
    return queries.as_dict(event)


def _print(ctx: Context, events: list[AuditEvent]) -> None:
    """Events oldest first: JSON lines with --json, else a table (tail: rows without the header)."""
    for event in events:
        row = _row(event)
        if ctx.out.as_json:
            print(json.dumps(row, default=str), flush=True)
        else:
            cells = [str(row[c]) if row[c] is not None else "-" for c in COLUMNS]
            detail = json.dumps(row["detail"], default=str) if row["detail"] else ""
            print("  ".join(cells) + (f"  {detail}" if detail else ""), flush=True)


def _latest(ctx: Context, where: queries.AuditFilter, limit: int) -> list[AuditEvent]:
    with ctx.db.read_session() as session:
        events = queries.page(session, where, limit=limit)
        session.expunge_all()
    return list(reversed(events))


def cmd_audit_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    events = _latest(ctx, _filter(ctx, args), args.limit)
    if not events and not ctx.out.as_json:
        print("(none)")
    _print(ctx, events)


class _Stop(Exception):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def cmd_audit_tail(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    where = _filter(ctx, args)
    signal.signal(signal.SIGTERM, _stop)
    try:
        events = _latest(ctx, where, args.lines)
        _print(ctx, events)
        last = events[-1].id if events else _max_id(ctx)
        while True:
            time.sleep(args.interval)
            with ctx.db.read_session() as session:
                newer = queries.after(session, where, last, limit=1000)
                session.expunge_all()
            if newer:
                _print(ctx, newer)
                last = newer[-1].id
    except (KeyboardInterrupt, _Stop):
        sys.stdout.flush()


def _max_id(ctx: Context) -> int:
    with ctx.db.read_session() as session:
        return queries.max_id(session)


def cmd_audit_purge(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    cutoff = utcnow() - args.older_than
    deleted = queries.purge_older_than(ctx.db, cutoff)
    days = args.older_than.total_seconds() / 86400
    with ctx.db.session() as session:
        record(session, "audit.purged", actor=CLI_ACTOR, deleted=deleted, before=cutoff.isoformat())
    ctx.out.emit({"deleted": deleted, "before": cutoff.isoformat()},
                 f"deleted {deleted} audit events older than {days:g} days (before {cutoff.isoformat()})")


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", metavar="USERNAME", help="only this person's events")
    p.add_argument("--client", metavar="CLIENT_ID", help="only events of this client")
    p.add_argument("--type", metavar="EVENT", help="only this event type (e.g. login.failed)")
    p.add_argument("--since", type=duration, metavar="DURATION", help="only events of the last DURATION (1h, 7d)")


def register(commands: Commands) -> None:
    group = commands.group("audit", "the audit log: list, follow, purge")
    p = commands.command(group, "list", cmd_audit_list, "print the latest matching audit events, oldest first")
    _filters(p)
    p.add_argument("--limit", type=positive, default=50, help="how many (default 50)")
    p = commands.command(group, "tail", cmd_audit_tail, "print the latest audit events, then follow new ones")
    _filters(p)
    p.add_argument("--lines", type=positive, default=10, help="how many to print first (default 10)")
    p.add_argument("--interval", type=interval, default=1.0, help="seconds between polls (default 1)")
    p = commands.command(group, "purge", cmd_audit_purge, "delete audit events older than a duration")
    p.add_argument("--older-than", type=duration, required=True, metavar="DURATION",
                   help="e.g. 90d: events before that are deleted")
