"""Driving two-step verification through the real pages: set it up, sign in with a code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from starlette.testclient import TestClient

from authserver.mfa import totp
from tests.oauth_helpers import PASSWORD, parse_forms


class Clock:
    """The time TOTP codes are checked at (``mfa.totp.utcnow``), moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 30) -> None:
        self.now += timedelta(seconds=seconds)


def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A test's ``clock`` fixture: TOTP codes are checked at the clock's time."""
    pinned = Clock()
    monkeypatch.setattr(totp, "utcnow", pinned)
    return pinned


@dataclass
class Enrolled:
    secret: str
    recovery_codes: list[str]

    def code(self, at: datetime) -> str:
        return pyotp.TOTP(self.secret).at(at)


def form_of(html: str, action_end: str) -> dict[str, str]:
    form = next(f for f in parse_forms(html) if f.action.endswith(action_end))
    return dict(form.fields)


def enrol(client: TestClient, clock: Clock, next_path: str | None = None) -> Enrolled:
    """Set up TOTP for the signed-in person with a code computed from the page's secret."""
    page = client.get("/account/two-step" + (f"?next={next_path}" if next_path else ""))
    assert page.status_code == 200, page.text
    began = client.post("/account/two-step/begin", data=form_of(page.text, "/account/two-step/begin"))
    assert began.status_code == 303, began.text
    page = client.get(began.headers["location"])
    secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page.text)
    assert secret, page.text
    uri = re.search(r'<code id="totp-uri">([^<]+)</code>', page.text)
    assert uri and uri.group(1).startswith("otpauth://totp/") and f"secret={secret.group(1)}" in uri.group(1)
    data = form_of(page.text, "/account/two-step/confirm")
    data["code"] = pyotp.TOTP(secret.group(1)).at(clock.now)
    confirmed = client.post("/account/two-step/confirm", data=data)
    assert confirmed.status_code == 200, confirmed.text
    codes = re.findall(r"<li><code>([a-z0-9-]{14})</code></li>", confirmed.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    return Enrolled(secret.group(1), codes)


def password_step(client: TestClient, username: str, next_path: str = "/account", password: str = PASSWORD) -> Any:
    """The stand-alone sign-in page's password form."""
    page = client.get(f"/login?next={next_path}")
    assert page.status_code == 200 and 'name="password"' in page.text, page.text
    data = form_of(page.text, "/login")
    data.update({"username": username, "password": password})
    return client.post("/login", data=data)


def code_step(client: TestClient, page_html: str, code: str) -> Any:
    """Post a code on a second-step page (stand-alone or inside an authorization request)."""
    form = next(f for f in parse_forms(page_html) if f.action.endswith("/second-factor"))
    data = dict(form.fields)
    data["code"] = code
    return client.post(form.action, data=data)


def sign_in_with_code(client: TestClient, username: str, code: str, next_path: str = "/account") -> Any:
    """Password, then the code; the answer to the code."""
    first = password_step(client, username, next_path)
    assert first.status_code == 303, first.text
    page = client.get(first.headers["location"])
    assert page.status_code == 200 and 'name="code"' in page.text, page.text
    return code_step(client, page.text, code)
