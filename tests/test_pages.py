"""The stand-alone sign-in page and what signed-in pages share: safe returns, CSRF, sessions; and
what every page says about whose server it is (display name, logo, favicon) and error pages'
details for developers, each attacked with HTML in what it shows."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.db import Database
from tests.admin_pages import make_user
from tests.admin_pages import sign_in as console_sign_in
from tests.conftest import ISSUER, make_settings
from tests.oauth_helpers import (
    LOOPBACK_REDIRECT,
    PASSWORD,
    authorize_params,
    consent_page,
    count,
    interaction_page,
    parse_forms,
    pkce_pair,
    run_flow,
    seed,
    sql,
)

STRICT_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              "frame-ancestors 'none'; base-uri 'none'")
HOSTILE_NAME = 'Acme <script>alert("name")</script> & Co'
ESCAPED_NAME = "Acme &lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt; &amp; Co"


@contextmanager
def app_client(db_url: str, db: Database, **settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(db_url, **settings), db=db), base_url=ISSUER,
                    follow_redirects=False) as client:
        yield client


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


# --- whose server this is: display name, logo and favicon on every page ------------------------


def assert_names_the_operator(page: Any, logo: str | None) -> None:
    assert page.status_code in (200, 400, 403, 404), page.text
    html = page.text
    assert ESCAPED_NAME in html and "<script>" not in html, html
    assert "<title>" in html and ESCAPED_NAME in html.split("<title>", 1)[1].split("</title>", 1)[0]
    assert '<link rel="icon" type="image/svg+xml" href="http://127.0.0.1:8000/static/favicon.svg">' in html
    if logo:
        assert f'<img class="logo" src="{logo}" alt=""' in html
    else:
        assert "<img" not in html
    assert page.headers["content-security-policy"] == STRICT_CSP


def test_every_page_names_the_operator_with_its_logo_and_the_favicon(db_url: str, db: Database) -> None:
    """Sign-in, consent, confirm, error, signed-out, account and console pages: one brand, escaped."""
    world = seed(db)
    make_user(db, "root", "admin")
    logo = "/static/favicon.svg"
    with app_client(db_url, db, display_name=HOSTILE_NAME, logo_url=logo) as client:
        params = authorize_params(world.public_id, pkce_pair()[1], redirect_uri=LOOPBACK_REDIRECT)
        assert_names_the_operator(interaction_page(client, params), logo)  # sign-in inside a flow
        assert_names_the_operator(consent_page(client, params), logo)
        run_flow(client, params)
        confirm = interaction_page(client, params)  # a loopback app, remembered: one click
        assert 'name="decision" value="allow"' in confirm.text and "Continue" in confirm.text
        assert_names_the_operator(confirm, logo)
        assert_names_the_operator(client.get("/authorize", params={"client_id": "nobody"}), logo)
        assert_names_the_operator(client.get("/account"), logo)
        assert_names_the_operator(client.get("/account/activity"), logo)
        [signout] = [f for f in parse_forms(client.get("/account").text) if f.action == "/logout"]
        assert_names_the_operator(client.post("/logout", data=dict(signout.fields)), logo)
        assert_names_the_operator(client.get("/login"), logo)
        assert console_sign_in(client, "root", next_path="/admin").status_code == 303
        for path in ("/admin", "/admin/clients", "/admin/audit"):
            assert_names_the_operator(client.get(path), logo)


def test_without_a_logo_the_pages_show_the_name_alone(db_url: str, db: Database) -> None:
    with app_client(db_url, db) as client:
        page = client.get("/login")
        assert '<a class="brand" href="/"><span>authserver</span></a>' in page.text
        assert "<img" not in page.text and page.headers["content-security-policy"] == STRICT_CSP


def test_an_https_logo_adds_exactly_its_origin_to_img_src(db_url: str, db: Database) -> None:
    seed(db)
    logo = "https://cdn.example.com:8443/brand/logo.svg?v=2&amp=1"
    with app_client(db_url, db, logo_url=logo) as client:
        page = client.get("/login")
        assert '<img class="logo" src="https://cdn.example.com:8443/brand/logo.svg?v=2&amp;amp=1" alt=""' in page.text
        csp = page.headers["content-security-policy"]
        assert csp == STRICT_CSP.replace("img-src 'self' data:", "img-src 'self' data: https://cdn.example.com:8443")
        # The rest of the policy is untouched, on every response (the hot lane's JSON too).
        assert client.get("/jwks.json").headers["content-security-policy"] == csp
        assert page.headers["referrer-policy"] == "no-referrer"


def test_favicon_is_ours_and_favicon_ico_points_at_it(db_url: str, db: Database) -> None:
    with app_client(db_url, db) as client:
        icon = client.get("/static/favicon.svg")
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
        assert icon.text.startswith("<svg") and "<script" not in icon.text
        ico = client.get("/favicon.ico")
        assert ico.status_code == 301 and ico.headers["location"] == "/static/favicon.svg"
    # Browsers ask at the host's root whatever the issuer's path; the file lives under it.
    with app_client(db_url, db, issuer="http://127.0.0.1:8000/tenant") as client:
        assert client.get("/favicon.ico").headers["location"] == "/tenant/static/favicon.svg"
        assert client.get("/tenant/static/favicon.svg").status_code == 200
        page = client.get("/tenant/login")
        assert 'href="http://127.0.0.1:8000/tenant/static/favicon.svg"' in page.text
        assert '<a class="brand" href="/tenant/">' in page.text


# --- error pages: what the developer needs, as text --------------------------------------------


def developer_facts(html: str) -> dict[str, str]:
    return dict(re.findall(r'<code id="error-([a-z-]+)">(.*?)</code>', html, re.S))


def assert_error_page_not_redirect(page: Any, db: Database, status: int = 400) -> None:
    assert page.status_code == status, page.text
    assert page.headers["content-type"].startswith("text/html") and "location" not in page.headers
    assert page.headers["content-security-policy"] == STRICT_CSP
    assert count(db, "authorization_requests") == 0 and count(db, "authorization_codes") == 0


def test_unknown_client_page_shows_the_client_id_escaped(client: TestClient, db: Database) -> None:
    seed(db)
    hostile = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    page = client.get("/authorize", params=authorize_params(hostile, pkce_pair()[1]))
    assert_error_page_not_redirect(page, db)
    assert "Unknown application" in page.text
    assert developer_facts(page.text) == {
        "client-id": "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"}
    assert "<script>" not in page.text and "onerror=alert(2)>" not in page.text
    assert "This sign-in service is run by authserver." in page.text
    assert "<code>http://127.0.0.1:8000</code>" in page.text  # which server answered


def test_rejected_redirect_uri_is_shown_as_text_and_never_followed(client: TestClient, db: Database) -> None:
    world = seed(db)
    rejected = 'https://evil.example/cb?x="><a href="https://evil.example/">click</a>'
    page = client.get("/authorize", params=authorize_params(world.public_id, pkce_pair()[1], redirect_uri=rejected))
    assert_error_page_not_redirect(page, db)
    assert "Invalid redirect" in page.text
    assert developer_facts(page.text) == {
        "client-id": world.public_id,
        "redirect-uri": "https://evil.example/cb?x=&#34;&gt;&lt;a href=&#34;https://evil.example/&#34;&gt;"
                        "click&lt;/a&gt;"}
    # Every link stays here (the language switch comes back to this very request).
    targets = re.findall(r'(?:href|src|action)="([^"]*)"', page.text)
    assert targets and all(t.startswith(("/", f"{ISSUER}/")) and not t.startswith("//") for t in targets), targets
    # What the server knows about the client stays private: no registered redirect URI is listed.
    assert "app.example.com" not in page.text


def test_direction_changing_characters_are_written_out(client: TestClient, db: Database) -> None:
    seed(db)
    page = client.get("/authorize", params=authorize_params("app\u202egnp.exe\u200b", pkce_pair()[1]))
    assert_error_page_not_redirect(page, db)
    assert developer_facts(page.text) == {"client-id": "app\\u202egnp.exe\\u200b"}
    assert "\u202e" not in page.text


def test_a_missing_redirect_uri_names_the_client(client: TestClient, db: Database) -> None:
    world = seed(db)  # two redirect URIs registered: the request must say which
    page = client.get("/authorize", params=authorize_params(world.public_id, pkce_pair()[1], redirect_uri="<omit>"))
    assert_error_page_not_redirect(page, db)
    assert developer_facts(page.text) == {"client-id": world.public_id}


def test_error_page_details_in_korean(client: TestClient, db: Database) -> None:
    world = seed(db)
    client.cookies.set("authserver_lang", "ko")
    page = client.get("/authorize", params=authorize_params(world.public_id, pkce_pair()[1],
                                                            redirect_uri="https://evil.example/"))
    assert_error_page_not_redirect(page, db)
    assert "요청한 돌아갈 주소 (redirect_uri)" in page.text and "앱 (client_id)" in page.text
    assert "이 로그인 서비스는 authserver에서 운영합니다." in page.text


# --- the home page --------------------------------------------------------------------------------


def links(html: str) -> list[str]:
    return [h.replace("&amp;", "&") for h in re.findall(r'<a [^>]*href="([^"]*)"', html)]


def test_root_names_the_server_and_offers_sign_in_and_the_account(db_url: str, db: Database) -> None:
    seed(db)
    with app_client(db_url, db, display_name=HOSTILE_NAME) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["content-security-policy"] == STRICT_CSP
        assert f"<h1>{ESCAPED_NAME}</h1>" in page.text and "<script>" not in page.text
        assert {"/login", "/account", "/.well-known/oauth-authorization-server"} <= set(links(page.text))
        assert 'action="/logout"' not in page.text  # nobody to sign out
        # The sign-in link leads to the account page.
        form = sign_in_form(client, "/account")
        done = client.post("/login", data={**dict(form.fields), "username": "alice", "password": PASSWORD})
        assert done.headers["location"] == "/account"
        assert count(db, "login_sessions") == 1
        signed_in = client.get("/")
        assert "You are signed in as <strong>alice</strong>." in signed_in.text
        assert "/account" in links(signed_in.text) and "/admin" not in links(signed_in.text)
        [signout] = [f for f in parse_forms(signed_in.text) if f.action == "/logout"]
        assert client.post("/logout", data=dict(signout.fields)).status_code == 200
        assert count(db, "login_sessions") == 0


def test_root_links_the_console_for_those_who_may_read_it(db_url: str, db: Database) -> None:
    make_user(db, "root", "admin")
    make_user(db, "reader", "auditor")
    with app_client(db_url, db) as client:
        for username in ("root", "reader"):
            assert console_sign_in(client, username, next_path="/admin").status_code == 303
            assert "/admin" in links(client.get("/").text), username
            client.cookies.clear()


def test_root_under_an_issuer_path_and_in_korean(db_url: str, db: Database) -> None:
    with app_client(db_url, db, issuer="http://127.0.0.1:8000/tenant") as client:
        for path in ("/tenant/", "/tenant"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert {"/tenant/login", "/tenant/account", "/.well-known/oauth-authorization-server/tenant"} <= set(
                links(page.text))
        assert client.get("/").status_code == 404  # the host's root is not ours to answer
        client.cookies.set("authserver_lang", "ko")
        korean = client.get("/tenant/")
        assert '<html lang="ko">' in korean.text and "<strong>authserver</strong>의 로그인 서비스입니다." in korean.text


# --- signing out ------------------------------------------------------------------------------------


def test_get_logout_asks_with_a_csrf_protected_button_and_signs_nobody_out(db_url: str, db: Database) -> None:
    seed(db)
    with app_client(db_url, db, display_name=HOSTILE_NAME) as client:
        form = sign_in_form(client)
        client.post("/login", data={**dict(form.fields), "username": "alice", "password": PASSWORD})
        page = client.get("/logout")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store" and page.headers["content-security-policy"] == STRICT_CSP
        assert "Sign out?" in page.text and "<strong>alice</strong>" in page.text and ESCAPED_NAME in page.text
        assert count(db, "login_sessions") == 1  # a GET (a link from anywhere) signs nobody out
        [button] = [f for f in parse_forms(page.text) if f.action == "/logout"]
        assert button.value("csrf") and re.search(r'<form method="post" action="/logout">', page.text)
        # Without this session's token the POST is refused, and the session lives on.
        for forged in ({}, {"csrf": "forged"}):
            refused = client.post("/logout", data=forged)
            assert refused.status_code == 403 and "Form expired" in refused.text
        assert count(db, "login_sessions") == 1
        done = client.post("/logout", data=dict(button.fields))
        assert done.status_code == 200 and done.headers["content-type"].startswith("text/html")
        assert "You are signed out." in done.text
        assert "/login" in links(done.text)  # Sign in again
        assert 'authserver_session=""' in done.headers["set-cookie"] or "Max-Age=0" in done.headers["set-cookie"]
        assert count(db, "login_sessions") == 0
        assert sql(db, "SELECT event FROM audit_events ORDER BY id") == [("login.succeeded",), ("logout",)]
        # Signed out: the page says so and offers to sign in again.
        again = client.get("/logout")
        assert again.status_code == 200 and "You are not signed in" in again.text
        assert "/login" in links(again.text) and 'action="/logout"' not in again.text


def test_sign_out_pages_in_korean(client: TestClient, db: Database) -> None:
    seed(db)
    client.cookies.set("authserver_lang", "ko")
    assert "로그인되어 있지 않습니다" in client.get("/logout").text
    form = sign_in_form(client)
    client.post("/login", data={**dict(form.fields), "username": "alice", "password": PASSWORD})
    page = client.get("/logout")
    assert "로그아웃할까요?" in page.text and "<strong>alice</strong>(으)로 로그인되어 있습니다." in page.text
    [button] = [f for f in parse_forms(page.text) if f.action == "/logout"]
    assert "로그아웃되었습니다." in client.post("/logout", data=dict(button.fields)).text
