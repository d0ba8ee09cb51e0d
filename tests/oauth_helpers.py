"""Driving the real pages: fetch, parse the form, post it. No shortcuts around the HTML."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.db import Database
from authserver.users import repository as users

RESOURCE = "https://calendar.example.com/mcp"
OTHER_RESOURCE = "https://mail.example.com/mcp"
REDIRECT = "https://app.example.com/callback"
LOOPBACK_REDIRECT = "http://127.0.0.1/callback"
PASSWORD = "correct horse battery staple"


@dataclass
class Form:
    action: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    checkboxes: list[tuple[str, str, bool]] = field(default_factory=list)
    buttons: list[tuple[str, str]] = field(default_factory=list)

    def value(self, name: str) -> str | None:
        return next((v for k, v in self.fields if k == name), None)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(action=a.get("action", "")))
        elif tag == "input" and self.forms:
            kind = a.get("type", "text")
            if kind == "checkbox":
                self.forms[-1].checkboxes.append((a["name"], a.get("value", "on"), "checked" in a))
            elif kind != "submit":
                self.forms[-1].fields.append((a.get("name", ""), a.get("value", "")))
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1].buttons.append((a["name"], a.get("value", "")))


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query, keep_blank_values=True).items()}


@dataclass
class World:
    """A seeded catalogue: scopes, two resources, a public and a confidential client, a user."""

    public_id: str
    confidential_id: str
    confidential_secret: str
    username: str = "alice"


def seed(db: Database) -> World:
    with db.session() as s:
        catalog.create_scope(s, "read:calendar", "See your calendar events")
        catalog.create_scope(s, "write:calendar", "Create, change and delete your calendar events", write=True)
        catalog.create_scope(s, "read:email", "Read your email")
        catalog.create_resource(s, RESOURCE, "Calendar", ["read:calendar", "write:calendar"])
        catalog.create_resource(s, OTHER_RESOURCE, "Mail", ["read:email"])
        public = clients.create_client(s, clients.NewClient(
            name="Desktop Agent", redirect_uris=[REDIRECT, LOOPBACK_REDIRECT], public=True,
            scopes=["read:calendar", "write:calendar"], resources=[RESOURCE]))
        confidential = clients.create_client(s, clients.NewClient(
            name="Web Agent", redirect_uris=[REDIRECT], scopes=["read:calendar", "write:calendar", "read:email"],
            resources=[RESOURCE, OTHER_RESOURCE]))
        users.create_user(s, "alice", PASSWORD)
        users.create_user(s, "bob", PASSWORD)
        assert confidential.client_secret
        return World(public.client.client_id, confidential.client.client_id, confidential.client_secret)


def user_id(db: Database, username: str) -> str:
    with db.session() as s:
        user = users.get_by_username(s, username)
        assert user
        return str(user.id)


def session_of(db: Database) -> Session:
    return db.sessions()


def authorize_params(client_id: str, challenge: str, **extra: str) -> dict[str, str]:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
              "code_challenge": challenge, "code_challenge_method": "S256", "state": "xyz-state",
              "resource": RESOURCE, "scope": "read:calendar"}
    params.update(extra)
    return {k: v for k, v in params.items() if v != "<omit>"}


def start(client: TestClient, params: dict[str, str], path: str = "/authorize"):  # type: ignore[no-untyped-def]
    return client.get(path, params=params)


def login(client: TestClient, page_html: str, username: str = "alice", password: str = PASSWORD):  # type: ignore[no-untyped-def]
    form = next(f for f in parse_forms(page_html) if f.value("csrf") is not None and "login" in f.action)
    data = dict(form.fields)
    data.update({"username": username, "password": password})
    return client.post(form.action, data=data)


def consent_form(page_html: str) -> Form:
    return next(f for f in parse_forms(page_html) if "consent" in f.action)


def decide(client: TestClient, page_html: str, decision: str = "allow", untick: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    form = consent_form(page_html)
    data: dict[str, str | list[str]] = dict(form.fields)
    data["scope"] = [value for name, value, checked in form.checkboxes
                     if name == "scope" and checked and value not in untick]
    data["decision"] = decision
    return client.post(form.action, data=data)


def run_flow(client: TestClient, params: dict[str, str], *, username: str = "alice",
             decision: str = "allow", untick: tuple[str, ...] = (), authorize_path: str = "/authorize") -> str:
    """authorize → (login) → (consent) → the final redirect's Location."""
    response = start(client, params, authorize_path)
    assert response.status_code == 303, response.text
    while "/interaction/" in response.headers["location"] and not response.headers["location"].startswith("http"):
        page = client.get(response.headers["location"])
        if page.status_code == 303:
            response = page
            break
        assert page.status_code == 200, page.text
        if 'name="password"' in page.text:
            response = login(client, page.text, username)
        else:
            response = decide(client, page.text, decision, untick)
        assert response.status_code == 303, response.text
    return response.headers["location"]


def exchange(client: TestClient, code: str, verifier: str, client_id: str, *, secret: str | None = None,
             redirect_uri: str = REDIRECT, token_path: str = "/token", **extra: str):  # type: ignore[no-untyped-def]
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": redirect_uri}
    data.update(extra)
    auth = None
    if secret is None:
        data["client_id"] = client_id
    else:
        auth = (client_id, secret)
    return client.post(token_path, data=data, auth=auth)


# --- Helpers for the attack and consent tests: raw SQL checks and page navigation. ---


def sql(db: Database, statement: str, **params: object) -> list[tuple]:  # type: ignore[type-arg]
    """Rows of a raw SQL query, read outside the app (what is really stored)."""
    from sqlalchemy import text

    with db.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(statement), params)]


def execute(db: Database, statement: str, **params: object) -> int:
    """Run a raw SQL change (e.g. push an expiry into the past); the number of rows touched."""
    from sqlalchemy import text

    with db.engine.begin() as conn:
        return conn.execute(text(statement), params).rowcount


def count(db: Database, table: str) -> int:
    return sql(db, f"SELECT COUNT(*) FROM {table}")[0][0]


def interaction_page(client: TestClient, params: dict[str, str] | list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    """GET /authorize, then the interaction page it leads to (login or consent)."""
    response = client.get("/authorize", params=params)
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith("/interaction/"), location
    return client.get(location)


def consent_page(client: TestClient, params: dict[str, str], username: str = "alice"):  # type: ignore[no-untyped-def]
    """The consent page of a new request, signing in first when the page asks for it."""
    page = interaction_page(client, params)
    if 'name="password"' in page.text:
        response = login(client, page.text, username)
        assert response.status_code == 303, response.text
        page = client.get(response.headers["location"])
    assert page.status_code == 200, page.text
    assert 'name="decision"' in page.text, page.text
    return page


def scope_checkboxes(page_html: str) -> list[tuple[str, bool]]:
    """(scope, checked) for each permission checkbox of the consent form, in page order.

    The "Stay connected" box (``scope=offline_access``) is not a permission; see ``stay_connected_box``.
    """
    return [(value, checked) for name, value, checked in consent_form(page_html).checkboxes
            if name == "scope" and value != "offline_access"]


def stay_connected_box(page_html: str) -> bool | None:
    """Whether the consent form's "Stay connected" box is ticked; None when it is not offered."""
    return next((checked for name, value, checked in consent_form(page_html).checkboxes
                 if name == "scope" and value == "offline_access"), None)
