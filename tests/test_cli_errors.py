"""Errors of the command line: an unusable database URL is one `error:` line, never a traceback, and
with --json every error is one JSON object on standard error. Subprocesses, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import pg_database, require_pg
from tests.test_cli import Cli, _assert_one_line_error, _env, _row_counts

BAD_URLS = [
    ("mysql://user:pw@db.example.com/authserver", "unsupported database 'mysql'"),
    ("mysql+pymysql://user@localhost/authserver", "unsupported database 'mysql'"),
    ("garbage", "not a database URL"),
    ("://", "not a database URL"),
    ("postgresql+psycopg://user@host:notaport/db", "not a database URL"),
    ("postgresql+asyncpg://user@127.0.0.1/authserver", "unsupported driver 'asyncpg' for postgresql"),
    ("sqlite+pysqlcipher:///secret.db", "unsupported driver 'pysqlcipher' for sqlite"),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    if request.param == "sqlite":
        cli = Cli(_env(f"sqlite:///{tmp_path / 'cli.db'}"), tmp_path)
        cli.ok("init")
        yield cli
        return
    require_pg()
    with pg_database("authserver_cli_errors") as url:
        cli = Cli(_env(url), tmp_path)
        cli.ok("init")
        yield cli


def _assert_one_json_error(result: subprocess.CompletedProcess[str], fragment: str, status: int = 1) -> None:
    assert result.returncode == status, (result.args, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr, result
    (line,) = result.stderr.strip().splitlines()
    answer = json.loads(line)
    assert list(answer) == ["error"] and fragment in answer["error"], answer


def test_an_unsupported_database_url_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    jobs = []
    for url, _ in BAD_URLS:
        cli = Cli(_env(url), tmp_path)
        jobs += [cli.many(["users", "list"], ["init"], ["users", "list", "--json"])]
    for (url, fragment), (listed, init, as_json) in zip(BAD_URLS, jobs, strict=True):
        _assert_one_line_error(listed, "AUTHSERVER_DATABASE_URL", fragment)
        _assert_one_line_error(init, "AUTHSERVER_DATABASE_URL", fragment)
        _assert_one_json_error(as_json, f"AUTHSERVER_DATABASE_URL: {fragment}")
        assert "user:pw" not in listed.stderr
    assert list(tmp_path.iterdir()) == []


def test_with_json_every_error_is_json_on_stderr_and_writes_nothing(cli: Cli) -> None:
    before = _row_counts(cli.url)
    results = cli.many(
        (["users", "create", "admin", "--password-stdin", "--json"], "another passphrase\n"),
        ["--json", "clients", "delete", "no-such-client"],
        ["scopes", "create", "read:x", "--json"],  # usage: --description is required
        ["users", "frobnicate", "--json"],
        ["clients", "create", "--name", "App", "--redirect-uri", "http://app.example.com/cb", "--json"],
    )
    _assert_one_json_error(results[0], "user 'admin' already exists")
    _assert_one_json_error(results[1], "no client 'no-such-client'")
    _assert_one_json_error(results[2], "--description", status=2)
    _assert_one_json_error(results[3], "invalid choice: 'frobnicate'", status=2)
    _assert_one_json_error(results[4], "must be https, or http on a loopback host")
    no_issuer = Cli({k: v for k, v in cli.env.items() if k != "AUTHSERVER_ISSUER"}, cli.cwd)
    _assert_one_json_error(no_issuer.run("serve", "--host", "0.0.0.0", "--json"), "AUTHSERVER_ISSUER is not set")
    assert _row_counts(cli.url) == before
