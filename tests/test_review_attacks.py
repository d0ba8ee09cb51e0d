"""Attacks from the security review of the console, account pages and token changes.

Each test here failed before the fix it names.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from authserver.db import Database, utcnow
from authserver.errors import AppError
from authserver.grants import service as grants
from authserver.tokens import codes, lookup
from authserver.users import repository as users
from tests.admin_pages import browser, csrf, make_user
from tests.oauth_helpers import (
    PASSWORD,
    RESOURCE,
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


def test_two_admins_demoting_each_other_at_once_leave_one_admin(db: Database, backend: str) -> None:
    """Last-admin rule under concurrency (PostgreSQL, READ COMMITTED).

    Admin B's request has already loaded B (the signed-in person) when admin A's request, which
    demotes B, commits. B's request then demotes A: the check's FOR UPDATE query returns B's new
    row, but without ``populate_existing`` the session's identity map keeps B's stale roles, so B
    still counted as "another admin" and both demotions succeeded: nobody could run the console.
    """
    if backend == "sqlite":
        pytest.skip("SQLite write transactions start with BEGIN IMMEDIATE: the two cannot interleave")
    a = uuid.UUID(make_user(db, "alice", "admin"))
    b = uuid.UUID(make_user(db, "bob", "admin"))
    with db.session() as bobs:
        acting = users.require(bobs, b)  # B's request: who is signed in (pages.require_signed_in)
        target = users.require(bobs, a)
        assert acting.is_admin and target.is_admin
        with db.session() as alices:  # A demotes B, committed while B's request is under way
            users.set_roles(alices, users.require(alices, b), ["user"])
        with pytest.raises(AppError, match="last enabled admin"):
            users.set_roles(bobs, target, ["user"])
    with db.read_session() as s:
        assert [u.username for u in users.list_users(s) if u.is_admin and not u.disabled] == ["alice"]


def test_disabling_an_admin_demoted_meanwhile_keeps_one_admin(db: Database, backend: str) -> None:
    """The same race through disable: B's request disables A while A's request demotes B."""
    if backend == "sqlite":
        pytest.skip("SQLite write transactions start with BEGIN IMMEDIATE: the two cannot interleave")
    a = uuid.UUID(make_user(db, "alice", "admin"))
    b = uuid.UUID(make_user(db, "bob", "admin"))
    with db.session() as bobs:
        acting = users.require(bobs, b)  # held, as the request holds who is signed in
        target = users.require(bobs, a)
        with db.session() as alices:
            users.set_roles(alices, users.require(alices, b), ["user"])
        with pytest.raises(AppError, match="last enabled admin"):
            users.set_user_disabled(bobs, target, True)
        assert not acting.is_admin  # the lock's rows replaced the stale one
    with db.read_session() as s:
        assert [u.username for u in users.list_users(s) if u.is_admin and not u.disabled] == ["alice"]


# --- A code exchange racing a disconnect -------------------------------------------------------

def test_a_code_exchange_racing_a_disconnect_leaves_the_app_nothing(
        client: TestClient, app: FastAPI, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exchange read the consent's cut-off before the disconnect committed, then issued tokens.

    Before the fix the consent row was read without a lock: on PostgreSQL a disconnect could run
    to completion between the exchange's check and its commit, and find neither the refresh
    family nor the access token the exchange was about to commit. The person saw the app
    disconnected while it kept a live refresh token and an access token that introspected active.
    """
    world = seed(db)
    verifier, challenge = pkce_pair()
    first = run_flow(client, authorize_params(world.confidential_id, challenge))
    assert exchange(client, query(first)["code"], verifier, world.confidential_id,
                    secret=world.confidential_secret).status_code == 200
    verifier, challenge = pkce_pair()
    code = query(run_flow(client, authorize_params(world.confidential_id, challenge)))["code"]  # silent
    alice = uuid.UUID(user_id(db, "alice"))

    checked, go = threading.Event(), threading.Event()
    real_consume = codes.consume

    def paused_consume(*args: Any, **kwargs: Any) -> bool:
        checked.set()  # the exchange has passed its disconnect check
        assert go.wait(10)
        return real_consume(*args, **kwargs)

    monkeypatch.setattr(codes, "consume", paused_consume)
    answers: list[Any] = []
    exchanging = threading.Thread(target=lambda: answers.append(exchange(
        client, code, verifier, world.confidential_id, secret=world.confidential_secret)))
    exchanging.start()
    assert checked.wait(10)

    def disconnect() -> None:
        with db.session() as s:
            grants.disconnect(s, alice, world.confidential_id, RESOURCE, utcnow(), actor=str(alice), ip=None)

    disconnecting = threading.Thread(target=disconnect)
    disconnecting.start()
    disconnecting.join(1.0)  # with the fix it waits for the exchange's lock on the consent
    go.set()
    exchanging.join(10)
    disconnecting.join(10)
    assert not exchanging.is_alive() and not disconnecting.is_alive()
    monkeypatch.setattr(codes, "consume", real_consume)

    [response] = answers
    live = sql(db, "SELECT COUNT(*) FROM refresh_tokens WHERE revoked_at IS NULL")
    assert live == [(0,)], "the disconnected app kept a refresh token"
    if response.status_code == 200:
        with db.session() as s:
            info = lookup.access_token(s, app.state.services, response.json()["access_token"])
            assert info is not None and info.revoked, "the disconnected app kept an active access token"


def cookies_of(app: FastAPI) -> Any:
    return app.state.services.cookies


# --- Every console and account POST: role and CSRF purpose (held) ------------------------------

def _post_routes(app: FastAPI, prefix: str) -> list[str]:
    paths = app.openapi()["paths"]
    return sorted(p for p, methods in paths.items() if p.startswith(prefix) and "post" in methods)


def _fill(path: str, user: str) -> str:
    return path.replace("{user_id}", user).replace("{token_id}", str(uuid.uuid4()))


def _state(db: Database) -> dict[str, list[str]]:
    tables = ("clients", "consents", "refresh_tokens", "authorization_codes", "users", "login_sessions",
              "scopes", "resources", "signing_keys", "server_settings", "initial_access_tokens", "totp_factors",
              "recovery_codes")
    return {t: sorted(map(repr, sql(db, f"SELECT * FROM {t}"))) for t in tables}  # type: ignore[misc]


@pytest.mark.filterwarnings("ignore:Duplicate Operation ID")
def test_no_console_post_obeys_an_auditor_a_user_or_a_token_of_another_purpose(app: FastAPI, db: Database) -> None:
    world = seed(db)
    admin_id = make_user(db, "root", "admin")
    make_user(db, "eve", "auditor")
    make_user(db, "mallory", "user")
    routes = _post_routes(app, "/admin")
    assert len(routes) >= 20, routes
    fields = {"client_id": world.confidential_id, "name": "read:calendar", "uri": RESOURCE, "role": "user",
              "mode": "off", "password": "another long password", "label": "x", "description": "d"}
    with browser(app, "eve") as eve, browser(app, "root") as root, browser(app, "mallory") as mallory:
        eve_token = csrf(eve, "/admin/scopes/edit?name=read:calendar")
        root_logout = cookies_of(app).csrf_token("logout", root.cookies.get("authserver_session") or "")
        root_flash = cookies_of(app).csrf_token("flash", root.cookies.get("authserver_session") or "")
        mallory_page = csrf(mallory, "/account/password")
        before = _state(db)
        for path in routes:
            target = _fill(path, admin_id) + f"?client_id={world.confidential_id}"
            for who, token in ((eve, eve_token), (mallory, mallory_page), (root, root_logout), (root, root_flash),
                               (root, eve_token), (root, "")):
                response = who.post(target, data={**fields, "csrf": token})
                assert response.status_code == 403, (path, response.status_code, response.text[:300])
        assert _state(db) == before


@pytest.mark.filterwarnings("ignore:Duplicate Operation ID")
def test_no_account_post_obeys_a_token_of_another_purpose_or_session(app: FastAPI, db: Database) -> None:
    seed(db)
    routes = _post_routes(app, "/account")
    assert routes == ["/account/disconnect", "/account/password", "/account/two-step/begin",
                      "/account/two-step/confirm", "/account/two-step/disable", "/account/two-step/recovery-codes"]
    with browser(app, "alice") as alice, browser(app, "bob") as bob:
        value = alice.cookies.get("authserver_session") or ""
        tokens = [cookies_of(app).csrf_token("logout", value), cookies_of(app).csrf_token("signin", value),
                  csrf(bob, "/account/password"), ""]
        before = _state(db)
        for path in routes:
            for token in tokens:
                response = alice.post(path, data={"csrf": token, "current_password": PASSWORD,
                                                  "new_password": "a brand new password",
                                                  "confirm_password": "a brand new password",
                                                  "credential": PASSWORD, "code": "123456"})
                assert response.status_code == 403, (path, response.text[:300])
        assert _state(db) == before


# --- Open redirects through next= (held) -------------------------------------------------------

HOSTILE_NEXT = ["//evil.example", "/\\evil.example", "/\\/evil.example", "///evil.example", "/\t/evil.example",
                "/\n/evil.example", "https://evil.example/", "http:evil.example", "/%0d%0aSet-Cookie:x=1",
                "\\\\evil.example", " /account", "/ /evil.example", "javascript:alert(1)", "", "account"]


def _leaves_site(location: str) -> bool:
    from urllib.parse import urljoin, urlsplit
    resolved = urljoin("http://127.0.0.1:8000/login", location.replace("\\", "/"))
    return urlsplit(resolved).netloc != "127.0.0.1:8000" or "\r" in location or "\n" in location


@pytest.mark.parametrize("hostile", HOSTILE_NEXT)
def test_language_switch_and_sign_in_stay_on_this_site(client: TestClient, db: Database, hostile: str) -> None:
    seed(db)
    for response in (client.get("/language", params={"lang": "ko", "next": hostile}),
                     client.get("/language", params={"next": hostile})):
        assert response.status_code == 303 and not _leaves_site(response.headers["location"]), response.headers
    page = client.get("/login", params={"next": hostile})
    form = next(f for f in parse_forms(page.text) if f.action.endswith("/login"))
    response = client.post(form.action, data={**dict(form.fields), "next": hostile, "username": "alice",
                                              "password": PASSWORD})
    if "\t" in hostile or "\n" in hostile:
        # A control character makes the whole form malformed: no sign-in, no redirect at all.
        assert response.status_code == 401 and "location" not in response.headers
        return
    assert response.status_code == 303 and not _leaves_site(response.headers["location"]), response.headers
    again = client.get("/login", params={"next": hostile})  # signed in: straight back
    assert again.status_code == 303 and not _leaves_site(again.headers["location"]), again.headers


# --- Markup through translated sentences (held) ------------------------------------------------

def test_korean_pages_escape_names_filled_into_translated_sentences(client: TestClient, db: Database) -> None:
    """``{% trans %}`` blocks and ``_(id, **values)`` fill ``%(x)s`` into a Markup catalog string:
    the values must still be escaped, in the Korean catalog as in English."""
    from authserver.audit.log import record
    from authserver.clients import repository as clients
    from tests.oauth_helpers import REDIRECT
    seed(db)
    evil = "<script>alert(1)</script>"
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name=evil, redirect_uris=[REDIRECT], scopes=["read:calendar"], resources=[RESOURCE]))
    client.cookies.set("authserver_lang", "ko")
    _, challenge = pkce_pair()
    start = client.get("/authorize", params=authorize_params(created.client.client_id, challenge))
    page = client.get(start.headers["location"])
    assert 'lang="ko"' in page.text
    consent = None
    for _ in range(2):
        if 'name="password"' in page.text:
            form = next(f for f in parse_forms(page.text) if "login" in f.action)
            page = client.get(client.post(form.action, data={**dict(form.fields), "username": "alice",
                                                             "password": PASSWORD}).headers["location"])
        else:
            consent = page
    assert consent is not None and consent.status_code == 200
    alice = user_id(db, "alice")
    with db.session() as s:
        record(s, "tool.called", actor=alice, client_id=created.client.client_id, tool="<img src=x onerror=1>",
               tool_outcome="success", resource=RESOURCE)
    run_flow(client, authorize_params(created.client.client_id, challenge))
    for shown in (consent, client.get("/account"), client.get("/account/activity")):
        assert shown.status_code == 200 and 'lang="ko"' in shown.text
        assert "<script>alert" not in shown.text and "<img src=x" not in shown.text
    assert "&lt;script&gt;" in consent.text


# --- Clean-up preview parameters ----------------------------------------------------------------

@pytest.mark.parametrize("as_of", ["²", "٣", "9" * 5000])
def test_cleanup_preview_with_a_non_ascii_or_huge_as_of_is_no_server_error(app: FastAPI, db: Database,
                                                                           as_of: str) -> None:
    """``str.isdigit`` is true for "²" (int() refuses it) and for 5000 digits (past int()'s limit): 500s."""
    make_user(db, "eve", "auditor")
    with browser(app, "eve") as eve:
        response = eve.get("/admin/clients/cleanup", params={"age": "1d", "as_of": as_of})
    assert response.status_code == 200, response.text[:300]
