"""One-time passwords: the CLI never replaces a password nobody gave it, says "one-time" when it
makes one, and the person who signs in with one is sent to choose their own before any other page
or any authorization goes on (then back to where they were). The CLI end to end in subprocesses,
the pages on the database it made, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.audit.models import AuditEvent
from authserver.db import Database
from authserver.users import repository as users
from tests.admin_pages import csrf, sign_in
from tests.conftest import ISSUER, make_settings, pg_database, require_pg
from tests.oauth_helpers import PASSWORD, authorize_params, decide, exchange, login, parse_forms, pkce_pair, query, seed
from tests.test_cli import Cli, _assert_one_line_error, _env, _row_counts

OWN_PASSWORD = "a passphrase of my very own"


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    if request.param == "sqlite":
        yield Cli(_env(f"sqlite:///{tmp_path / 'cli.db'}"), tmp_path)
        return
    require_pg()
    with pg_database("authserver_one_time") as url:
        yield Cli(_env(url), tmp_path)


@pytest.fixture
def db(cli: Cli) -> Iterator[Database]:
    database = Database(cli.url)
    yield database
    database.dispose()


def _password_hash(db: Database, username: str) -> tuple[str, bool]:
    with db.session() as s:
        user = users.get_by_username(s, username)
        assert user is not None
        return user.password_hash, user.must_change_password


def test_set_password_without_a_password_given_changes_nothing(cli: Cli, db: Database) -> None:
    cli.ok("init")
    before, counts = _password_hash(db, "admin"), _row_counts(cli.url)
    results = cli.many((["users", "set-password", "admin"], ""),  # a script with empty standard input
                       ["users", "set-password", "admin"],  # no standard input at all
                       (["users", "set-password", "admin", "--password-stdin"], ""),
                       (["users", "set-password", "admin", "--password-stdin"], "\n"),
                       (["users", "create", "carol"], ""),
                       ["users", "set-password", "admin", "--password-stdin", "--generate"])
    for result in results[:2] + results[4:5]:
        _assert_one_line_error(result, "no password given", "--password-stdin", "--generate")
    for result in results[2:4]:
        _assert_one_line_error(result, "no password on standard input")
    _assert_one_line_error(results[5], "not allowed with")
    assert results[5].returncode == 2
    assert _password_hash(db, "admin") == before and _row_counts(cli.url) == counts


def test_generated_passwords_are_one_time_passwords(cli: Cli, db: Database) -> None:
    first = cli.json("init")
    assert first["must_change_password"] is True and first["admin_created"] is True
    assert _password_hash(db, "admin")[1] is True
    text = cli.ok("users", "set-password", "admin", "--generate")
    assert re.search(r"one-time password: \S+\n\(shown once; it must be changed at the first sign-in\)", text)
    carol = cli.json("users", "create", "carol", "--generate")
    assert carol["must_change_password"] is True and len(carol["password"]) >= 16
    dave = cli.json("users", "create", "dave", "--password-stdin", "--one-time", stdin=PASSWORD + "\n")
    assert dave["must_change_password"] is True and "password" not in dave
    mine = cli.json("users", "set-password", "admin", "--password-stdin", stdin=OWN_PASSWORD + "\n")
    assert mine["must_change_password"] is False and "password" not in mine
    with db.session() as s:
        details = [e.detail for e in s.scalars(select(AuditEvent).where(AuditEvent.actor == "cli")
                                               .order_by(AuditEvent.id)) if e.event.startswith("user.")]
    assert [d["one_time"] for d in details] == [True, True, True, True, False]
    assert first["password"] not in json.dumps(details) and carol["password"] not in json.dumps(details)


@pytest.fixture
def first_admin(cli: Cli) -> dict[str, Any]:
    """What `authserver init --json` said (the first admin's one-time password among it)."""
    created: dict[str, Any] = cli.json("init")
    return created


@pytest.fixture
def web(cli: Cli, db: Database, first_admin: dict[str, Any]) -> Iterator[TestClient]:
    app = create_app(make_settings(cli.url), db=db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        yield client


def _change(client: TestClient, page_html: str, current: str, new: str) -> Any:
    form = next(f for f in parse_forms(page_html) if f.action.endswith("/account/password"))
    return client.post(form.action, data={**dict(form.fields), "current_password": current,
                                          "new_password": new, "confirm_password": new})


def test_the_first_admin_must_choose_a_password_before_any_page(first_admin: dict[str, Any], db: Database,
                                                                web: TestClient) -> None:
    one_time = first_admin["password"]
    signed_in = sign_in(web, "admin", one_time, "/admin")
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/admin"
    for path in ("/admin", "/admin/users", "/account", "/account/activity"):
        sent = web.get(path)
        assert sent.status_code == 303 and sent.headers["location"] == f"/account/password?next={quote(path)}"
    page = web.get("/account/password?next=/admin")
    assert page.status_code == 200 and 'id="one-time-password"' in page.text
    assert "You signed in with a one-time password" in page.text

    same = _change(web, page.text, one_time, one_time)
    assert same.status_code == 400 and "not the one-time password you were given" in same.text
    assert _password_hash(db, "admin")[1] is True
    evil = web.get("/account/password?next=//evil.example/")
    assert 'name="next"' not in evil.text  # only a local path is ever returned to

    changed = _change(web, page.text, one_time, OWN_PASSWORD)
    assert changed.status_code == 303 and changed.headers["location"] == "/admin"
    assert web.get("/admin").status_code == 200
    assert "one-time password" not in web.get("/account/password").text
    assert _password_hash(db, "admin")[1] is False
    with db.session() as s:
        assert users.authenticate(s, "admin", OWN_PASSWORD) is not None
        bob_id = str(users.create_user(s, "bob", PASSWORD).id)
    reset = web.post(f"/admin/users/{bob_id}/password", data={"csrf": csrf(web, f"/admin/users/{bob_id}"),
                                                             "password": "an admin's temporary one"})
    assert reset.status_code == 303 and _password_hash(db, "bob")[1] is True  # the admin knows it


def test_an_authorization_waits_for_the_password_change_then_goes_on(cli: Cli, db: Database,
                                                                      web: TestClient) -> None:
    world = seed(db)
    one_time = cli.json("users", "create", "carol", "--generate")["password"]
    verifier, challenge = pkce_pair()
    params = authorize_params(world.public_id, challenge)

    assert web.get("/authorize", params={**params, "prompt": "none"}).status_code == 303  # not signed in yet
    started = web.get("/authorize", params=params)
    interaction = started.headers["location"]
    signed_in = login(web, web.get(interaction).text, "carol", one_time)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == interaction
    held = web.get(interaction)
    assert held.status_code == 303 and held.headers["location"] == f"/account/password?next={quote(interaction)}"

    silent = web.get("/authorize", params={**params, "prompt": "none"})
    assert query(silent.headers["location"])["error"] == "interaction_required"

    page = web.get(held.headers["location"])
    assert 'id="one-time-password"' in page.text
    changed = _change(web, page.text, one_time, OWN_PASSWORD)
    assert changed.status_code == 303 and changed.headers["location"] == interaction
    consent = web.get(interaction)
    assert consent.status_code == 200 and 'name="decision"' in consent.text
    done = decide(web, consent.text)
    code = query(done.headers["location"])["code"]
    tokens = exchange(web, code, verifier, world.public_id)
    assert tokens.status_code == 200 and tokens.json()["access_token"]


def test_a_consent_posted_before_the_change_gives_no_code(db: Database, web: TestClient) -> None:
    """The consent form of a request made before an admin reset the password cannot be sent past it."""
    world = seed(db)
    _, challenge = pkce_pair()
    started = web.get("/authorize", params=authorize_params(world.public_id, challenge))
    interaction = started.headers["location"]
    login(web, web.get(interaction).text, "alice", PASSWORD)
    consent = web.get(interaction)
    assert 'name="decision"' in consent.text
    with db.session() as s:  # as the console's reset does, minus the sign-out (a session made meanwhile)
        alice = users.get_by_username(s, "alice")
        assert alice is not None
        users.set_password(s, alice, "an admin's temporary one", one_time=True)
    posted = decide(web, consent.text)
    assert posted.status_code == 303 and posted.headers["location"].startswith("/account/password?next=")
    assert "code=" not in posted.headers["location"]
