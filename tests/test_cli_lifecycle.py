"""The lifecycle commands: `users delete|enable`, `clients show|update|disable|enable`,
`scopes update|delete`, `resources update|delete`, and `clients create` refusing a duplicate name.
End to end in subprocesses on SQLite and on PostgreSQL; each change is an audit event by the CLI,
and bad input changes nothing."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from authserver.audit.models import AuditEvent
from authserver.cli import build_parser
from authserver.db import Database
from authserver.users import repository as users
from tests.conftest import pg_database, require_pg
from tests.test_cli import REDIRECT, RESOURCE, Cli, _assert_one_line_error, _env, _row_counts

PASSWORD = "correct horse battery\n"


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    if request.param == "sqlite":
        yield Cli(_env(f"sqlite:///{tmp_path / 'cli.db'}"), tmp_path)
        return
    require_pg()
    with pg_database("authserver_lifecycle") as url:
        yield Cli(_env(url), tmp_path)


def _seed(cli: Cli) -> dict[str, Any]:
    """A first admin, bob, two scopes, a resource, and a confidential client on it."""
    cli.ok("init")
    cli.ok("users", "create", "bob", "--password-stdin", stdin=PASSWORD)
    cli.ok("scopes", "create", "read:calendar", "--description", "See your calendar")
    cli.ok("scopes", "create", "write:calendar", "--description", "Change your calendar", "--write")
    cli.ok("resources", "create", RESOURCE, "--name", "Calendar", "--scope", "read:calendar",
           "--scope", "write:calendar")
    client: dict[str, Any] = cli.json("clients", "create", "--name", "Desktop", "--redirect-uri", REDIRECT,
                                      "--scope", "read:calendar", "--scope", "write:calendar",
                                      "--resource", RESOURCE)
    return client


def _cli_events(url: str) -> list[tuple[str, dict[str, Any]]]:
    db = Database(url)
    try:
        with db.session() as s:
            return [(e.event, e.detail) for e in s.scalars(
                select(AuditEvent).where(AuditEvent.actor == "cli").order_by(AuditEvent.id))]
    finally:
        db.dispose()


def test_users_are_enabled_again_and_deleted(cli: Cli) -> None:
    _seed(cli)
    cli.ok("users", "create", "carol", "--password-stdin", stdin=PASSWORD)
    cli.ok("users", "disable", "bob")
    enabled = cli.json("users", "enable", "bob")
    assert (enabled["username"], enabled["disabled"]) == ("bob", False)
    deleted = cli.json("users", "delete", "carol")
    assert deleted["deleted"] is True and deleted["username"] == "carol"
    assert "deleted user bob" in cli.ok("users", "delete", "bob")
    assert [u["username"] for u in cli.json("users", "list")] == ["admin"]
    db = Database(cli.url)
    try:
        with db.session() as s:
            assert users.get_by_username(s, "carol") is None
    finally:
        db.dispose()
    events = [(event, detail.get("username")) for event, detail in _cli_events(cli.url)]
    assert events[-4:] == [("user.disabled", "bob"), ("user.enabled", "bob"), ("user.deleted", "carol"),
                           ("user.deleted", "bob")]


def test_clients_are_shown_updated_disabled_and_enabled(cli: Cli) -> None:
    desktop = _seed(cli)
    client_id = desktop["client_id"]
    shown = cli.json("clients", "show", client_id)
    assert {k: shown[k] for k in ("name", "scopes", "resources", "disabled")} == {
        "name": "Desktop", "scopes": ["read:calendar", "write:calendar"], "resources": [RESOURCE], "disabled": False}
    assert shown["last_used_at"] is None and shown["created_at"] and "client_secret" not in shown
    text = cli.ok("clients", "show", client_id)
    assert f"client_id: {client_id}\nname: Desktop\n" in text and desktop["client_secret"] not in text

    updated = cli.json("clients", "update", client_id, "--name", "Desktop app", "--scope", "read:calendar",
                       "--redirect-uri", "http://127.0.0.1:5000/cb")
    assert (updated["name"], updated["scopes"], updated["default_scopes"]) == (
        "Desktop app", ["read:calendar"], ["read:calendar"])
    assert updated["redirect_uris"] == ["http://127.0.0.1:5000/cb"] and updated["resources"] == [RESOURCE]
    assert "client_secret" not in updated  # still the same secret
    public = cli.json("clients", "update", client_id, "--auth-method", "none")
    assert public["token_endpoint_auth_method"] == "none" and "client_secret" not in public
    confidential = cli.ok("clients", "update", client_id, "--auth-method", "client_secret_post")
    assert "client_secret: " in confidential and "shown once" in confidential
    assert cli.ok("clients", "update", client_id) == "nothing changed\n"

    assert cli.json("clients", "disable", client_id)["disabled"] is True
    assert cli.json("clients", "show", client_id)["disabled"] is True
    assert "enabled" in cli.ok("clients", "enable", client_id)
    assert cli.json("clients", "show", client_id)["disabled"] is False

    events = [(event, detail) for event, detail in _cli_events(cli.url) if event.startswith("client.")]
    assert [e for e, _ in events] == ["client.created", "client.updated", "client.updated", "client.updated",
                                      "client.updated", "client.disabled", "client.enabled"]
    assert events[1][1]["changed"] == ["name", "redirect_uris", "scopes"]
    assert events[3][1]["new_secret"] is True and events[4][1]["changed"] == []


def test_a_second_client_with_the_same_name_needs_allow_duplicate_name(cli: Cli) -> None:
    desktop = _seed(cli)
    before = _row_counts(cli.url)
    refused = cli.many(["clients", "create", "--name", "Desktop", "--redirect-uri", REDIRECT],
                       ["clients", "create", "--name", " desktop ", "--public", "--redirect-uri", REDIRECT])
    for result in refused:
        _assert_one_line_error(result, "a client named", "exists already", desktop["client_id"],
                               "--allow-duplicate-name")
    assert _row_counts(cli.url) == before
    second = cli.json("clients", "create", "--name", "Desktop", "--redirect-uri", REDIRECT, "--allow-duplicate-name")
    other = cli.json("clients", "create", "--name", "Other", "--redirect-uri", REDIRECT)
    _assert_one_line_error(cli.run("clients", "update", other["client_id"], "--name", "DESKTOP"), "exists already")
    assert cli.json("clients", "update", other["client_id"], "--name", "Desktop",
                    "--allow-duplicate-name")["name"] == "Desktop"
    assert cli.json("clients", "update", second["client_id"], "--name", "Desktop")["name"] == "Desktop"  # its own
    assert [c["name"] for c in cli.json("clients", "list")] == ["Desktop"] * 3


def test_scopes_and_resources_are_updated_and_deleted(cli: Cli) -> None:
    desktop = _seed(cli)
    scope = cli.json("scopes", "update", "write:calendar", "--description", "Add events", "--no-write", "--private")
    assert scope == {"name": "write:calendar", "description": "Add events", "write": False, "public": False}
    assert cli.json("scopes", "update", "write:calendar", "--write", "--public") == {
        "name": "write:calendar", "description": "Add events", "write": True, "public": True}
    resource = cli.json("resources", "update", "HTTPS://MCP.example.com/mcp", "--name", "Calendar 2")
    assert resource == {"uri": RESOURCE, "name": "Calendar 2", "scopes": ["read:calendar", "write:calendar"]}

    removed = cli.json("scopes", "delete", "write:calendar")
    assert removed == {"name": "write:calendar", "deleted": True, "resources": [RESOURCE],
                       "clients": [desktop["client_id"]]}
    assert [s["name"] for s in cli.json("scopes", "list")] == ["read:calendar"]
    assert cli.json("resources", "list")[0]["scopes"] == ["read:calendar"]
    assert cli.json("clients", "show", desktop["client_id"])["scopes"] == ["read:calendar"]
    assert cli.json("resources", "update", RESOURCE, "--scope", "read:calendar")["scopes"] == ["read:calendar"]

    gone = cli.ok("resources", "delete", RESOURCE)
    assert gone == f"deleted resource {RESOURCE}; removed from clients: {desktop['client_id']}\n"
    assert cli.json("resources", "list") == []
    assert cli.json("clients", "show", desktop["client_id"])["resources"] == []

    events = [(event, detail) for event, detail in _cli_events(cli.url)
              if event.split(".")[0] in ("scope", "resource") and not event.endswith("created")]
    assert [e for e, _ in events] == ["scope.updated", "scope.updated", "resource.updated", "scope.deleted",
                                      "resource.updated", "resource.deleted"]
    assert events[3][1] == {"scope": "write:calendar", "resources": [RESOURCE], "clients": [desktop["client_id"]]}
    assert events[5][1] == {"resource": RESOURCE, "clients": [desktop["client_id"]]}


def test_bad_lifecycle_input_fails_with_one_line_and_changes_nothing(cli: Cli) -> None:
    desktop = _seed(cli)
    client_id = desktop["client_id"]
    cli.ok("clients", "create", "--name", "Other", "--redirect-uri", REDIRECT)
    before = _row_counts(cli.url)
    cases: list[tuple[list[str], tuple[str, ...]]] = [
        (["users", "delete", "nobody"], ("no user 'nobody'",)),
        (["users", "delete", "admin"], ("last enabled admin",)),
        (["users", "enable", "nobody"], ("no user 'nobody'",)),
        (["clients", "show", "nope"], ("no client 'nope'",)),
        (["clients", "update", "nope", "--name", "X"], ("no client 'nope'",)),
        (["clients", "update", client_id, "--scope", "nope"], ("unknown scope 'nope'",)),
        (["clients", "update", client_id, "--redirect-uri", "http://app.example.com/cb"],
         ("must be https, or http on a loopback host",)),
        (["clients", "update", client_id, "--name", "other"], ("a client named 'other' exists already",)),
        (["clients", "update", client_id, "--default-scope", "nope"], ("default scopes must be among",)),
        (["clients", "update", client_id, "--auth-method", "none", "--grant-type", "client_credentials"],
         ("public client cannot use client_credentials",)),
        (["clients", "update", client_id, "--introspect", "--no-introspect", "--grant-type", "password"],
         ("--grant-type", "password")),
        (["clients", "disable", "nope"], ("no client 'nope'",)),
        (["clients", "enable", "nope"], ("no client 'nope'",)),
        (["scopes", "delete", "nope"], ("unknown scope 'nope'",)),
        (["scopes", "update", "nope", "--description", "x"], ("unknown scope 'nope'",)),
        (["scopes", "update", "read:calendar", "--description", "  "], ("needs a description",)),
        (["scopes", "update", "read:calendar", "--private", "--public"], ("not allowed with",)),
        (["resources", "delete", "https://nope.example.com/mcp"], ("unknown resource",)),
        (["resources", "delete", "not a uri"], ("unknown resource 'not a uri'",)),
        (["resources", "update", RESOURCE, "--scope", "nope"], ("unknown scope 'nope'",)),
        (["resources", "update", RESOURCE, "--name", " "], ("needs a name",)),
        (["resources", "update", "https://nope.example.com/mcp", "--name", "X"], ("unknown resource",)),
    ]
    results = cli.many(*(command for command, _ in cases))
    for result, (_, fragments) in zip(results, cases, strict=True):
        _assert_one_line_error(result, *fragments)
    assert _row_counts(cli.url) == before  # not even an audit event
    shown = cli.json("clients", "show", client_id)
    assert (shown["name"], shown["disabled"], shown["redirect_uris"]) == ("Desktop", False, [REDIRECT])
    assert json.loads(cli.many(["users", "list", "--json"])[0].stdout)[0]["username"] == "admin"


def _actions(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_command_and_option_has_help_text() -> None:
    missing = [f"{path} {action.option_strings or action.dest}"
               for path, action in _actions(build_parser(), "authserver") if not action.help]
    assert missing == []


def test_generated_client_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """One random id in 64 began with ``-``, which the command line reads as an option: ``clients
    update -YMu… --name X`` was a usage error (seen in CI). Such a draw is drawn again."""
    from authserver import secrets as ours

    draws = iter(["-YMuUXdQf3CKll6VsGXWvg", "-second", "YMuUXdQf3CKll6VsGXWvg"])
    monkeypatch.setattr(ours.secrets, "token_urlsafe", lambda nbytes: next(draws))
    assert ours.new_client_id() == "YMuUXdQf3CKll6VsGXWvg"
    monkeypatch.undo()
    assert not any(ours.new_client_id().startswith("-") for _ in range(2000))
