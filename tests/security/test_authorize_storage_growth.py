"""Unauthenticated storage growth through /authorize.

Every well-formed authorization request is stored before anyone signs in. The attacks: huge
parameters (``state`` had no limit), endless requests from one browser or one address, and rows
that were only purged after token requests. Each parameter now has a length limit (an OAuth error at
the validated redirect URI, an error page before that), pending requests are bounded per browser and
per address in the shared database, and every process purges expired rows on a timer.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.db import Database
from tests.conftest import ISSUER, make_settings
from tests.oauth_helpers import REDIRECT, authorize_params, count, execute, pkce_pair, query, seed


def _params(world, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return authorize_params(world.public_id, pkce_pair()[1], **extra)


def test_overlong_state_is_invalid_request_at_the_redirect_uri_and_not_stored(
        client: TestClient, db: Database) -> None:
    world = seed(db)
    response = client.get("/authorize", params=_params(world, state="s" * 513))
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    params = query(location)
    assert params["error"] == "invalid_request" and params["iss"] == ISSUER
    assert "state" not in params  # what was refused is not echoed back
    assert count(db, "authorization_requests") == 0
    # 512 bytes is accepted (UTF-8 bytes are counted, not characters).
    assert client.get("/authorize", params=_params(world, state="s" * 512)).headers["location"].startswith(
        "/interaction/")
    assert query(client.get("/authorize", params=_params(world, state="가" * 200)).headers["location"])[
        "error"] == "invalid_request"


def test_overlong_scope_nonce_or_unknown_parameter_is_invalid_request_with_state(
        client: TestClient, db: Database) -> None:
    world = seed(db)
    for extra in ({"scope": "read:calendar " + "x" * 1024}, {"nonce": "n" * 513}, {"login_hint": "h" * 513}):
        params = query(client.get("/authorize", params=_params(world, **extra)).headers["location"])
        assert params["error"] == "invalid_request" and params["state"] == "xyz-state", extra
        assert params["iss"] == ISSUER
    assert count(db, "authorization_requests") == 0


def test_query_over_8_kb_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    padding = {f"pad{i}": "p" * 500 for i in range(17)}  # each under its own limit, 8.6 KB in all
    response = client.get("/authorize", params={**_params(world), **padding})
    params = query(response.headers["location"])
    assert response.headers["location"].startswith(REDIRECT + "?")
    assert params["error"] == "invalid_request" and "8192" in params["error_description"]
    assert count(db, "authorization_requests") == 0


def test_overlong_client_id_or_redirect_uri_is_an_error_page_never_a_redirect(
        client: TestClient, db: Database) -> None:
    world = seed(db)
    for extra in ({"client_id": "c" * 2049}, {"redirect_uri": REDIRECT + "?x=" + "r" * 2048}):
        response = client.get("/authorize", params={**_params(world), **extra})
        assert response.status_code == 400 and "location" not in response.headers, extra
        assert "too long" in response.text
    huge = client.get("/authorize?" + urlencode({**_params(world), "pad": "p" * 40_000}))
    assert huge.status_code == 414 and "location" not in huge.headers
    assert count(db, "authorization_requests") == 0


def _pending(db: Database) -> int:
    return count(db, "authorization_requests")


def test_one_browser_keeps_at_most_20_pending_requests_and_its_newest_tabs_work(
        client: TestClient, db: Database) -> None:
    world = seed(db)
    locations = []
    for _ in range(25):  # the same browser (cookie kept): a person with many tabs, or a loop
        response = client.get("/authorize", params=_params(world))
        assert response.status_code == 303
        locations.append(response.headers["location"])
    assert _pending(db) == 20
    # The oldest tabs' requests are gone (so "unknown request"); the newest 20 still show the sign-in page.
    dropped = client.get(locations[0])
    assert dropped.status_code == 404 and "Unknown request" in dropped.text
    assert all('name="password"' in client.get(loc).text for loc in locations[-20:])


def test_one_address_without_cookies_meets_429_at_the_pending_limit(db_url: str, db: Database) -> None:
    world = seed(db)
    app = create_app(make_settings(db_url, pending_requests_per_ip=5), db=db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        for _ in range(5):
            client.cookies.clear()  # a fresh "browser" each time: the per-browser bound never applies
            assert client.get("/authorize", params=_params(world)).status_code == 303
        client.cookies.clear()
        refused = client.get("/authorize", params=_params(world))
        assert refused.status_code == 429 and "location" not in refused.headers
        assert "Too many sign-ins in progress" in refused.text
        assert _pending(db) == 5
        # Expired requests no longer count: the address can start again.
        execute(db, "UPDATE authorization_requests SET expires_at = created_at")
        client.cookies.clear()
        assert client.get("/authorize", params=_params(world)).status_code == 303


def test_expired_requests_are_purged_on_a_timer_without_any_token_request(db_url: str, db: Database) -> None:
    world = seed(db)
    app = create_app(make_settings(db_url, purge_interval=1), db=db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        for _ in range(3):
            client.get("/authorize", params=_params(world))
        execute(db, "UPDATE authorization_requests SET expires_at = created_at")
        assert _pending(db) == 3
        deadline = time.monotonic() + 10
        while _pending(db) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _pending(db) == 0
        started = time.monotonic()
    assert time.monotonic() - started < 5  # the timer stops at once on shutdown
