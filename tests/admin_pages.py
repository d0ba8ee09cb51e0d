"""Console tests drive the real pages: sign in through /login, read each form's CSRF token, post it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI
from starlette.testclient import TestClient

from authserver.db import Database
from authserver.users import repository as users
from tests.conftest import ISSUER
from tests.oauth_helpers import PASSWORD, parse_forms, sql


def make_user(db: Database, username: str, roles: list[str]) -> str:
    with db.session() as s:
        return str(users.create_user(s, username, PASSWORD, roles).id)


def sign_in(browser: TestClient, username: str, next_path: str = "/admin") -> None:
    page = browser.get("/login", params={"next": next_path})
    assert page.status_code == 200, page.text
    form = next(f for f in parse_forms(page.text) if f.action.endswith("/login"))
    data = dict(form.fields)
    data.update({"username": username, "password": PASSWORD})
    response = browser.post(form.action, data=data)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == next_path


@contextmanager
def browser(app: FastAPI, username: str | None = None) -> Iterator[TestClient]:
    """A browser of its own (its own cookies), signed in as ``username`` when given."""
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as test_client:
        if username:
            sign_in(test_client, username)
        yield test_client


def csrf_of(browser: TestClient, path: str) -> str:
    """The CSRF token of the first form on the page that carries one."""
    page = browser.get(path)
    assert page.status_code == 200, page.text
    token = next((f.value("csrf") for f in parse_forms(page.text) if f.value("csrf") and "logout" not in f.action),
                 None)
    assert token, page.text
    return token


def snapshot(db: Database) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    """Every row a console change could touch, to compare before and after a refused POST."""
    return {table: sorted(map(repr, sql(db, f"SELECT * FROM {table}")))  # type: ignore[misc]
            for table in ("clients", "consents", "refresh_tokens", "audit_events", "authorization_codes")}
