"""The console's client pages: who may see and change them, and what each change really does."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import timedelta
from html import unescape
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from authserver.clients import repository as clients
from authserver.clients.models import Client
from authserver.db import Database, utcnow
from authserver.tokens import refresh
from authserver.tokens.refresh import RefreshGrant
from tests.admin_pages import browser, csrf, make_user, snapshot
from tests.oauth_helpers import (
    REDIRECT,
    RESOURCE,
    World,
    authorize_params,
    count,
    exchange,
    execute,
    pkce_pair,
    query,
    run_flow,
    seed,
    sql,
)


@pytest.fixture
def world(db: Database) -> World:
    world = seed(db)
    make_user(db, "root", "admin")
    make_user(db, "watcher", "auditor")
    return world


@pytest.fixture
def admin(app: FastAPI, world: World):  # type: ignore[no-untyped-def]
    with browser(app, "root") as b:
        yield b


def url(action: str, client_id: str) -> str:
    return f"/admin/clients/{action}?{urlencode({'client_id': client_id})}"


def secret_on(page_html: str) -> str:
    match = re.search(r'<p class="secret" id="client-secret">([^<]+)</p>', page_html)
    assert match, page_html
    return unescape(match.group(1))


def create_form(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {"name": "Reporting job", "redirect_uris": "", "grant_type": ["client_credentials"],
                               "auth_method": "client_secret_basic", "scope": ["read:calendar"],
                               "resource": [RESOURCE]}
    data.update(overrides)
    return data


def create(admin: TestClient, **overrides: object):  # type: ignore[no-untyped-def]
    data = create_form(**overrides)
    data["csrf"] = csrf(admin, "/admin/clients/new")
    return admin.post("/admin/clients", data=data)


def created_id(db: Database, name: str) -> str:
    ((client_id,),) = sql(db, "SELECT client_id FROM clients WHERE name = :name", name=name)
    return str(client_id)


def client_credentials(client: TestClient, client_id: str, secret: str):  # type: ignore[no-untyped-def]
    return client.post("/token", data={"grant_type": "client_credentials", "resource": RESOURCE,
                                       "scope": "read:calendar"}, auth=(client_id, secret))


def post(b: TestClient, path: str, csrf_page: str | None = None, **data: object):  # type: ignore[no-untyped-def]
    return b.post(path, data={"csrf": csrf(b, csrf_page or path), **data})


def audit_rows(db: Database, event: str) -> list[tuple]:  # type: ignore[type-arg]
    return sql(db, "SELECT actor, client_id, outcome FROM audit_events WHERE event = :e ORDER BY id", e=event)


def actor_of_root(db: Database) -> str:
    with db.session() as s:
        from authserver.users import repository as users
        user = users.get_by_username(s, "root")
        assert user
        return str(user.id)


# --- who may see and change ----------------------------------------------------------------

PAGES = ["/admin", "/admin/clients", "/admin/clients/new", "/admin/clients/cleanup", "/admin/audit",
         "/admin/audit/export"]


def client_pages(world: World) -> list[str]:
    return [*PAGES, *(url(a, world.confidential_id) for a in ("detail", "edit", "rotate", "disable", "delete"))]


def test_anonymous_visitor_is_sent_to_sign_in_and_back(app: FastAPI, world: World) -> None:
    with browser(app) as anonymous:
        for path in client_pages(world):
            response = anonymous.get(path)
            assert response.status_code == 303, path
            assert query(response.headers["location"]) == {"next": path}
            assert response.headers["location"].startswith("/login?")


def test_plain_user_is_refused_every_page_and_change(app: FastAPI, db: Database, world: World) -> None:
    with browser(app, "alice") as alice:
        before = snapshot(db)  # after signing in, which is itself an event
        for path in client_pages(world):
            assert alice.get(path).status_code == 403, path
        for path in ["/admin/clients", url("edit", world.public_id), url("delete", world.public_id),
                     url("disable", world.public_id), url("enable", world.public_id), url("rotate", world.public_id),
                     "/admin/clients/cleanup"]:
            assert alice.post(path, data=create_form()).status_code == 403, path
    assert snapshot(db) == before


def test_auditor_reads_every_page_but_every_change_is_refused(app: FastAPI, db: Database, world: World) -> None:
    with db.session() as s:
        s.add(Client(client_id="stale-dynamic", name="Stale", kind="dynamic", created_at=utcnow() - timedelta(days=3)))
    with browser(app, "watcher") as watcher:
        before = snapshot(db)
        for path in client_pages(world):
            page = watcher.get(path)
            assert page.status_code == 200, path
        detail = watcher.get(url("detail", world.confidential_id)).text
        assert "Rotate secret" not in detail and ">Delete<" not in detail  # no change buttons for auditors
        token = csrf(watcher, url("delete", world.confidential_id))  # a valid token of the auditor's session
        posts = {"/admin/clients": create_form(), url("edit", world.confidential_id): create_form(),
                 url("rotate", world.confidential_id): {}, url("disable", world.confidential_id): {},
                 url("enable", world.confidential_id): {}, url("delete", world.confidential_id): {},
                 "/admin/clients/cleanup": {"age": "1h"}}
        for path, data in posts.items():
            response = watcher.post(path, data={**data, "csrf": token})
            assert response.status_code == 403, path
    assert snapshot(db) == before


def test_missing_or_foreign_csrf_token_changes_nothing(app: FastAPI, db: Database, world: World,
                                                       admin: TestClient) -> None:
    with browser(app, "watcher") as other:
        foreign = csrf(other, url("delete", world.confidential_id))
    before = snapshot(db)
    for token in (None, foreign, "forged"):
        for path in (url("delete", world.confidential_id), url("disable", world.confidential_id), "/admin/clients",
                     "/admin/clients/cleanup"):
            data = create_form() if path == "/admin/clients" else {}
            if token:
                data["csrf"] = token
            assert admin.post(path, data=data).status_code == 403, (path, token)
    assert snapshot(db) == before


# --- create --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["http://evil.example/cb", "javascript:alert(1)"])
def test_bad_redirect_uri_is_shown_next_to_its_field_with_the_form_kept(db: Database, admin: TestClient,
                                                                         bad: str) -> None:
    before = count(db, "clients")
    response = create(admin, name="Typed name", redirect_uris=f"{REDIRECT}\n{bad}",
                      grant_type=["authorization_code"], auth_method="none", scope=[], resource=[])
    assert response.status_code == 400
    html = response.text
    field = re.search(r'<textarea id="redirect_uris"[^>]*>(.*?)</textarea>\s*<p class="field-error" '
                      r'id="error-redirect_uris">([^<]+)</p>', html, re.S)
    assert field, html
    assert unescape(field.group(1)) == f"{REDIRECT}\n{bad}"  # what was typed, kept
    assert "must be https" in unescape(field.group(2))
    assert 'aria-invalid="true" aria-describedby="error-redirect_uris"' in html
    assert 'value="Typed name"' in html
    assert count(db, "clients") == before


def test_several_problems_are_shown_at_once(db: Database, admin: TestClient) -> None:
    response = create(admin, name=" ", auth_method="none", scope=["nope"])
    assert response.status_code == 400
    for field in ("name", "grant_types", "scopes"):
        assert f'id="error-{field}"' in response.text, field
    assert "a public client cannot use client_credentials" in response.text


def test_confidential_client_secret_is_shown_once_and_only_its_hash_is_stored(db: Database, admin: TestClient,
                                                                              client: TestClient) -> None:
    response = create(admin)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    secret = secret_on(response.text)
    assert 'data-copy="client-secret"' in response.text and "/static/copy.js" in response.text
    client_id = created_id(db, "Reporting job")
    ((stored,),) = sql(db, "SELECT secret_hash FROM clients WHERE client_id = :c", c=client_id)
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    detail = admin.get(url("detail", client_id))
    assert detail.status_code == 200 and secret not in detail.text
    assert client_credentials(client, client_id, secret).status_code == 200
    assert audit_rows(db, "client.created") == [(actor_of_root(db), client_id, "success")]


def test_public_client_is_created_and_the_next_page_says_so(db: Database, admin: TestClient) -> None:
    response = create(admin, name="Desk app", redirect_uris="http://127.0.0.1/cb", auth_method="none",
                      grant_type=["authorization_code", "refresh_token"])
    assert response.status_code == 303
    client_id = created_id(db, "Desk app")
    assert response.headers["location"] == url("detail", client_id)
    page = admin.get(response.headers["location"])
    assert "Client “Desk app” created." in page.text
    assert sql(db, "SELECT secret_hash, application_type FROM clients WHERE client_id = :c", c=client_id) == [
        (None, "native")]


def test_copy_script_is_served_and_allowed_by_the_policy(admin: TestClient) -> None:
    script = admin.get("/static/copy.js")
    assert script.status_code == 200 and "clipboard" in script.text
    csp = [d.strip() for d in admin.get("/admin/clients").headers["content-security-policy"].split(";")]
    assert "script-src 'self'" in csp
    assert not any("unsafe" in d for d in csp)


# --- edit ----------------------------------------------------------------------------------

def test_edit_revalidates_redirect_uris_and_records_what_changed(db: Database, world: World,
                                                                 admin: TestClient) -> None:
    page = admin.get(url("edit", world.confidential_id))
    assert page.status_code == 200 and "Web Agent" in page.text
    form = {"name": "Web Agent 2", "redirect_uris": "https://app.example.com/callback",
            "grant_type": ["authorization_code", "refresh_token"], "auth_method": "client_secret_basic",
            "scope": ["read:calendar"], "resource": [RESOURCE]}
    before = snapshot(db)
    refused = post(admin, url("edit", world.confidential_id), **{**form, "redirect_uris": "http://evil.example/cb"})
    assert refused.status_code == 400 and 'id="error-redirect_uris"' in refused.text
    assert snapshot(db) == before
    done = post(admin, url("edit", world.confidential_id), **form)
    assert done.status_code == 303
    assert "Client updated." in admin.get(done.headers["location"]).text
    with db.read_session() as s:
        edited = clients.require(s, world.confidential_id)
        assert (edited.name, edited.scopes, edited.resources, edited.default_scopes) == (
            "Web Agent 2", ["read:calendar"], [RESOURCE], ["read:calendar"])
    ((detail,),) = sql(db, "SELECT detail FROM audit_events WHERE event = 'client.updated'")
    assert "'changed': ['name', 'resources', 'scopes']" in str(detail) or \
        '"changed": ["name", "resources", "scopes"]' in str(detail)
    assert audit_rows(db, "client.updated") == [(actor_of_root(db), world.confidential_id, "success")]


def test_edit_to_confidential_shows_a_new_secret_once(db: Database, world: World, admin: TestClient) -> None:
    form = {"name": "Desktop Agent", "redirect_uris": REDIRECT, "grant_type": ["authorization_code"],
            "auth_method": "client_secret_post", "scope": ["read:calendar"], "resource": [RESOURCE]}
    response = post(admin, url("edit", world.public_id), **form)
    assert response.status_code == 200
    secret = secret_on(response.text)
    ((stored,),) = sql(db, "SELECT secret_hash FROM clients WHERE client_id = :c", c=world.public_id)
    assert stored == hashlib.sha256(secret.encode()).hexdigest()


def test_metadata_document_client_cannot_be_edited(db: Database, admin: TestClient) -> None:
    client_id = "https://agent.example.com/client.json"
    with db.session() as s:
        s.add(Client(client_id=client_id, name="Doc agent", kind="metadata", redirect_uris=[REDIRECT]))
    detail = admin.get(url("detail", client_id))  # an id that is a URL, passed as a query parameter
    assert detail.status_code == 200 and client_id in detail.text
    assert "metadata document" in admin.get(url("edit", client_id)).text
    refused = post(admin, url("edit", client_id), url("disable", client_id), name="Renamed", redirect_uris=REDIRECT,
                   grant_type=["authorization_code"], auth_method="none")
    assert refused.status_code == 400
    assert sql(db, "SELECT name FROM clients WHERE client_id = :c", c=client_id) == [("Doc agent",)]


# --- rotate, disable, enable, delete -------------------------------------------------------

def test_rotated_secret_replaces_the_old_one_at_once(db: Database, admin: TestClient, client: TestClient) -> None:
    old = secret_on(create(admin).text)
    client_id = created_id(db, "Reporting job")
    assert "Yes, rotate the secret" in admin.get(url("rotate", client_id)).text
    response = post(admin, url("rotate", client_id))
    assert response.status_code == 200
    new = secret_on(response.text)
    assert new != old
    assert client_credentials(client, client_id, old).json()["error"] == "invalid_client"
    assert client_credentials(client, client_id, new).status_code == 200
    assert audit_rows(db, "client.secret_rotated") == [(actor_of_root(db), client_id, "success")]


def test_public_client_has_no_secret_to_rotate(db: Database, world: World, admin: TestClient) -> None:
    before = snapshot(db)
    response = post(admin, url("rotate", world.public_id), url("disable", world.public_id))
    assert response.status_code == 400
    assert snapshot(db) == before


def _tokens(client: TestClient, world: World) -> dict[str, str]:
    verifier, challenge = pkce_pair()
    code = query(run_flow(client, authorize_params(world.public_id, challenge)))["code"]
    tokens = exchange(client, code, verifier, world.public_id).json()
    assert "refresh_token" in tokens, tokens
    return tokens  # type: ignore[no-any-return]


def _introspect(client: TestClient, rs: tuple[str, str], token: str) -> dict[str, object]:
    return client.post("/introspect", data={"token": token}, auth=rs).json()  # type: ignore[no-any-return]


def _resource_server(db: Database) -> tuple[str, str]:
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name="Calendar MCP", grant_types=["client_credentials"], scopes=["read:calendar"], resources=[RESOURCE],
            can_introspect=True))
        assert created.client_secret
        return created.client.client_id, created.client_secret


def test_disabled_client_cannot_refresh_and_its_tokens_are_inactive_until_enabled(
        db: Database, world: World, admin: TestClient, client: TestClient) -> None:
    rs = _resource_server(db)
    tokens = _tokens(client, world)
    assert _introspect(client, rs, tokens["access_token"])["active"] is True
    page = admin.get(url("disable", world.public_id))
    assert "Yes, disable" in page.text and "1 active grant" in page.text
    response = post(admin, url("disable", world.public_id))
    assert response.status_code == 303
    assert "Client “Desktop Agent” disabled." in admin.get(response.headers["location"]).text
    refreshed = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                            "client_id": world.public_id})
    assert refreshed.status_code == 401 and refreshed.json()["error"] == "invalid_client"
    assert _introspect(client, rs, tokens["access_token"]) == {"active": False}
    listed = admin.get("/admin/clients", params={"state": "disabled"}).text
    assert "Desktop Agent" in listed and 'badge off">disabled' in listed

    response = post(admin, url("enable", world.public_id), url("detail", world.public_id))
    assert response.status_code == 303
    assert _introspect(client, rs, tokens["access_token"])["active"] is True
    refreshed = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                            "client_id": world.public_id})
    assert refreshed.status_code == 200, refreshed.text
    actor = actor_of_root(db)
    assert audit_rows(db, "client.disabled") == [(actor, world.public_id, "success")]
    assert audit_rows(db, "client.enabled") == [(actor, world.public_id, "success")]


def test_delete_lists_what_goes_then_takes_consents_and_refresh_tokens(
        db: Database, world: World, admin: TestClient, client: TestClient) -> None:
    rs = _resource_server(db)
    tokens = _tokens(client, world)
    page = admin.get(url("delete", world.public_id)).text
    assert "1 consent" in page and "1 refresh-token family" in page and "Yes, delete" in page
    response = post(admin, url("delete", world.public_id))
    assert response.status_code == 303 and response.headers["location"] == "/admin/clients"
    assert "Client “Desktop Agent” deleted." in admin.get("/admin/clients").text
    for table in ("clients", "consents", "refresh_tokens", "authorization_codes"):
        assert sql(db, f"SELECT COUNT(*) FROM {table} WHERE client_id = :c", c=world.public_id) == [(0,)], table
    assert _introspect(client, rs, tokens["access_token"]) == {"active": False}
    assert admin.get(url("detail", world.public_id)).status_code == 404
    assert audit_rows(db, "client.deleted") == [(actor_of_root(db), world.public_id, "success")]


# --- list ----------------------------------------------------------------------------------

def test_list_searches_filters_and_pages(db: Database, world: World, admin: TestClient, client: TestClient) -> None:
    _tokens(client, world)  # the public client is used and holds one active grant
    client.app.state.services.audit.flush()  # "last used" is written in batches (audit.buffer)
    with db.session() as s:
        for n in range(55):
            s.add(Client(client_id=f"dyn-{n:02d}", name=f"Registered {n:02d}", kind="dynamic",
                         created_at=utcnow() - timedelta(minutes=n)))
        s.add(Client(client_id="https://doc.example/c.json", name="Doc 100%_", kind="metadata"))
    first = admin.get("/admin/clients", params={"kind": "dynamic"}).text
    assert "55 clients, page 1 of 2" in first
    assert first.count("Registered ") == 50 and "Web Agent" not in first
    second = admin.get("/admin/clients", params={"kind": "dynamic", "page": "2"}).text
    assert second.count("Registered ") == 5 and "Registered 54" in second
    assert "?kind=dynamic&amp;page=1" in second  # the pager keeps the filters
    assert "Registered 07" in admin.get("/admin/clients", params={"q": "registered 07"}).text
    found = admin.get("/admin/clients", params={"q": "DYN-1"}).text  # client_id substring, any case
    assert found.count("Registered 1") == 10
    literal = admin.get("/admin/clients", params={"q": "100%_"}).text  # LIKE wildcards are literal
    assert "1 client." in literal and "Doc 100%_" in literal
    assert "1 client." in admin.get("/admin/clients", params={"kind": "metadata"}).text
    unused = admin.get("/admin/clients", params={"state": "unused", "kind": "static"}).text
    assert "Web Agent" in unused and "Desktop Agent" not in unused
    listed = admin.get("/admin/clients", params={"kind": "static"}).text
    row = re.search(r"Desktop Agent</a></td>(.*?)</tr>", listed, re.S)
    assert row and "<td>1</td>" in row.group(1) and "public" in row.group(1)  # one active grant
    assert "confidential" in listed and "pre-registered" in listed


def test_client_names_are_escaped(db: Database, admin: TestClient) -> None:
    evil = "<script>alert(1)</script>"
    with db.session() as s:
        s.add(Client(client_id="xss", name=evil, kind="dynamic", created_at=utcnow() - timedelta(days=2)))
    for path in ("/admin/clients", url("detail", "xss"), url("delete", "xss"), "/admin/clients/cleanup"):
        page = admin.get(path)
        assert evil not in page.text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, path


# --- clean-up ------------------------------------------------------------------------------

def test_cleanup_previews_and_deletes_exactly_the_stale_self_registered_clients(
        db: Database, world: World, admin: TestClient) -> None:
    old = utcnow() - timedelta(days=3)
    now = utcnow()
    with db.session() as s:
        s.add_all([
            Client(client_id="never-used", name="Never used", kind="dynamic", created_at=old),
            Client(client_id="https://doc.example/old.json", name="Old document", kind="metadata", created_at=old),
            Client(client_id="used-long-ago", name="Used long ago", kind="dynamic", created_at=old,
                   last_used_at=old),
            Client(client_id="live-grant", name="Live grant", kind="dynamic", created_at=old, last_used_at=old),
            Client(client_id="too-new", name="Too new", kind="dynamic", created_at=now),
            Client(client_id="used-recently", name="Used recently", kind="dynamic", created_at=old, last_used_at=now),
            Client(client_id="old-static", name="Old static", kind="static", created_at=old),
        ])
        s.flush()
        refresh.create(s, RefreshGrant(family_id=uuid.uuid4(), client_id="live-grant", user_id=None, scopes=[],
                                       resource=RESOURCE, auth_time=None, family_expires_at=now + timedelta(days=1)),
                       now=now, idle_ttl=3600, access_jti="j", access_expires_at=now + timedelta(minutes=5))
    execute(db, "UPDATE clients SET created_at = :old", old=old)  # the seeded static clients are old too
    execute(db, "UPDATE clients SET created_at = :now WHERE client_id = 'too-new'", now=now)
    stale = {"never-used", "https://doc.example/old.json", "used-long-ago"}
    preview = admin.get("/admin/clients/cleanup")
    assert preview.status_code == 200
    listed = set(re.findall(r"<td><code>([^<]+)</code></td>", preview.text))
    assert listed == stale
    assert "<strong>3</strong> clients would be deleted" in preview.text
    response = post(admin, "/admin/clients/cleanup", age="1d",
                    as_of=re.search(r'name="as_of" value="(\d+)"', preview.text).group(1))  # type: ignore[union-attr]
    assert response.status_code == 303
    assert "Clean-up deleted 3 client(s)." in admin.get(response.headers["location"]).text
    left = {row[0] for row in sql(db, "SELECT client_id FROM clients")}
    assert not left & stale
    assert {"live-grant", "too-new", "used-recently", "old-static", world.public_id, world.confidential_id} <= left
    ((actor, detail),) = sql(db, "SELECT actor, detail FROM audit_events WHERE event = 'client.cleanup'")
    assert actor == actor_of_root(db)
    assert all(client_id in str(detail) for client_id in stale) and '"count": 3' in str(detail).replace("'", '"')


def test_cleanup_with_a_longer_age_spares_younger_clients(db: Database, world: World, admin: TestClient) -> None:
    with db.session() as s:
        s.add(Client(client_id="three-days", name="Three days", kind="dynamic",
                     created_at=utcnow() - timedelta(days=3)))
    assert "<strong>0</strong> clients" in admin.get("/admin/clients/cleanup", params={"age": "7d"}).text
    assert post(admin, "/admin/clients/cleanup", "/admin/clients/new", age="7d").status_code == 303
    assert sql(db, "SELECT COUNT(*) FROM clients WHERE client_id = 'three-days'") == [(1,)]
