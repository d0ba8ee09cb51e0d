"""The stand-alone sign-in page and what signed-in pages share: safe returns, CSRF, sessions."""

from __future__ import annotations

from starlette.testclient import TestClient

from authserver.db import Database
from tests.oauth_helpers import PASSWORD, count, parse_forms, seed, sql


def sign_in_form(client: TestClient, next_path: str = "/account"):  # type: ignore[no-untyped-def]
    page = client.get("/login", params={"next": next_path})
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    [form] = [f for f in parse_forms(page.text) if f.action == "/login"]
    return form


def test_sign_in_returns_to_the_local_page_it_was_sent_from(client: TestClient, db: Database) -> None:
    seed(db)
    form = sign_in_form(client, "/account/activity")
    response = client.post("/login", data={**dict(form.fields), "username": "alice", "password": PASSWORD})
    assert response.status_code == 303
    assert response.headers["location"] == "/account/activity"
    assert "authserver_session=" in response.headers["set-cookie"]
    assert "httponly" in response.headers["set-cookie"].lower()
    assert count(db, "login_sessions") == 1
    assert sql(db, "SELECT event, outcome FROM audit_events") == [("login.succeeded", "success")]
    # Signed in: the page sends the person on at once.
    assert client.get("/login", params={"next": "/account"}).headers["location"] == "/account"


def test_sign_in_never_returns_to_another_site(client: TestClient, db: Database) -> None:
    seed(db)
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example", "javascript:alert(1)"):
        form = sign_in_form(client, target)
        assert form.value("next") == "/account"
        data = {**dict(form.fields), "next": target, "username": "alice", "password": PASSWORD}
        response = client.post("/login", data=data)
        assert response.headers["location"] == "/account", target
        client.cookies.clear()


def test_sign_in_without_or_with_a_foreign_csrf_token_is_refused(client: TestClient, db: Database) -> None:
    seed(db)
    form = sign_in_form(client)
    good = {**dict(form.fields), "username": "alice", "password": PASSWORD}
    for csrf in ("", "forged", None):
        data = {k: v for k, v in good.items() if k != "csrf"} | ({"csrf": csrf} if csrf is not None else {})
        assert client.post("/login", data=data).status_code == 403
    # A token made for another browser does not work in this one.
    other = TestClient(client.app, base_url=str(client.base_url), follow_redirects=False)
    other_form = sign_in_form(other)
    assert client.post("/login", data={**good, "csrf": other_form.value("csrf")}).status_code == 403
    assert count(db, "login_sessions") == 0


def test_wrong_password_on_the_sign_in_page(client: TestClient, db: Database) -> None:
    seed(db)
    form = sign_in_form(client)
    response = client.post("/login", data={**dict(form.fields), "username": "alice", "password": "nope-nope"})
    assert response.status_code == 401
    assert "do not match" in response.text and 'value="alice"' in response.text
    assert count(db, "login_sessions") == 0
    assert sql(db, "SELECT event, outcome FROM audit_events") == [("login.failed", "failure")]


def test_a_forged_flash_cookie_is_ignored(client: TestClient, db: Database) -> None:
    seed(db)
    client.cookies.set("authserver_flash", "W1wic3VjY2Vzc1wiLCBcIm93bmVkXCJd.deadbeef")
    page = client.get("/login")
    assert page.status_code == 200 and "owned" not in page.text
