"""The person's account pages: connected apps and disconnecting them, activity, password change.

Everything goes through the real pages: sign-in on ``/login?next=/account`` or a real
authorization flow, forms parsed from the HTML and posted as a browser would. Each refusal
is checked on both sides: the answer, and that nothing changed (the grant still refreshes,
the old password still signs in).
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from authserver.audit.log import record
from authserver.clients import repository as clients
from authserver.db import Database
from authserver.interaction import consents
from authserver.interaction.models import Consent
from authserver.users import repository as users
from tests.conftest import ISSUER
from tests.oauth_helpers import (
    OTHER_RESOURCE,
    PASSWORD,
    REDIRECT,
    RESOURCE,
    World,
    authorize_params,
    exchange,
    parse_forms,
    pkce_pair,
    query,
    run_flow,
    seed,
    sql,
    user_id,
)

NEW_PASSWORD = "a much longer new passphrase"


@pytest.fixture
def world(db: Database) -> World:
    return seed(db)


@pytest.fixture
def browser(app: FastAPI) -> Iterator[Any]:
    """More browsers on the same app: each its own cookie jar."""
    opened: list[TestClient] = []

    def open_browser(address: str = "testclient") -> TestClient:
        test_client = TestClient(app, base_url=ISSUER, follow_redirects=False, client=(address, 50000))
        test_client.__enter__()
        opened.append(test_client)
        return test_client

    yield open_browser
    for test_client in opened:
        test_client.__exit__(None, None, None)


# --- Helpers: sign in, connect an app, use its tokens. ---

def sign_in(client: TestClient, username: str = "alice", password: str = PASSWORD,
            next_path: str = "/account"):  # type: ignore[no-untyped-def]
    """The sign-in page's form, filled and posted; the response to the POST."""
    page = client.get("/login", params={"next": next_path})
    assert page.status_code == 200, page.text
    form = next(f for f in parse_forms(page.text) if f.action.endswith("/login"))
    data = dict(form.fields)
    data.update({"username": username, "password": password})
    return client.post(form.action, data=data)


def signed_in(client: TestClient, username: str = "alice") -> TestClient:
    response = sign_in(client, username)
    assert response.status_code == 303 and response.headers["location"] == "/account", response.text
    return client


def connect(client: TestClient, world: World, *, username: str = "alice", resource: str = RESOURCE,
            scope: str = "read:calendar write:calendar", untick: tuple[str, ...] = (),
            client_id: str | None = None, secret: str | None = None) -> dict[str, Any]:
    """A real authorization (sign-in and consent pages) and code exchange; the token response."""
    verifier, challenge = pkce_pair()
    client_id = client_id or world.confidential_id
    location = run_flow(client, authorize_params(client_id, challenge, resource=resource, scope=scope),
                        username=username, untick=untick)
    assert location.startswith(REDIRECT), location
    response = exchange(client, query(location)["code"], verifier, client_id,
                        secret=secret or world.confidential_secret)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def refresh(client: TestClient, world: World, token: str):  # type: ignore[no-untyped-def]
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token},
                       auth=(world.confidential_id, world.confidential_secret))


def make_introspector(db: Database, resources: list[str]) -> tuple[str, str]:
    """The MCP server's own confidential client, allowed to introspect tokens for ``resources``."""
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name="Calendar MCP server", grant_types=["client_credentials"], resources=resources,
            can_introspect=True))
        assert created.client_secret
        return created.client.client_id, created.client_secret


def active(client: TestClient, introspector: tuple[str, str], token: str) -> bool:
    response = client.post("/introspect", data={"token": token}, auth=introspector)
    assert response.status_code == 200, response.text
    return bool(response.json()["active"])


def form_with(page_html: str, action_end: str) -> dict[str, str]:
    forms = [f for f in parse_forms(page_html) if f.action.endswith(action_end)]
    assert forms, page_html
    return dict(forms[0].fields)


def confirmation_page(client: TestClient, client_id: str, resource: str = RESOURCE):  # type: ignore[no-untyped-def]
    """The Disconnect button of /account (a GET form) leads to the confirmation page."""
    listing = client.get("/account")
    assert listing.status_code == 200
    buttons = [dict(f.fields) for f in parse_forms(listing.text) if f.action.endswith("/account/disconnect")]
    chosen = next(b for b in buttons if b["client_id"] == client_id and b["resource"] == resource)
    return client.get("/account/disconnect", params=chosen)


def disconnect(client: TestClient, client_id: str, resource: str = RESOURCE):  # type: ignore[no-untyped-def]
    page = confirmation_page(client, client_id, resource)
    assert page.status_code == 200, page.text
    return client.post("/account/disconnect", data=form_with(page.text, "/account/disconnect"))


def consent_of(db: Database, world: World, username: str = "alice", resource: str = RESOURCE) -> Consent | None:
    person = uuid.UUID(user_id(db, username))  # before the unit of work: SQLite has one writer at a time
    with db.session() as s:
        return consents.find(s, person, world.confidential_id, resource)


def text_of(page_html: str) -> str:
    """The page's visible text, tags removed and whitespace collapsed (inline emphasis joins its words)."""
    joined = re.sub(r"</?(strong|em)>", "", page_html)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", joined))).strip()


# --- Signing in to the account pages. ---

@pytest.mark.parametrize("path", ["/account", "/account/activity", "/account/password",
                                  "/account/disconnect?client_id=x&resource=y"])
def test_anonymous_visitor_is_sent_to_sign_in_and_back(client: TestClient, world: World, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=/account")
    for post in ("/account/disconnect", "/account/password"):
        refused = client.post(post, data={"client_id": "x", "resource": "y"})
        assert refused.status_code == 303 and refused.headers["location"] == "/login?next=/account"


def test_sign_in_page_leads_to_the_empty_connected_apps_page(client: TestClient, world: World) -> None:
    assert client.get("/account").headers["location"] == "/login?next=/account"
    response = sign_in(client)
    assert response.status_code == 303 and response.headers["location"] == "/account"
    page = client.get("/account")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert '<html lang="en">' in page.text
    assert "No app is connected to your account" in page.text
    assert "Signed in as alice" in text_of(page.text)
    for path in ("/account/activity", "/account/password"):
        assert f'href="{path}"' in page.text
    assert 'href="/admin"' not in page.text  # a plain user has no console


def test_console_link_only_for_admins_and_auditors(client: TestClient, db: Database, world: World,
                                                   browser: Any) -> None:
    with db.session() as s:
        users.create_user(s, "carol", PASSWORD, roles=["auditor"])
        users.create_user(s, "dave", PASSWORD, roles=["admin"])
    assert 'href="/admin"' not in signed_in(client, "alice").get("/account").text
    for name in ("carol", "dave"):
        assert 'href="/admin"' in signed_in(browser(), name).get("/account").text


def test_sign_out_form_on_the_account_page_signs_out(client: TestClient, world: World) -> None:
    page = signed_in(client).get("/account")
    response = client.post("/logout", data=form_with(page.text, "/logout"))
    assert response.status_code == 200 and "You are signed out" in response.text
    assert client.get("/account").status_code == 303


def test_every_account_page_is_english_and_no_store(client: TestClient, world: World) -> None:
    connect(client, world)
    for path in ("/account", "/account/activity", "/account/password"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert '<html lang="en">' in page.text
        assert page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    page = confirmation_page(client, client_id=page_client_id(client))
    assert page.status_code == 200 and '<html lang="en">' in page.text


def page_client_id(client: TestClient) -> str:
    listing = client.get("/account")
    return next(dict(f.fields)["client_id"] for f in parse_forms(listing.text)
                if f.action.endswith("/account/disconnect"))


# --- Connected apps. ---

def test_connected_apps_lists_each_grant_with_what_it_can_do(client: TestClient, world: World) -> None:
    connect(client, world)  # alice, through the sign-in and consent pages
    page = client.get("/account")
    text = text_of(page.text)
    assert "Web Agent can use Calendar" in text
    # The write scope comes first and stands out; the read scope follows, in plain words.
    write = text.index("Create, change and delete your calendar events can make changes")
    assert write < text.index("See your calendar events")
    assert re.search(r"Allowed on \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert re.search(r"Last used \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)  # the code was exchanged
    assert "Stays connected" in text


def test_an_allowed_but_unused_one_session_grant_says_so(client: TestClient, world: World) -> None:
    _, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.confidential_id, challenge, scope="read:calendar"),
                        untick=("offline_access",))
    assert "code=" in location  # the code is never exchanged
    text = text_of(client.get("/account").text)
    assert "Web Agent can use Calendar" in text
    assert "Not used yet" in text and "This session only" in text


def test_a_person_sees_only_their_own_connected_apps(client: TestClient, world: World, browser: Any) -> None:
    connect(client, world, username="alice")
    bob = signed_in(browser(), "bob")
    page = bob.get("/account")
    assert "Web Agent" not in page.text and "No app is connected" in page.text
    assert "Web Agent can use Calendar" in text_of(client.get("/account").text)


# --- Disconnect. ---

def test_disconnect_confirmation_names_the_app_and_what_happens(client: TestClient, world: World) -> None:
    connect(client, world)
    page = confirmation_page(client, world.confidential_id)
    assert page.status_code == 200
    text = text_of(page.text)
    assert "Disconnect Web Agent from Calendar?" in text
    assert "will lose access at once" in text and "it will have to ask you again" in text
    assert 'name="csrf"' in page.text


def test_disconnect_ends_the_grant_everywhere(client: TestClient, db: Database, world: World) -> None:
    introspector = make_introspector(db, [RESOURCE])
    tokens = connect(client, world)
    assert active(client, introspector, tokens["access_token"])

    response = disconnect(client, world.confidential_id)
    assert response.status_code == 303 and response.headers["location"] == "/account"
    page = client.get("/account")
    assert "Web Agent can no longer use Calendar. It will have to ask you again." in text_of(page.text)
    assert "No app is connected" in page.text

    # The refresh token is dead, the still-unexpired access token reads inactive.
    assert refresh(client, world, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert not active(client, introspector, tokens["access_token"])
    # The consent is forgotten: the next authorization asks again, and then works.
    _, challenge = pkce_pair()
    start = client.get("/authorize", params=authorize_params(world.confidential_id, challenge,
                                                             scope="read:calendar write:calendar"))
    consent = client.get(start.headers["location"])
    assert 'name="decision"' in consent.text
    again = connect(client, world)
    assert active(client, introspector, again["access_token"])
    assert refresh(client, world, again["refresh_token"]).status_code == 200
    assert not active(client, introspector, tokens["access_token"])  # the old one stays dead
    assert "Web Agent can use Calendar" in text_of(client.get("/account").text)


def test_disconnect_one_server_leaves_the_same_apps_other_grant(client: TestClient, db: Database,
                                                               world: World) -> None:
    introspector = make_introspector(db, [RESOURCE, OTHER_RESOURCE])
    calendar = connect(client, world)
    mail = connect(client, world, resource=OTHER_RESOURCE, scope="read:email")
    assert "Web Agent can use Mail" in text_of(client.get("/account").text)
    assert disconnect(client, world.confidential_id, RESOURCE).status_code == 303

    assert refresh(client, world, calendar["refresh_token"]).status_code == 400
    assert not active(client, introspector, calendar["access_token"])
    assert active(client, introspector, mail["access_token"])
    renewed = refresh(client, world, mail["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    text = text_of(client.get("/account").text)
    assert "Web Agent can use Mail" in text and "Web Agent can use Calendar" not in text


def _assert_still_connected(client: TestClient, db: Database, world: World, tokens: dict[str, Any]) -> None:
    consent = consent_of(db, world)
    assert consent is not None and "write:calendar" in consent.scopes and consent.tokens_revoked_at is None
    assert refresh(client, world, tokens["refresh_token"]).status_code == 200


def test_disconnect_without_csrf_is_refused(client: TestClient, db: Database, world: World) -> None:
    tokens = connect(client, world)
    data = form_with(confirmation_page(client, world.confidential_id).text, "/account/disconnect")
    for bad in ({k: v for k, v in data.items() if k != "csrf"}, {**data, "csrf": "forged"}):
        response = client.post("/account/disconnect", data=bad)
        assert response.status_code == 403 and "Form expired" in response.text
    repeated = [*data.items(), ("csrf", data["csrf"])]
    assert client.post("/account/disconnect", content="&".join(f"{k}={v}" for k, v in repeated),
                       headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 403
    _assert_still_connected(client, db, world, tokens)


def test_disconnect_with_another_persons_csrf_is_refused(client: TestClient, db: Database, world: World,
                                                         browser: Any) -> None:
    tokens = connect(client, world)
    data = form_with(confirmation_page(client, world.confidential_id).text, "/account/disconnect")
    bob = signed_in(browser(), "bob")
    bobs_csrf = form_with(bob.get("/account/password").text, "/account/password")["csrf"]
    # Alice's form with Bob's token, in Alice's browser: the token is bound to Bob's session.
    response = client.post("/account/disconnect", data={**data, "csrf": bobs_csrf})
    assert response.status_code == 403
    # And Bob posting Alice's form (her token) from his browser.
    assert bob.post("/account/disconnect", data=data).status_code == 403
    _assert_still_connected(client, db, world, tokens)


def test_a_person_cannot_disconnect_someone_elses_grant(client: TestClient, db: Database, world: World,
                                                        browser: Any) -> None:
    tokens = connect(client, world)
    bob = signed_in(browser(), "bob")
    # Bob knows Alice's client_id and resource: they only ever name his own (absent) grant.
    page = bob.get("/account/disconnect", params={"client_id": world.confidential_id, "resource": RESOURCE})
    assert page.status_code == 404 and "Not connected" in page.text
    csrf = form_with(bob.get("/account/password").text, "/account/password")["csrf"]
    response = bob.post("/account/disconnect", data={"csrf": csrf, "client_id": world.confidential_id,
                                                     "resource": RESOURCE})
    assert response.status_code == 404
    _assert_still_connected(client, db, world, tokens)
    assert sql(db, "SELECT COUNT(*) FROM audit_events WHERE event = 'grant.disconnected'")[0][0] == 0


def test_disconnecting_twice_is_not_found_the_second_time(client: TestClient, world: World) -> None:
    connect(client, world)
    data = form_with(confirmation_page(client, world.confidential_id).text, "/account/disconnect")
    assert client.post("/account/disconnect", data=data).status_code == 303
    assert client.post("/account/disconnect", data=data).status_code == 404


# --- Activity. ---

def tool_called(db: Database, username: str, client_id: str, tool: str, *, outcome: str = "success",
                resource: str = RESOURCE, called_at: str = "2026-01-02T03:04:05Z") -> None:
    """A tool call as the MCP server reports it (the tool-call reports' contract)."""
    actor = user_id(db, username)  # before the unit of work: SQLite has one writer at a time
    with db.session() as s:
        record(s, "tool.called", actor=actor, client_id=client_id,
               outcome="success" if outcome == "success" else "failure", tool=tool, tool_outcome=outcome,
               resource=resource, jti="jti-1", reported_by="rs-client", called_at=called_at)


def test_activity_tells_what_happened_in_sentences(client: TestClient, db: Database, world: World) -> None:
    assert sign_in(client, password="wrong password").status_code == 401
    connect(client, world)  # signs in, allows Calendar
    _, challenge = pkce_pair()
    run_flow(client, authorize_params(world.confidential_id, challenge, resource=OTHER_RESOURCE,
                                      scope="read:email"), decision="deny")
    tool_called(db, "alice", world.confidential_id, "create_event")
    tool_called(db, "alice", world.confidential_id, "delete_event", outcome="denied")
    tool_called(db, "alice", world.confidential_id, "list_events", outcome="error")
    disconnect(client, world.confidential_id)

    page = client.get("/account/activity")
    assert page.status_code == 200
    text = text_of(page.text)
    expected = [  # newest first
        "You disconnected Web Agent from Calendar",
        "Web Agent used list_events on Calendar, which reported an error Failed",
        "Web Agent was not allowed to use delete_event on Calendar Denied",
        "Web Agent used create_event on Calendar",
        "You did not allow Web Agent to use Mail Denied",
        "You allowed Web Agent to use Calendar",
        "You signed in from testclient to connect Web Agent",
        "Someone tried to sign in to your account from testclient Failed",
    ]
    positions = [text.index(sentence) for sentence in expected]
    assert positions == sorted(positions), text
    assert "2026-01-02 03:04" in text  # a tool call is shown at the time the server says it ran
    assert "Create, change and delete your calendar events" in text  # what was allowed, in plain words


def test_activity_shows_only_the_persons_own_rows(client: TestClient, db: Database, world: World,
                                                  browser: Any) -> None:
    connect(client, world, username="alice")
    tool_called(db, "alice", world.confidential_id, "alice_tool")
    tool_called(db, "bob", world.confidential_id, "bobs_private_tool")
    bob = user_id(db, "bob")
    with db.session() as s:
        record(s, "login.failed", actor=bob, ip="203.0.113.9")
    alice_text = text_of(client.get("/account/activity").text)
    assert "alice_tool" in alice_text
    assert "bobs_private_tool" not in alice_text and "203.0.113.9" not in alice_text

    bob = signed_in(browser(), "bob")
    bob_text = text_of(bob.get("/account/activity").text)
    assert "bobs_private_tool" in bob_text and "203.0.113.9" in bob_text
    assert "alice_tool" not in bob_text and "Web Agent to use Calendar" not in bob_text


def test_activity_falls_back_to_ids_for_deleted_apps_and_servers(client: TestClient, db: Database,
                                                                 world: World) -> None:
    signed_in(client)
    tool_called(db, "alice", "gone-client", "search", resource="https://gone.example/mcp")
    assert "gone-client used search on https://gone.example/mcp" in text_of(client.get("/account/activity").text)


def test_activity_is_paged_by_fifty_newest_first(client: TestClient, db: Database, world: World) -> None:
    signed_in(client)  # one sign-in row
    alice = user_id(db, "alice")
    with db.session() as s:
        for n in range(109):
            record(s, "tool.called", actor=alice, client_id=world.confidential_id,
                   tool=f"tool_{n:03d}", tool_outcome="success", resource=RESOURCE,
                   called_at="2026-01-02T03:04:05+00:00")
    seen: list[str] = []
    path = "/account/activity"
    for expected in (50, 50, 10):
        page = client.get(path)
        assert page.status_code == 200
        rows = re.findall(r"<tr>\s*<td><time", page.text)
        assert len(rows) == expected
        seen += re.findall(r"tool_\d{3}", page.text)
        older = re.search(r'href="(/account/activity\?before=\d+)"', page.text)
        if expected < 50:
            assert older is None
        else:
            assert older is not None
            path = older.group(1)
    assert seen == [f"tool_{n:03d}" for n in reversed(range(109))]
    assert "You signed in from testclient" in text_of(page.text)  # the oldest row, last
    assert client.get("/account/activity?before=abc").status_code == 200  # nonsense means the newest page


# --- Change password. ---

def password_form(client: TestClient) -> dict[str, str]:
    return form_with(client.get("/account/password").text, "/account/password")


def change_password(client: TestClient, current: str, new: str, confirm: str | None = None):  # type: ignore[no-untyped-def]
    data = password_form(client)
    data.update({"current_password": current, "new_password": new,
                 "confirm_password": new if confirm is None else confirm})
    return client.post("/account/password", data=data)


def test_wrong_current_password_changes_nothing(client: TestClient, db: Database, world: World,
                                                browser: Any) -> None:
    signed_in(client)
    response = change_password(client, "not my password", NEW_PASSWORD)
    assert response.status_code == 400
    assert re.search(r'id="current_password"[^>]*aria-invalid="true"', response.text)
    assert 'id="current_password-error"' in response.text
    assert "That is not your current password." in response.text
    assert NEW_PASSWORD not in response.text and "not my password" not in response.text  # never echoed
    assert sign_in(browser(), password=PASSWORD).status_code == 303
    assert sign_in(browser(), password=NEW_PASSWORD).status_code == 401
    assert sql(db, "SELECT outcome FROM audit_events WHERE event = 'password.change_failed'") == [("failure",)]
    assert "A password change from testclient was refused" in text_of(client.get("/account/activity").text)


@pytest.mark.parametrize(("new", "confirm", "field", "message"), [
    ("short", "short", "new_password", "Use at least 8 characters."),
    (NEW_PASSWORD, NEW_PASSWORD + "!", "confirm_password", "The two new passwords are not the same."),
    ("x" * 1025, "x" * 1025, "new_password", "Use at most 1024 characters."),
])
def test_new_password_must_be_long_enough_and_confirmed(client: TestClient, world: World, browser: Any,
                                                        new: str, confirm: str, field: str, message: str) -> None:
    signed_in(client)
    response = change_password(client, PASSWORD, new, confirm)
    assert response.status_code == 400
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', response.text)
    assert message in response.text
    assert sign_in(browser(), password=PASSWORD).status_code == 303


def test_password_change_signs_out_every_other_browser(client: TestClient, db: Database, world: World,
                                                       browser: Any) -> None:
    other = signed_in(browser(), "alice")
    bobs = signed_in(browser(), "bob")
    signed_in(client)
    response = change_password(client, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 303 and response.headers["location"] == "/account/password"
    assert "Your password was changed." in client.get("/account/password").text

    assert client.get("/account").status_code == 200  # this browser stays signed in
    assert other.get("/account").status_code == 303  # the other one is signed out
    assert bobs.get("/account").status_code == 200  # someone else's session is not touched
    assert sign_in(browser(), password=PASSWORD).status_code == 401
    assert sign_in(browser(), password=NEW_PASSWORD).status_code == 303
    stored = sql(db, "SELECT password_hash FROM users WHERE username = 'alice'")[0][0]
    assert stored.startswith("$argon2id$") and NEW_PASSWORD not in stored
    assert sql(db, "SELECT detail FROM audit_events WHERE event = 'password.changed'")
    assert "You changed your password" in text_of(client.get("/account/activity").text)


def test_password_change_needs_this_sessions_csrf(client: TestClient, world: World, browser: Any) -> None:
    signed_in(client)
    data = password_form(client)
    data.update({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})
    bobs = form_with(signed_in(browser(), "bob").get("/account/password").text, "/account/password")["csrf"]
    for csrf in ("", "forged", bobs):
        assert client.post("/account/password", data={**data, "csrf": csrf}).status_code == 403
    assert sign_in(browser(), password=PASSWORD).status_code == 303


def test_wrong_current_passwords_are_limited(client: TestClient, db: Database, world: World,
                                             browser: Any) -> None:
    signed_in(client)
    for _ in range(5):
        assert change_password(client, "guess", NEW_PASSWORD).status_code == 400
    # Even the right password is not checked any more for a while.
    for _ in range(3):
        response = change_password(client, PASSWORD, NEW_PASSWORD)
        assert response.status_code == 400 and "Too many wrong passwords" in response.text
    # One throttle for every password guess: the sign-in form at the guesser's address waits too,
    # the owner elsewhere signs in.
    assert sign_in(browser(), password=PASSWORD).status_code == 401
    assert sign_in(browser("198.51.100.7"), password=PASSWORD).status_code == 303
    assert sign_in(browser("198.51.100.7"), password=NEW_PASSWORD).status_code == 401  # nothing changed
    # Throttled attempts are counted, not written one by one.
    details = [d if isinstance(d, dict) else json.loads(d)
               for d, in sql(db, "SELECT detail FROM audit_events WHERE event = 'password.change_failed' ORDER BY id")]
    assert details == [*[{"reason": "wrong current password"}] * 5,
                       {"reason": "throttled", "rule": "pair", "throttled_attempts": 1}]


def test_guesses_at_the_sign_in_form_and_the_password_page_share_one_budget(
        client: TestClient, db: Database, world: World, browser: Any) -> None:
    signed_in(client)
    for _ in range(3):
        assert sign_in(browser(), password="guess").status_code == 401
    for _ in range(2):
        assert change_password(client, "guess", NEW_PASSWORD).status_code == 400
    response = change_password(client, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 400 and "Too many wrong passwords" in response.text


def test_the_right_current_password_gives_back_its_place_in_the_budget(
        client: TestClient, db: Database, world: World, browser: Any) -> None:
    signed_in(client)
    for _ in range(4):
        assert change_password(client, "guess", NEW_PASSWORD).status_code == 400
    # Right, but the new password is refused: the throttle forgets this address's failures.
    assert change_password(client, PASSWORD, "short").status_code == 400
    for _ in range(4):
        assert change_password(client, "guess", NEW_PASSWORD).status_code == 400
    assert change_password(client, PASSWORD, NEW_PASSWORD).status_code == 303


# --- Escaping: names come from apps and MCP servers, never trusted as HTML. ---

def test_names_from_apps_and_servers_are_escaped(client: TestClient, db: Database, world: World) -> None:
    evil = "<script>alert(1)</script>"
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name=evil, redirect_uris=[REDIRECT], scopes=["read:calendar"], resources=[RESOURCE]))
        assert created.client_secret
    connect(client, world, client_id=created.client.client_id, secret=created.client_secret, scope="read:calendar")
    tool_called(db, "alice", created.client.client_id, "<img src=x onerror=alert(2)>")
    pages = [client.get("/account"), confirmation_page(client, created.client.client_id),
             client.get("/account/activity")]
    disconnect(client, created.client.client_id)
    pages.append(client.get("/account"))  # the flash names the app
    for page in pages:
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
