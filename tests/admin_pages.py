"""Console tests drive the real pages: sign in through /login, read each form's CSRF token, post it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.testclient import TestClient

from authserver.db import Database
from authserver.users import repository as users
from tests.conftest import ISSUER
from tests.oauth_helpers import PASSWORD, parse_forms, sql


def make_user(db: Database, username: str, *roles: str, password: str = PASSWORD) -> str:
    with db.session() as s:
        return str(users.create_user(s, username, password, list(roles) or ["user"]).id)


def sign_in(client: TestClient, username: str, password: str = PASSWORD, next_path: str = "/admin/users") -> Any:
    page = client.get(f"/login?next={next_path}")
    assert page.status_code == 200, page.text
    form = next(f for f in parse_forms(page.text) if f.action.endswith("/login"))
    data = dict(form.fields)
    data.update({"username": username, "password": password})
    return client.post(form.action, data=data)


@contextmanager
def browser(app: Any, username: str | None = None) -> Iterator[TestClient]:
    """Another browser on the same app, signed in as ``username`` when given."""
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as other:
        if username is not None:
            response = sign_in(other, username)
            assert response.status_code == 303, response.text
        yield other


def csrf(client: TestClient, path: str) -> str:
    """The CSRF token of the console page at ``path`` (bound to this browser's session)."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    token = next((f.value("csrf") for f in parse_forms(page.text) if f.value("csrf") and "/logout" not in f.action),
                 None)
    assert token, f"no form on {path}"
    return token


def flash_text(client: TestClient, location: str) -> str:
    """The page a POST redirected to (where its flash message is shown)."""
    page = client.get(location)
    assert page.status_code == 200, page.text
    return page.text


def snapshot(db: Database) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    """Every row a console change could touch, to compare before and after a refused POST."""
    return {table: sorted(map(repr, sql(db, f"SELECT * FROM {table}")))  # type: ignore[misc]
            for table in ("clients", "consents", "refresh_tokens", "audit_events", "authorization_codes")}
