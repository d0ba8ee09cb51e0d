"""Console: users (create, roles, disable/enable, password reset, the last-admin rule) and signing keys."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from authserver.db import Database
from authserver.errors import AppError
from authserver.users import repository as users
from tests.admin_pages import browser, csrf, make_user, sign_in
from tests.oauth_helpers import (
    PASSWORD,
    authorize_params,
    count,
    exchange,
    parse_forms,
    pkce_pair,
    query,
    run_flow,
    seed,
    sql,
    user_id,
)

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def admin(client: TestClient, db: Database) -> TestClient:
    seed(db)
    make_user(db, "root", "admin")
    assert sign_in(client, "root").status_code == 303
    return client


def user_row(db: Database, username: str) -> tuple[Any, ...]:
    return sql(db, "SELECT roles, disabled, password_hash FROM users WHERE username = :u", u=username)[0]


def sessions_of(db: Database, username: str) -> int:
    return sql(db, "SELECT COUNT(*) FROM login_sessions s JOIN users u ON u.id = s.user_id WHERE u.username = :u",
               u=username)[0][0]


def test_anonymous_and_plain_users_are_kept_out(client: TestClient, db: Database) -> None:
    seed(db)
    response = client.get("/admin/users")
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/admin/users"
    assert client.get("/admin/keys").headers["location"] == "/login?next=/admin/keys"
    assert sign_in(client, "alice").status_code == 303
    assert client.get("/admin/users").status_code == 403
    assert client.get("/admin/keys").status_code == 403


def test_auditor_reads_every_page_and_every_post_is_refused(client: TestClient, db: Database) -> None:
    seed(db)
    make_user(db, "root", "admin")
    make_user(db, "eve", "auditor")
    alice = user_id(db, "alice")
    assert sign_in(client, "eve").status_code == 303
    for path in ("/admin/users", "/admin/users/new", f"/admin/users/{alice}", f"/admin/users/{alice}/disable",
                 "/admin/keys", "/admin/keys/rotate"):
        assert client.get(path).status_code == 200, path
    token = csrf(client, f"/admin/users/{alice}")
    before = sql(db, "SELECT username, roles, disabled, password_hash FROM users ORDER BY username")
    keys_before = count(db, "signing_keys")
    for path, data in [("/admin/users/new", {"username": "mallory", "password": PASSWORD, "role": "admin"}),
                       (f"/admin/users/{alice}/roles", {"role": "admin"}),
                       (f"/admin/users/{alice}/password", {"password": NEW_PASSWORD}),
                       (f"/admin/users/{alice}/disable", {}), (f"/admin/users/{alice}/enable", {}),
                       ("/admin/keys/rotate", {})]:
        assert client.post(path, data={"csrf": token, **data}).status_code == 403, path
    assert sql(db, "SELECT username, roles, disabled, password_hash FROM users ORDER BY username") == before
    assert count(db, "signing_keys") == keys_before


def test_users_are_listed_with_roles_and_last_sign_in(admin: TestClient, db: Database) -> None:
    page = admin.get("/admin/users")
    assert page.status_code == 200
    assert "alice" in page.text and "root" in page.text
    assert page.text.count("never") >= 2  # alice and bob never signed in; root just did
    assert "UTC</time>" in page.text


def test_create_user_then_they_can_sign_in(admin: TestClient, db: Database, app: Any) -> None:
    token = csrf(admin, "/admin/users/new")
    response = admin.post("/admin/users/new", data={"csrf": token, "username": "carol", "password": PASSWORD,
                                                    "role": ["user", "auditor"]})
    assert response.status_code == 303
    assert "User carol created." in admin.get(response.headers["location"]).text
    assert sql(db, "SELECT roles FROM users WHERE username = 'carol'")[0][0] in ('["auditor", "user"]',
                                                                                 ["auditor", "user"])
    with browser(app) as other:
        assert sign_in(other, "carol").status_code == 303
    assert sql(db, "SELECT detail FROM audit_events WHERE event = 'user.created'")


def test_create_user_errors_are_next_to_the_field_and_keep_the_username(admin: TestClient, db: Database) -> None:
    token = csrf(admin, "/admin/users/new")
    response = admin.post("/admin/users/new", data={"csrf": token, "username": "carol", "password": "short",
                                                    "role": "user"})
    assert response.status_code == 400
    assert 'id="e-password"' in response.text and "at least 8 characters" in response.text
    assert 'value="carol"' in response.text and "short" not in response.text.split('id="f-password"')[1][:80]
    response = admin.post("/admin/users/new", data={"csrf": token, "username": "alice", "password": PASSWORD,
                                                    "role": "user"})
    assert response.status_code == 400 and 'id="e-username"' in response.text and "already exists" in response.text
    response = admin.post("/admin/users/new", data={"csrf": token, "username": "dave", "password": PASSWORD})
    assert response.status_code == 400 and 'id="e-roles"' in response.text
    assert count(db, "users") == 3


def test_missing_or_foreign_csrf_is_refused(admin: TestClient, db: Database, app: Any) -> None:
    make_user(db, "root2", "admin")
    alice = user_id(db, "alice")
    with browser(app, "root2") as other:
        foreign = csrf(other, "/admin/users/new")
    for data in ({}, {"csrf": foreign}):
        assert admin.post(f"/admin/users/{alice}/disable", data=data).status_code == 403
        assert admin.post("/admin/keys/rotate", data=data).status_code == 403
    assert not user_row(db, "alice")[1] and count(db, "signing_keys") == 1


def test_disabling_ends_their_sessions_and_refresh(admin: TestClient, db: Database, app: Any) -> None:
    world_client = seed_refresh(app, db)
    make_user(db, "eve", "auditor")
    with browser(app, "eve") as eve:
        assert eve.get("/admin/users").status_code == 200
        eve_id = user_id(db, "eve")
        page = admin.get(f"/admin/users/{eve_id}/disable")
        assert "signed out of every browser" in page.text
        form = next(f for f in parse_forms(page.text) if f.action.endswith("/disable"))
        response = admin.post(form.action, data=dict(form.fields))
        assert response.status_code == 303
        assert "eve is disabled and signed out." in admin.get(response.headers["location"]).text
        assert sessions_of(db, "eve") == 0
        response = eve.get("/admin/users")
        assert response.status_code == 303 and response.headers["location"].startswith("/login")
        assert sign_in(eve, "eve").status_code == 401

    # A person with a refresh token: disabled, the refresh fails.
    client_id, refresh_token = world_client
    alice = user_id(db, "alice")
    admin.post(f"/admin/users/{alice}/disable", data={"csrf": csrf(admin, f"/admin/users/{alice}")})
    assert sessions_of(db, "alice") == 0
    with browser(app) as rp:
        response = rp.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                           "client_id": client_id})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"

    response = admin.post(f"/admin/users/{eve_id}/enable", data={"csrf": csrf(admin, f"/admin/users/{eve_id}")})
    assert response.status_code == 303 and not user_row(db, "eve")[1]
    events = [r[0] for r in sql(db, "SELECT event FROM audit_events WHERE event LIKE 'user.%' ORDER BY id")]
    assert events == ["user.disabled", "user.disabled", "user.enabled"]


def seed_refresh(app: Any, db: Database) -> tuple[str, str]:
    """alice connects the public client (offline access); its client_id and refresh token."""
    public_id = sql(db, "SELECT client_id FROM clients WHERE name = 'Desktop Agent'")[0][0]
    verifier, challenge = pkce_pair()
    with browser(app) as person:
        location = run_flow(person, authorize_params(public_id, challenge))
        response = exchange(person, query(location)["code"], verifier, public_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" in body
    return public_id, body["refresh_token"]


def test_password_reset_ends_sessions_old_fails_new_works(admin: TestClient, db: Database, app: Any) -> None:
    with browser(app, "alice"):
        pass
    assert sessions_of(db, "alice") == 1
    alice = user_id(db, "alice")
    token = csrf(admin, f"/admin/users/{alice}")
    response = admin.post(f"/admin/users/{alice}/password", data={"csrf": token, "password": "short"})
    assert response.status_code == 400 and 'id="e-password"' in response.text
    response = admin.post(f"/admin/users/{alice}/password", data={"csrf": token, "password": NEW_PASSWORD})
    assert response.status_code == 303
    assert sessions_of(db, "alice") == 0
    with browser(app) as other:
        assert sign_in(other, "alice", PASSWORD).status_code == 401
        assert sign_in(other, "alice", NEW_PASSWORD).status_code == 303
    assert sql(db, "SELECT COUNT(*) FROM audit_events WHERE event = 'user.password_reset'")[0][0] == 1


def test_roles_are_changed(admin: TestClient, db: Database) -> None:
    bob = user_id(db, "bob")
    response = admin.post(f"/admin/users/{bob}/roles", data={"csrf": csrf(admin, f"/admin/users/{bob}"),
                                                             "role": ["auditor", "user"]})
    assert response.status_code == 303
    assert "Roles of bob saved." in admin.get(response.headers["location"]).text
    assert user_row(db, "bob")[0] in ('["auditor", "user"]', ["auditor", "user"])


def test_the_last_admin_cannot_be_disabled_or_unadmined(admin: TestClient, db: Database, app: Any) -> None:
    root = user_id(db, "root")
    token = csrf(admin, f"/admin/users/{root}")
    before = user_row(db, "root")
    response = admin.post(f"/admin/users/{root}/disable", data={"csrf": token})
    assert response.status_code == 400 and "last enabled admin" in response.text
    response = admin.post(f"/admin/users/{root}/roles", data={"csrf": token, "role": "user"})
    assert response.status_code == 400 and "last enabled admin" in response.text
    assert 'id="e-roles"' in response.text
    assert user_row(db, "root") == before and sessions_of(db, "root") == 1

    # A disabled admin does not count: still the last enabled one.
    make_user(db, "root2", "admin")
    with db.session() as s:
        users.set_disabled(s, "root2")
    assert admin.post(f"/admin/users/{root}/disable", data={"csrf": token}).status_code == 400
    # The rule is the repository's, so the CLI keeps it too.
    with pytest.raises(AppError, match="last enabled admin"), db.session() as s:
        users.set_disabled(s, "root")

    # With a second enabled admin, yourself included, it is allowed.
    with db.session() as s:
        users.set_disabled(s, "root2", False)
    response = admin.post(f"/admin/users/{root}/roles", data={"csrf": token, "role": ["admin", "auditor"]})
    assert response.status_code == 303
    response = admin.post(f"/admin/users/{root}/disable", data={"csrf": token})
    assert response.status_code == 303 and bool(user_row(db, "root")[1])


def test_rotating_the_key_publishes_both_and_signs_with_the_new_one(admin: TestClient, db: Database,
                                                                     app: Any) -> None:
    old = [k["kid"] for k in admin.get("/jwks.json").json()["keys"]]
    assert len(old) == 1
    page = admin.get("/admin/keys/rotate")
    assert "stays published in /jwks.json until" in page.text
    form = next(f for f in parse_forms(page.text) if f.action.endswith("/admin/keys/rotate"))
    response = admin.post(form.action, data=dict(form.fields))
    assert response.status_code == 303
    listing = admin.get("/admin/keys").text
    assert "is active" in listing and "published until" in listing
    kids = [k["kid"] for k in admin.get("/jwks.json").json()["keys"]]
    assert len(kids) == 2 and old[0] in kids
    new_kid = next(k for k in kids if k != old[0])
    event = sql(db, "SELECT detail, actor FROM audit_events WHERE event = 'key.rotated'")
    assert len(event) == 1 and new_kid in str(event[0][0]) and event[0][1] == user_id(db, "root")
    public_id = sql(db, "SELECT client_id FROM clients WHERE name = 'Desktop Agent'")[0][0]
    verifier, challenge = pkce_pair()
    with browser(app) as person:
        location = run_flow(person, authorize_params(public_id, challenge))
        token = exchange(person, query(location)["code"], verifier, public_id).json()["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == new_kid
