"""The `authserver` command line, end to end in subprocesses, on SQLite and on PostgreSQL.

Each subprocess costs most of a second, so commands that only read (or must fail
without writing) run side by side, and setup for the error cases is done in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from authserver import migrate
from authserver.catalog import repository as catalog
from authserver.db import Database
from authserver.keys.models import SigningKey
from authserver.models import metadata
from authserver.users import repository as users
from tests.conftest import TEST_SECRET, pg_database, require_pg

RESOURCE = "https://mcp.example.com/mcp"
REDIRECT = "http://127.0.0.1:33418/callback"


@dataclass
class Cli:
    env: dict[str, str]
    cwd: Path

    @property
    def url(self) -> str:
        return self.env["AUTHSERVER_DATABASE_URL"]

    def many(self, *commands: list[str] | tuple[list[str], str]) -> list[subprocess.CompletedProcess[str]]:
        """Run the commands side by side (only for commands that read, or that must fail).

        A command is its argument list, or (argument list, standard input).
        """
        return run_side_by_side([(self, *c) if isinstance(c, tuple) else (self, c, None) for c in commands])

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_side_by_side([(self, list(args), stdin)])[0]

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        assert "Traceback" not in result.stderr
        return result.stdout

    def json(self, *args: str, stdin: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", stdin=stdin))


def run_side_by_side(jobs: list[tuple[Cli, list[str], str | None]]) -> list[subprocess.CompletedProcess[str]]:
    started = [(args, stdin, subprocess.Popen(
        [sys.executable, "-m", "authserver.cli", *args], env=cli.env, cwd=cli.cwd,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) for cli, args, stdin in jobs]
    results = []
    for args, stdin, proc in started:
        out, err = proc.communicate(stdin, timeout=120)
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env.update({"AUTHSERVER_DATABASE_URL": url, "AUTHSERVER_SECRET_KEY": TEST_SECRET,
                "AUTHSERVER_ISSUER": "http://127.0.0.1:8000"}, **extra)
    return env


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.args
    assert len(lines) == 1 and lines[0].startswith("error: "), (result.args, result.stderr)
    for fragment in fragments:
        assert fragment in lines[0], (result.args, lines[0])
    assert result.stdout == "", (result.args, result.stdout)


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Cli:
    return Cli(_env(f"sqlite:///{tmp_path / 'cli.db'}"), tmp_path)


@pytest.fixture
def pg_cli(tmp_path: Path) -> Iterator[Cli]:
    require_pg()
    with pg_database("authserver_cli") as url:
        yield Cli(_env(url), tmp_path)


# ---- the happy path -------------------------------------------------------------------------

def _happy_path(cli: Cli, *, extended: bool) -> None:
    """The main path on any database; `extended` adds the lifecycle commands (run on SQLite only)."""
    out = cli.ok("init")
    match = re.search(r"created admin 'admin' with one-time password: (\S+)", out)
    assert match, out
    admin_password = match.group(1)
    bob_password = None
    if extended:
        again = cli.json("init")
        assert again["admin_created"] is False and again["revision"] and "password" not in again
        bob = cli.ok("users", "create", "bob", "--role", "admin", "--generate")
        generated = re.search(r"one-time password: (\S+)", bob)
        assert generated and "created user bob (admin)" in bob
        bob_password = generated.group(1)
        assert "disabled user bob" in cli.ok("users", "disable", "bob")

    alice = cli.json("users", "create", "alice", "--password-stdin", stdin="correct horse battery\n")
    assert (alice["username"], alice["roles"], alice["disabled"]) == ("alice", ["user"], False)
    assert "password" not in alice

    assert "created scope read:calendar" in cli.ok("scopes", "create", "read:calendar",
                                                   "--description", "See your calendar")
    assert cli.json("scopes", "create", "write:calendar", "--description", "Change your calendar",
                    "--write")["write"] is True
    resource = cli.json("resources", "create", "HTTPS://MCP.Example.com/mcp", "--name", "Calendar",
                        "--scope", "read:calendar", "--scope", "write:calendar")
    assert resource == {"uri": RESOURCE, "name": "Calendar", "scopes": ["read:calendar", "write:calendar"]}

    desktop = cli.json("clients", "create", "--name", "Desktop", "--redirect-uri", REDIRECT,
                       "--scope", "read:calendar", "--scope", "write:calendar", "--resource", RESOURCE)
    secret = desktop["client_secret"]
    assert len(secret) >= 43
    assert desktop["token_endpoint_auth_method"] == "client_secret_basic"
    assert desktop["default_scopes"] == ["read:calendar"]  # read-only unless asked
    assert desktop["resources"] == [RESOURCE] and desktop["redirect_uris"] == [REDIRECT]
    public_id = None
    if extended:
        public = cli.ok("clients", "create", "--name", "CLI tool", "--public", "--redirect-uri", REDIRECT)
        assert "client_secret" not in public
        created = re.fullmatch(r"client_id: (\S+)\n", public)
        assert created, public
        public_id = created.group(1)
        assert cli.json("clients", "delete", public_id) == {"client_id": public_id, "deleted": True}
        rotated_secret = cli.json("clients", "rotate-secret", desktop["client_id"])["client_secret"]
        assert rotated_secret != secret and len(rotated_secret) >= 43
        secret = rotated_secret  # what must be stored (as a hash) from now on: checked below

    db = Database(cli.url)
    try:
        with db.session() as s:
            first_kid = s.scalar(select(SigningKey.kid))
    finally:
        db.dispose()
    rotated = cli.json("keys", "rotate")["kid"]
    assert rotated != first_kid

    commands = [["users", "list", "--json"], ["scopes", "list", "--json"], ["resources", "list", "--json"],
                ["--json", "clients", "list"], ["keys", "list", "--json"], ["db", "upgrade"]]
    results = cli.many(*commands, *([["clients", "list"]] if extended else []))
    for result in results:
        assert result.returncode == 0, (result.args, result.stderr)
    users_list, scopes_list, resources_list, clients_json, keys_list, upgrade = results[:6]

    listed_users = {u["username"]: u for u in json.loads(users_list.stdout)}
    assert set(listed_users) == ({"admin", "alice", "bob"} if extended else {"admin", "alice"})
    assert (listed_users["admin"]["roles"], listed_users["alice"]["roles"]) == (["admin"], ["user"])
    assert [name for name, u in listed_users.items() if "admin" in u["roles"] and not u["disabled"]] == ["admin"]
    if extended:
        assert listed_users["bob"]["disabled"] is True
    assert [(s["name"], s["write"]) for s in json.loads(scopes_list.stdout)] == [("read:calendar", False),
                                                                                ("write:calendar", True)]
    assert json.loads(resources_list.stdout) == [resource]
    (listed,) = json.loads(clients_json.stdout)  # the deleted public client is gone
    assert listed["client_id"] == desktop["client_id"] and listed["name"] == "Desktop"
    assert secret not in clients_json.stdout and '"client_secret":' not in clients_json.stdout  # shown once
    keys = {k["kid"]: k for k in json.loads(keys_list.stdout)}
    assert set(keys) == {first_kid, rotated}
    assert keys[rotated]["status"] == "current" and keys[rotated]["published_until"] is None
    assert keys[first_kid]["status"] == "retired" and keys[first_kid]["published_until"]
    assert re.fullmatch(r"database at revision \S+\n", upgrade.stdout)
    if extended:
        header, *rows = results[6].stdout.splitlines()
        assert header.split()[:3] == ["CLIENT_ID", "NAME", "KIND"]
        assert len(rows) == 1 and rows[0].startswith(f"{desktop['client_id']}  Desktop")
        assert secret not in results[6].stdout and str(public_id) not in results[6].stdout

    db = Database(cli.url)  # what the commands wrote is what the server will read
    try:
        assert migrate.is_current(db)
        with db.session() as s:
            admin = users.authenticate(s, "admin", admin_password)
            assert admin is not None and admin.is_admin
            assert users.authenticate(s, "alice", "correct horse battery") is not None
            if bob_password:
                assert users.authenticate(s, "bob", bob_password) is None  # disabled
                assert users.authenticate(s, "alice", bob_password) is None
            stored = s.execute(text("SELECT secret_hash FROM clients")).scalar_one()
            assert stored == hashlib.sha256(secret.encode()).hexdigest()
            assert catalog.require_resource(s, RESOURCE).scopes == ["read:calendar", "write:calendar"]
            assert s.scalar(select(func.count()).select_from(SigningKey)) == 2
    finally:
        db.dispose()


def test_cli_on_sqlite(sqlite_cli: Cli) -> None:
    _happy_path(sqlite_cli, extended=True)
    assert (sqlite_cli.cwd / "cli.db").exists()


def test_cli_on_postgresql(pg_cli: Cli) -> None:
    _happy_path(pg_cli, extended=False)


# ---- bad input: one line on stderr, non-zero exit, nothing written --------------------------

def _row_counts(url: str) -> dict[str, int]:
    db = Database(url)
    try:
        with db.session() as s:
            return {name: s.scalar(select(func.count()).select_from(table)) or 0
                    for name, table in metadata.tables.items()}
    finally:
        db.dispose()


def test_bad_input_fails_with_one_line_and_writes_nothing(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    db = Database(cli.url)
    try:
        migrate.upgrade(db)
        with db.session() as s:
            users.create_user(s, "admin", "correct horse battery", ["admin"])
            catalog.create_scope(s, "read:calendar", "See your calendar")
            catalog.create_resource(s, RESOURCE, "Calendar", ["read:calendar"])
    finally:
        db.dispose()
    before = _row_counts(cli.url)

    cases: list[tuple[list[str] | tuple[list[str], str], tuple[str, ...]]] = [
        ((["users", "create", "admin", "--password-stdin"], "another password\n"), ("'admin' already exists",)),
        (["users", "create", "bob", "--role", "superuser"], ("--role", "superuser")),
        (["resources", "create", "https://files.example.com/mcp", "--name", "Files", "--scope", "nope"],
         ("unknown scope 'nope'",)),
        (["clients", "create", "--name", "App", "--redirect-uri", REDIRECT, "--scope", "read:calendar",
          "--scope", "nope"], ("unknown scope 'nope'",)),
        (["clients", "create", "--name", "App", "--redirect-uri", "http://app.example.com/callback"],
         ("must be https, or http on a loopback host",)),
        (["clients", "create", "--name", "App", "--redirect-uri", "http://127.0.0.1:99999/callback",
          "--resource", RESOURCE], ("malformed redirect URI",)),
        (["clients", "create", "--name", "App", "--public", "--grant-type", "client_credentials"],
         ("public client cannot use client_credentials",)),
        (["clients", "delete", "no-such-client"], ("no client",)),
    ]
    results = cli.many(*(command for command, _ in cases))
    for result, (_, fragments) in zip(results, cases, strict=True):
        _assert_one_line_error(result, *fragments)
    assert results[1].returncode == 2  # usage errors exit 2, rule errors 1
    assert all(r.returncode == 1 for i, r in enumerate(results) if i != 1)

    assert _row_counts(cli.url) == before  # not even an audit event
    (clients_list,) = cli.many(["clients", "list", "--json"])
    assert json.loads(clients_list.stdout) == []


def test_unusable_database_or_config_fails_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    empty = tmp_path / "empty.db"
    empty.touch()
    https_db = tmp_path / "https.db"
    missing = Cli(_env(f"sqlite:///{fresh}"), tmp_path)
    unmigrated = Cli(_env(f"sqlite:///{empty}"), tmp_path)
    no_secret = Cli(_env(f"sqlite:///{https_db}", AUTHSERVER_ISSUER="https://auth.example.com",
                         AUTHSERVER_SECRET_KEY=""), tmp_path)
    unreachable = Cli(_env("postgresql+psycopg://postgres@127.0.0.1:1/authserver"), tmp_path)
    bad_issuer = Cli(_env(f"sqlite:///{https_db}", AUTHSERVER_ISSUER="http://auth.example.com"), tmp_path)

    results = run_side_by_side([
        (missing, ["scopes", "create", "read:calendar", "--description", "See your calendar"], None),
        (unmigrated, ["scopes", "create", "read:calendar", "--description", "See your calendar"], None),
        (no_secret, ["init"], None),
        (unreachable, ["users", "list"], None),
        (bad_issuer, ["db", "upgrade"], None),
    ])
    _assert_one_line_error(results[0], "there is no database yet", "authserver init")
    _assert_one_line_error(results[1], "authserver db upgrade")
    _assert_one_line_error(results[2], "AUTHSERVER_SECRET_KEY")
    _assert_one_line_error(results[3], "error: database:")
    _assert_one_line_error(results[4], "AUTHSERVER_ISSUER", "loopback")

    assert not fresh.exists()  # a missing database is never created by a command that needs one
    with sqlite3.connect(empty) as conn:  # no schema and no rows
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    assert not https_db.exists()
    assert not (tmp_path / "authserver.secret").exists()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_set_password_signs_the_person_out_everywhere(backend: str, request: pytest.FixtureRequest) -> None:
    """Replacing a leaked one-time password must also end what was signed in with it."""
    from authserver.interaction import sessions

    cli: Cli = request.getfixturevalue("sqlite_cli" if backend == "sqlite" else "pg_cli")
    cli.ok("init")
    db = Database(cli.url)
    try:
        with db.session() as s:
            admin = users.get_by_username(s, "admin")
            assert admin is not None
            sessions.start(s, admin, 3600, None)
            sessions.start(s, admin, 3600, None)
        cli.ok("users", "set-password", "admin", "--password-stdin", stdin="a brand new passphrase\n")
        with db.session() as s:
            assert s.scalar(text("SELECT COUNT(*) FROM login_sessions")) == 0
            assert users.authenticate(s, "admin", "a brand new passphrase") is not None
    finally:
        db.dispose()
