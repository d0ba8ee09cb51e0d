"""Two-step verification in a real browser (Debian's Chromium, driven by Playwright): set it up on
/account/two-step, sign out, sign in again with a code. A real uvicorn serves the app in this
process, so the TOTP clock is pinned as in the other tests. Skipped without /usr/bin/chromium,
except in CI, where that is a failure; on both databases."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest

from authserver.app import create_app
from authserver.db import Database
from tests.admin_pages import make_user
from tests.conftest import REQUIRE_PG, make_settings
from tests.live import serve
from tests.oauth_helpers import PASSWORD
from tests.second_factor_helpers import Clock, pinned_clock
from tests.test_browser_consent import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return pinned_clock(monkeypatch)


def test_set_up_sign_out_and_sign_in_with_a_code_in_chromium(db_url: str, db: Database, clock: Clock) -> None:
    if not Path(CHROMIUM).exists():
        if REQUIRE_PG:
            pytest.fail(f"{CHROMIUM} is required in CI (AUTHSERVER_TEST_REQUIRE_POSTGRES=1)")
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    make_user(db, "carol")

    with serve(lambda base: create_app(make_settings(db_url, issuer=base), db=db)) as issuer, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"{m.text} {m.location}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            page.goto(f"{issuer}/login?next=/account/two-step")
            page.fill("#username", "carol")
            page.fill("#password", PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("button", name="Set up two-step verification").click()
            secret = page.inner_text("#totp-secret").strip()
            assert page.inner_text("#totp-uri").startswith("otpauth://totp/")
            page.fill("#code", pyotp.TOTP(secret).at(clock.now))
            page.get_by_role("button", name="Turn on").click()
            codes = page.locator("#recovery-codes li")
            codes.first.wait_for()
            assert codes.count() == 10
            page.get_by_role("link", name="I have saved them").click()
            assert "Two-step verification is on" in page.inner_text("main")

            page.get_by_role("button", name="Sign out").click()
            page.get_by_text("You are signed out.").wait_for()

            clock.advance()
            page.goto(f"{issuer}/login?next=/account")
            page.fill("#username", "carol")
            page.fill("#password", PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("heading", name="Two-step verification").wait_for()
            assert page.evaluate("document.cookie") == ""  # the second-step cookie is HttpOnly too
            page.fill("#code", "000000")
            page.get_by_role("button", name="Verify").click()
            page.get_by_role("alert").wait_for()
            assert "That code is not right" in page.inner_text("main")
            page.fill("#code", pyotp.TOTP(secret).at(clock.now))
            page.get_by_role("button", name="Verify").click()
            page.wait_for_url(f"{issuer}/account")
            assert page.get_by_role("heading", name="Connected apps").is_visible()
            # The one wrong code was answered 401, which Chromium reports; nothing else went wrong.
            assert [p for p in problems if "status of 401" not in p] == []
            assert len(problems) == 1 and "/login/second-factor" in problems[0]
        finally:
            browser.close()
