"""``authserver audit list|tail|purge`` in subprocesses, and audit retention on the purge timer;
on SQLite and PostgreSQL. Bad input is one ``error:`` line (JSON with --json) and changes nothing."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from authserver.audit.log import record
from authserver.audit.models import AuditEvent
from authserver.audit.queries import purge_older_than
from authserver.db import Database, utcnow
from authserver.tokens.purge import Purger
from authserver.users import repository as users
from tests.conftest import pg_database, require_pg
from tests.test_cli import Cli, _assert_one_line_error, _env, _row_counts
from tests.test_cli_errors import _assert_one_json_error


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    if request.param == "sqlite":
        cli = Cli(_env(f"sqlite:///{tmp_path / 'cli.db'}"), tmp_path)
        cli.ok("init")
        yield cli
        return
    require_pg()
    with pg_database("authserver_cli_audit") as url:
        cli = Cli(_env(url), tmp_path)
        cli.ok("init")
        yield cli


def _events(url: str) -> list[tuple[int, str, str | None]]:
    db = Database(url)
    try:
        with db.session() as s:
            return [(e.id, e.event, e.actor) for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    finally:
        db.dispose()


def _seed(url: str) -> str:
    """alice's sign-ins (one failed), a client's token, and two events 100 days old; alice's id."""
    db = Database(url)
    now = utcnow()
    try:
        with db.session() as s:
            alice = users.create_user(s, "alice", "correct horse battery staple")
            s.flush()
            for event, days in (("login.failed", 100), ("token.issued", 100)):
                s.add(AuditEvent(event=event, actor="old", client_id="old-client", at=now - timedelta(days=days),
                                 detail={}))
            record(s, "login.failed", actor=str(alice.id), client_id="desktop", ip="192.0.2.1")
            record(s, "login.succeeded", actor=str(alice.id), client_id="desktop", ip="192.0.2.1")
            record(s, "token.issued", actor="machine", client_id="nightly", grant_type="client_credentials")
            return str(alice.id)
    finally:
        db.dispose()


def _json_lines(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines()]


def test_list_filters_by_user_client_type_and_time(cli: Cli) -> None:
    alice = _seed(cli.url)
    everything, by_user, by_client, by_type, recent, table = cli.many(
        ["audit", "list", "--json"], ["audit", "list", "--user", "alice", "--json"],
        ["audit", "list", "--client", "nightly", "--json"], ["audit", "list", "--type", "login.failed", "--json"],
        ["audit", "list", "--since", "1h", "--json"], ["audit", "list", "--user", "alice"])
    for result in (everything, by_user, by_client, by_type, recent, table):
        assert result.returncode == 0 and result.stderr == "", result
    rows = _json_lines(everything.stdout)
    ids = [row["id"] for row in rows]
    assert ids == sorted(ids)  # oldest first
    assert [r["event"] for r in rows][-3:] == ["login.failed", "login.succeeded", "token.issued"]
    assert [(r["event"], r["actor"]) for r in _json_lines(by_user.stdout)] == [
        ("login.failed", alice), ("login.succeeded", alice)]
    assert [(r["event"], r["detail"]) for r in _json_lines(by_client.stdout)] == [
        ("token.issued", {"grant_type": "client_credentials"})]
    assert [(r["actor"]) for r in _json_lines(by_type.stdout)] == ["old", alice]
    assert "old" not in {r["actor"] for r in _json_lines(recent.stdout)}
    assert {"user.created", "token.issued"} <= {r["event"] for r in _json_lines(recent.stdout)}
    lines = table.stdout.splitlines()
    assert len(lines) == 2 and "login.failed" in lines[0] and "192.0.2.1" in lines[0] and alice in lines[1]
    limited = cli.ok("audit", "list", "--limit", "1", "--json")
    assert [r["event"] for r in _json_lines(limited)] == ["token.issued"]


def test_purge_deletes_only_what_is_older_and_says_so(cli: Cli) -> None:
    _seed(cli.url)
    before = _events(cli.url)
    answer = json.loads(cli.ok("audit", "purge", "--older-than", "90d", "--json"))
    assert answer["deleted"] == 2
    after = _events(cli.url)
    assert after[:-1] == [e for e in before if e[2] != "old"]  # the two old ones went, nothing else
    assert after[-1][1] == "audit.purged"
    assert "deleted 0 audit events older than 90 days" in cli.ok("audit", "purge", "--older-than", "90d")


@pytest.mark.parametrize(("args", "fragment"), [
    (["audit", "list", "--since", "banana"], "'banana' is not a duration"),
    (["audit", "tail", "--since", "1y"], "'1y' is not a duration"),
    (["audit", "purge", "--older-than", "0"], "must be more than 0"),
    (["audit", "purge", "--older-than", "0d"], "must be more than 0"),
    (["audit", "purge", "--older-than=-5d"], "not a duration"),
    (["audit", "purge", "--older-than", "90"], "needs a unit"),
    (["audit", "purge"], "--older-than"),
    (["audit", "list", "--limit", "0"], "not a number from 1"),
    (["audit", "list", "--user", "nobody"], "no user named 'nobody'"),
    (["audit", "tail", "--user", "nobody"], "no user named 'nobody'"),
])
def test_bad_input_is_one_error_line_and_changes_nothing(cli: Cli, args: list[str], fragment: str) -> None:
    _seed(cli.url)
    counts, events = _row_counts(cli.url), _events(cli.url)
    text, as_json = cli.many(args, [*args, "--json"])
    _assert_one_line_error(text, fragment)
    _assert_one_json_error(as_json, fragment, status=as_json.returncode or 1)
    assert text.returncode in (1, 2) and as_json.returncode == text.returncode
    assert _row_counts(cli.url) == counts and _events(cli.url) == events


def _read_line(process: subprocess.Popen[str], timeout: float = 20.0) -> str:
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=0.2):
            return process.stdout.readline()
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
    raise AssertionError("audit tail printed nothing in time")


def test_tail_prints_the_latest_then_follows_until_stopped(cli: Cli) -> None:
    alice = _seed(cli.url)
    process = subprocess.Popen(
        [sys.executable, "-m", "authserver.cli", "audit", "tail", "--user", "alice", "--lines", "1",
         "--interval", "0.1", "--json"], env=cli.env, cwd=cli.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, bufsize=1)
    try:
        assert json.loads(_read_line(process))["event"] == "login.succeeded"  # the latest one, first
        db = Database(cli.url)
        try:
            with db.session() as s:
                record(s, "token.issued", actor="machine", client_id="nightly")  # not alice's: not shown
                record(s, "consent.granted", actor=alice, client_id="desktop")
            followed = json.loads(_read_line(process))
            assert (followed["event"], followed["actor"]) == ("consent.granted", alice)
            with db.session() as s:
                record(s, "logout", actor=alice)
            assert json.loads(_read_line(process))["event"] == "logout"
        finally:
            db.dispose()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert process.stderr is not None and "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def test_retention_on_the_purge_timer_deletes_old_events_in_batches(db: Database) -> None:
    now = utcnow()
    with db.session() as s:
        for days in (200, 120, 91, 89, 1):
            s.add(AuditEvent(event="login.failed", actor=f"d{days}", at=now - timedelta(days=days), detail={}))
    Purger(db, 10).run()  # retention off by default: nothing goes
    with db.session() as s:
        assert len(list(s.scalars(select(AuditEvent)))) == 5
    assert purge_older_than(db, now - timedelta(days=150), batch=1) == 1
    Purger(db, 10, audit_retention_days=90).run()
    with db.session() as s:
        assert sorted(e.actor or "" for e in s.scalars(select(AuditEvent))) == ["d1", "d89"]


def test_purge_batches_are_bounded(db: Database) -> None:
    now = utcnow()
    with db.session() as s:
        for i in range(7):
            s.add(AuditEvent(event="login.failed", actor=f"a{i}", at=now - timedelta(days=10), detail={}))
    assert purge_older_than(db, now, batch=2, max_batches=2) == 4  # two batches of two, then it stops
    assert purge_older_than(db, now, batch=2) == 3  # the rest, batch after batch
