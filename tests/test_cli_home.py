"""One data directory (AUTHSERVER_HOME): where the default SQLite database and the generated secret
live does not depend on the current directory, `init` says where they are, and a command that
only reads never creates a database. End to end in subprocesses, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import inspect

from authserver.db import Database
from tests.conftest import pg_database, require_pg
from tests.test_cli import Cli, _assert_one_line_error, _row_counts

READ_ONLY = [["users", "list"], ["clients", "list"], ["keys", "list"], ["scopes", "list"],
             ["resources", "list"], ["db", "purge"], ["serve"]]


def _bare_env(home: Path, **extra: str) -> dict[str, str]:
    """Nothing of the tests' own configuration: a person's shell with HOME set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_") and k != "XDG_DATA_HOME"}
    env.update({"HOME": str(home)}, **extra)
    return env


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_the_default_data_directory_is_the_same_from_any_directory(tmp_path: Path) -> None:
    home, here, there = tmp_path / "home", tmp_path / "here", tmp_path / "there"
    for d in (home, here, there):
        d.mkdir()
    data = home / ".local" / "share" / "authserver"
    out = Cli(_bare_env(home), here).ok("init")
    assert f"data directory: {data} (AUTHSERVER_HOME)" in out
    assert f"database: {data / 'authserver.db'}" in out and f"secret key: {data / 'authserver.secret'}" in out
    assert _files(here) == set() and _files(data) == {"authserver.db", "authserver.secret"}
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "authserver.secret").stat().st_mode) == 0o600

    listed = Cli(_bare_env(home), there).json("users", "list")
    assert [u["username"] for u in listed] == ["admin"]
    assert _files(there) == set()

    xdg = tmp_path / "xdg"
    again = Cli(_bare_env(home, XDG_DATA_HOME=str(xdg)), there).json("init")
    assert again["home"] == str(xdg / "authserver") and again["admin_created"] is True
    assert _files(xdg) == {"authserver/authserver.db", "authserver/authserver.secret"}


def test_authserver_home_holds_the_database_and_the_secret(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = tmp_path / "data"
    home.mkdir()
    cli = Cli(_bare_env(home, AUTHSERVER_HOME=str(data)), tmp_path)
    created = cli.json("init")
    assert created["home"] == str(data) and created["database"] == str(data / "authserver.db")
    assert created["secret_key_file"] == str(data / "authserver.secret") and created["admin_created"]
    assert _files(home) == set() and _files(data) == {"authserver.db", "authserver.secret"}


def test_a_database_left_in_the_current_directory_is_pointed_out(tmp_path: Path) -> None:
    (tmp_path / "authserver.db").write_bytes(b"")
    cli = Cli(_bare_env(tmp_path / "home", AUTHSERVER_HOME=str(tmp_path / "data")), tmp_path)
    result = cli.run("init")
    assert result.returncode == 0
    assert f"note: {tmp_path / 'authserver.db'} is not used" in result.stderr
    assert f"AUTHSERVER_DATABASE_URL=sqlite:///{tmp_path / 'authserver.db'}" in result.stderr


def test_read_only_commands_never_create_a_sqlite_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli = Cli(_bare_env(tmp_path, AUTHSERVER_HOME=str(data)), tmp_path)
    for result in cli.many(*READ_ONLY):
        _assert_one_line_error(result, f"there is no database yet at {data / 'authserver.db'}",
                               "authserver init")
    assert not data.exists() and _files(tmp_path) == set()

    explicit = tmp_path / "elsewhere" / "my.db"
    cli = Cli(_bare_env(tmp_path, AUTHSERVER_DATABASE_URL=f"sqlite:///{explicit}"), tmp_path)
    _assert_one_line_error(cli.run("keys", "list"), f"there is no database yet at {explicit}")
    assert _files(tmp_path) == set()


def test_on_postgresql_the_generated_secret_lives_in_authserver_home(tmp_path: Path) -> None:
    require_pg()
    data = tmp_path / "data"
    with pg_database("authserver_home") as url:
        cli = Cli(_bare_env(tmp_path / "home", AUTHSERVER_HOME=str(data),
                            AUTHSERVER_DATABASE_URL=url.replace("postgres@", "postgres:pw@")), tmp_path)
        results = cli.many(*READ_ONLY)  # an empty database: every command refuses, nothing is written
        for result in results:
            _assert_one_line_error(result)
        assert not data.exists() and _tables(url) == []
        created = cli.json("init")
        assert created["database"] == url.replace("postgres@", "postgres:***@")
        assert created["secret_key_file"] == str(data / "authserver.secret")
        assert _files(data) == {"authserver.secret"} and _files(tmp_path / "home") == set()
        assert _row_counts(url)["users"] == 1


def _tables(url: str) -> list[str]:
    db = Database(url)
    try:
        return inspect(db.engine).get_table_names()
    finally:
        db.dispose()


def test_init_says_when_the_secret_key_comes_from_the_environment(tmp_path: Path) -> None:
    cli = Cli(_bare_env(tmp_path, AUTHSERVER_HOME=str(tmp_path / "data"), AUTHSERVER_SECRET_KEY="x" * 40),
              tmp_path)
    out = cli.ok("init")
    assert "secret key: AUTHSERVER_SECRET_KEY" in out
    assert _files(tmp_path / "data") == {"authserver.db"}
