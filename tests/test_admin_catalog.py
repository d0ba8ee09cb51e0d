"""Console: scopes and resources — list, create, edit, delete with confirmation, and Check."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.catalog.check import ResourceChecker
from authserver.db import Database
from authserver.safehttp import GuardedHTTP
from tests.admin_pages import browser, csrf, make_user, sign_in
from tests.conftest import ISSUER, make_settings
from tests.live import serve
from tests.oauth_helpers import OTHER_RESOURCE, RESOURCE, count, parse_forms, seed, sql

PAGES = ["/admin/scopes", "/admin/scopes/new", "/admin/scopes/edit?name=read:calendar",
         "/admin/scopes/delete?name=read:calendar", "/admin/resources", "/admin/resources/new",
         f"/admin/resources/edit?uri={RESOURCE}", f"/admin/resources/delete?uri={RESOURCE}"]


@pytest.fixture
def admin(client: TestClient, db: Database) -> TestClient:
    seed(db)
    make_user(db, "root", "admin")
    assert sign_in(client, "root").status_code == 303
    return client


def audit_events(db: Database, event: str) -> list[dict[str, Any]]:
    rows = sql(db, "SELECT detail FROM audit_events WHERE event = :e ORDER BY id", e=event)
    return [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows]


def test_anonymous_is_sent_to_sign_in_and_back(client: TestClient, db: Database) -> None:
    seed(db)
    response = client.get("/admin/scopes")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/admin/scopes"


def test_plain_user_is_refused(client: TestClient, db: Database) -> None:
    seed(db)
    assert sign_in(client, "alice").status_code == 303
    for path in ("/admin/scopes", "/admin/resources"):
        assert client.get(path).status_code == 403


def test_auditor_reads_every_page_and_every_post_is_refused(client: TestClient, db: Database, app: Any) -> None:
    seed(db)
    make_user(db, "root", "admin")
    make_user(db, "eve", "auditor")
    assert sign_in(client, "eve").status_code == 303
    for path in PAGES:
        page = client.get(path)
        assert page.status_code == 200, path
    assert "Add a scope" not in client.get("/admin/scopes").text  # change links hidden from auditors
    token = csrf(client, "/admin/scopes/new")
    before = sql(db, "SELECT name, description, write, public FROM scopes ORDER BY name")
    resources_before = sql(db, "SELECT uri, name, scopes FROM resources ORDER BY uri")
    for path, data in [
        ("/admin/scopes/new", {"name": "x:y", "description": "X"}),
        ("/admin/scopes/edit", {"name": "read:calendar", "description": "changed"}),
        ("/admin/scopes/delete", {"name": "read:calendar"}),
        ("/admin/resources/new", {"uri": "https://new.example.com/mcp", "name": "New"}),
        ("/admin/resources/edit", {"uri": RESOURCE, "name": "changed"}),
        ("/admin/resources/delete", {"uri": RESOURCE}),
        ("/admin/resources/check", {"uri": RESOURCE}),
    ]:
        assert client.post(path, data={"csrf": token, **data}).status_code == 403, path
    assert sql(db, "SELECT name, description, write, public FROM scopes ORDER BY name") == before
    assert sql(db, "SELECT uri, name, scopes FROM resources ORDER BY uri") == resources_before
    assert sql(db, "SELECT event FROM audit_events WHERE event <> 'login.succeeded'") == []


def test_scope_is_created_edited_and_listed_with_its_usage(admin: TestClient, db: Database) -> None:
    token = csrf(admin, "/admin/scopes/new")
    response = admin.post("/admin/scopes/new", data={"csrf": token, "name": "read:files",
                                                     "description": "See your files", "public": "on"})
    assert response.status_code == 303 and response.headers["location"] == "/admin/scopes"
    listing = admin.get("/admin/scopes")
    assert "Scope read:files created." in listing.text
    assert "See your files" in listing.text
    assert "2 resource(s)" not in listing.text  # read:calendar: 1 resource, 2 clients
    assert "1 resource(s), 2 client(s)" in listing.text
    response = admin.post("/admin/scopes/edit", data={"csrf": token, "name": "read:files",
                                                      "description": "Read and list your files", "write": "on"})
    assert response.status_code == 303
    assert sql(db, "SELECT description, write, public FROM scopes WHERE name = 'read:files'") == [
        ("Read and list your files", True, False)]
    assert [e["scope"] for e in audit_events(db, "scope.created")] == ["read:files"]
    assert audit_events(db, "scope.updated")[0]["by"] == "root"


def test_scope_validation_error_is_shown_next_to_the_field_with_input_kept(admin: TestClient, db: Database) -> None:
    token = csrf(admin, "/admin/scopes/new")
    response = admin.post("/admin/scopes/new", data={"csrf": token, "name": "bad name", "description": "Typed text"})
    assert response.status_code == 400
    assert 'id="e-name"' in response.text and "invalid scope name" in response.text
    assert 'value="bad name"' in response.text and "Typed text" in response.text
    response = admin.post("/admin/scopes/new", data={"csrf": token, "name": "ok:name", "description": "  "})
    assert response.status_code == 400 and 'id="e-description"' in response.text
    assert 'value="ok:name"' in response.text
    response = admin.post("/admin/scopes/edit", data={"csrf": token, "name": "read:calendar", "description": ""})
    assert response.status_code == 400 and 'id="e-description"' in response.text
    assert count(db, "scopes") == 3
    assert sql(db, "SELECT description FROM scopes WHERE name = 'read:calendar'") == [("See your calendar events",)]


def test_missing_or_foreign_csrf_is_refused_and_changes_nothing(admin: TestClient, db: Database, app: Any) -> None:
    make_user(db, "root2", "admin")
    with browser(app, "root2") as other:
        foreign = csrf(other, "/admin/scopes/new")
    for data in ({}, {"csrf": foreign}, {"csrf": "forged"}):
        response = admin.post("/admin/scopes/new", data={**data, "name": "x:y", "description": "X"})
        assert response.status_code == 403
        response = admin.post("/admin/resources/delete", data={**data, "uri": RESOURCE})
        assert response.status_code == 403
    assert count(db, "scopes") == 3 and count(db, "resources") == 2


def test_deleting_a_scope_confirms_who_allows_it_and_removes_it_everywhere(admin: TestClient, db: Database) -> None:
    page = admin.get("/admin/scopes/delete?name=read:calendar")
    assert page.status_code == 200
    assert f"resource {RESOURCE}" in page.text
    assert "client Desktop Agent" in page.text and "client Web Agent" in page.text
    assert "removed from the allow-list" in page.text
    assert count(db, "scopes") == 3  # the GET changed nothing
    form = next(f for f in parse_forms(page.text) if f.action.endswith("/admin/scopes/delete"))
    response = admin.post(form.action, data=dict(form.fields))
    assert response.status_code == 303
    assert "Scope read:calendar deleted and removed from 3 allow-list(s)." in admin.get("/admin/scopes").text
    assert sql(db, "SELECT name FROM scopes WHERE name = 'read:calendar'") == []
    for (scopes,) in sql(db, "SELECT scopes FROM resources") + sql(db, "SELECT scopes FROM clients"):
        assert "read:calendar" not in (json.loads(scopes) if isinstance(scopes, str) else scopes)
    event = audit_events(db, "scope.deleted")[0]
    assert event["resources"] == [RESOURCE] and len(event["clients"]) == 2


def test_unknown_scope_or_resource_is_404(admin: TestClient) -> None:
    assert admin.get("/admin/scopes/edit?name=nope").status_code == 404
    assert admin.get("/admin/resources/delete?uri=https://nope.example.com").status_code == 404


def test_resource_is_created_canonicalised_edited_and_deleted(admin: TestClient, db: Database) -> None:
    token = csrf(admin, "/admin/resources/new")
    page = admin.get("/admin/resources/new")
    assert 'name="scope" value="read:email"' in page.text
    response = admin.post("/admin/resources/new", data={"csrf": token, "uri": "HTTPS://Files.Example.COM/mcp",
                                                        "name": "Files", "scope": ["read:email", "read:calendar"]})
    assert response.status_code == 303
    assert "Resource https://files.example.com/mcp created." in admin.get("/admin/resources").text
    assert sql(db, "SELECT name FROM resources WHERE uri = 'https://files.example.com/mcp'") == [("Files",)]
    response = admin.post("/admin/resources/edit", data={"csrf": token, "uri": "https://files.example.com/mcp",
                                                         "name": "Team files", "scope": ["read:email"]})
    assert response.status_code == 303
    rows = sql(db, "SELECT name, scopes FROM resources WHERE uri = 'https://files.example.com/mcp'")
    assert rows[0][0] == "Team files"
    assert (json.loads(rows[0][1]) if isinstance(rows[0][1], str) else rows[0][1]) == ["read:email"]

    page = admin.get(f"/admin/resources/delete?uri={OTHER_RESOURCE}")
    assert "next refresh" in page.text and "Web Agent" in page.text
    response = admin.post("/admin/resources/delete", data={"csrf": token, "uri": OTHER_RESOURCE})
    assert response.status_code == 303
    assert sql(db, "SELECT uri FROM resources WHERE uri = :u", u=OTHER_RESOURCE) == []
    for (resources,) in sql(db, "SELECT resources FROM clients"):
        assert OTHER_RESOURCE not in (json.loads(resources) if isinstance(resources, str) else resources)
    assert [e["resource"] for e in audit_events(db, "resource.created")] == ["https://files.example.com/mcp"]
    assert audit_events(db, "resource.updated") and audit_events(db, "resource.deleted")


def test_resource_validation_errors_keep_the_input(admin: TestClient, db: Database) -> None:
    token = csrf(admin, "/admin/resources/new")
    response = admin.post("/admin/resources/new", data={"csrf": token, "uri": "http://mcp.example.com/mcp",
                                                        "name": "Plain", "scope": ["read:email"]})
    assert response.status_code == 400
    assert 'id="e-uri"' in response.text and "must be https" in response.text
    assert 'value="http://mcp.example.com/mcp"' in response.text and 'value="Plain"' in response.text
    assert 'value="read:email" checked' in response.text
    response = admin.post("/admin/resources/new", data={"csrf": token, "uri": "https://x.example.com/mcp",
                                                        "name": "", "scope": []})
    assert response.status_code == 400 and 'id="e-name"' in response.text
    assert count(db, "resources") == 2


# --- Check ---------------------------------------------------------------------------------

class FakeMCP:
    """A tiny MCP-like server: RFC 9728 metadata and a 401 challenge, each variant switchable."""

    def __init__(self) -> None:
        self.base = ""
        self.issuer = ISSUER
        self.scopes = ["read:calendar"]
        self.challenge = True

    def app(self, base: str) -> Starlette:
        self.base = base

        async def metadata(request: Request) -> Response:
            return JSONResponse({"resource": f"{self.base}/mcp", "authorization_servers": [self.issuer],
                                 "scopes_supported": self.scopes})

        async def mcp(request: Request) -> Response:
            if not self.challenge:
                return JSONResponse({"jsonrpc": "2.0"})
            url = f"{self.base}/.well-known/oauth-protected-resource/mcp"
            return Response(status_code=401, headers={"WWW-Authenticate": f'Bearer resource_metadata="{url}"'})

        return Starlette(routes=[Route("/.well-known/oauth-protected-resource/mcp", metadata),
                                 Route("/mcp", mcp, methods=["GET", "POST"])])


@pytest.fixture
def checking(db_url: str, db: Database) -> Iterator[tuple[TestClient, FakeMCP, str]]:
    seed(db)
    make_user(db, "root", "admin")
    fake = FakeMCP()
    app = create_app(make_settings(db_url, cimd_allow_loopback_http=True), db=db)
    with serve(fake.app) as base, TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        assert sign_in(client, "root").status_code == 303
        token = csrf(client, "/admin/resources/new")
        response = client.post("/admin/resources/new", data={"csrf": token, "uri": f"{base}/mcp", "name": "Fake",
                                                            "scope": ["read:calendar"]})
        assert response.status_code == 303, response.text
        yield client, fake, token


def check(client: TestClient, token: str, uri: str) -> str:
    response = client.post("/admin/resources/check", data={"csrf": token, "uri": uri})
    assert response.status_code == 200, response.text
    return response.text


def test_check_of_a_correct_server_says_all_good(checking: tuple[TestClient, FakeMCP, str], db: Database) -> None:
    client, fake, token = checking
    text = check(client, token, f"{fake.base}/mcp")
    assert "All good" in text
    assert f"authorization_servers names this server ({ISSUER}) exactly." in text
    assert "resource equals the registered URI." in text
    assert "Every advertised scope is registered and allowed for this resource." in text
    assert "resource_metadata points at the document it serves" in text
    assert "problem</span>" not in text
    assert audit_events(db, "resource.checked")[0]["ok"] is True


def test_check_names_another_issuer(checking: tuple[TestClient, FakeMCP, str]) -> None:
    client, fake, token = checking
    fake.issuer = "https://auth.elsewhere.example"
    text = check(client, token, f"{fake.base}/mcp")
    assert "Problems found" in text
    assert f"authorization_servers lists https://auth.elsewhere.example, not this server ({ISSUER})" in text


def test_check_reports_unknown_and_not_allowed_scopes(checking: tuple[TestClient, FakeMCP, str]) -> None:
    client, fake, token = checking
    fake.scopes = ["read:calendar", "delete:everything", "read:email"]
    text = check(client, token, f"{fake.base}/mcp")
    assert "not registered here: delete:everything" in text
    assert "registered but not allowed for this resource: read:email" in text


def test_check_reports_a_server_that_answers_without_a_challenge(checking: tuple[TestClient, FakeMCP, str]) -> None:
    client, fake, token = checking
    fake.challenge = False
    text = check(client, token, f"{fake.base}/mcp")
    assert "answered HTTP 200 instead of 401" in text


def test_check_of_an_unreachable_server_is_a_sentence(checking: tuple[TestClient, FakeMCP, str],
                                                      db: Database) -> None:
    client, _, token = checking
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    assert client.post("/admin/resources/new", data={"csrf": token, "uri": f"http://127.0.0.1:{port}/mcp",
                                                     "name": "Gone"}).status_code == 303
    text = check(client, token, f"http://127.0.0.1:{port}/mcp")
    assert "No protected-resource metadata (RFC 9728) could be read" in text
    assert "did not accept the connection" in text
    assert "The request without a token to" in text


def test_check_refuses_private_addresses_before_connecting(loopback_connections: list[str]) -> None:
    for addresses in (["10.0.0.5"], ["169.254.169.254"], ["127.0.0.1"], ["::ffff:192.168.1.1"]):
        checker = ResourceChecker(GuardedHTTP(resolver=lambda host, port, a=addresses: a))
        result = checker.check("https://mcp.internal.example/mcp", ISSUER, {"read:calendar"}, {"read:calendar"})
        assert not result.ok
        messages = " ".join(f.message for f in result.findings)
        assert "could not be resolved to a public address" in messages
        assert addresses[0] not in messages  # the address stays in the log-only detail
    assert loopback_connections == []
