"""Console: registration policy (mode, metadata-document host patterns) and initial access tokens,
and that /register, the metadata and the metadata-document fetcher follow what is saved."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.db import Database
from authserver.policy.cache import PolicyCache
from authserver.settings import Settings
from tests.admin_pages import browser, csrf, make_user, sign_in
from tests.conftest import ISSUER, make_settings
from tests.oauth_helpers import PASSWORD, authorize_params, count, execute, parse_forms, pkce_pair, seed, sql

LOOPBACK = "http://127.0.0.1:33418/callback"
METADATA = "/.well-known/oauth-authorization-server"


@pytest.fixture
def settings(db_url: str) -> Settings:
    # The policy cache bound injected as 0: a saved policy is seen by the very next request.
    return make_settings(db_url, policy_cache_seconds=0, cimd_allow_loopback_http=True)


@pytest.fixture
def admin(client: TestClient, db: Database) -> TestClient:
    seed(db)
    make_user(db, "root", "admin")
    assert sign_in(client, "root").status_code == 303
    return client


def register(client: TestClient, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/register", headers=headers, json={
        "redirect_uris": [LOOPBACK], "token_endpoint_auth_method": "none", "client_name": "Claude Desktop"})


def save_policy(admin: TestClient, mode: str, allowed: str = "", denied: str = "") -> Any:
    return admin.post("/admin/policy", data={"csrf": csrf(admin, "/admin/policy"), "mode": mode,
                                             "allowed_hosts": allowed, "denied_hosts": denied})


def make_token(admin: TestClient, label: str = "CI", expires_at: str = "") -> str:
    response = admin.post("/admin/policy/tokens", data={"csrf": csrf(admin, "/admin/policy"), "label": label,
                                                        "expires_at": expires_at})
    assert response.status_code == 200, response.text
    found = re.search(r'<p class="secret">([^<]+)</p>', response.text)
    assert found
    return found.group(1)


def test_environment_values_are_the_defaults(admin: TestClient) -> None:
    page = admin.get("/admin/policy")
    assert page.status_code == 200
    assert "environment's defaults" in page.text
    assert 'value="open" checked' in page.text


def test_policy_off_refuses_register_and_drops_the_endpoint_from_metadata(admin: TestClient, db: Database) -> None:
    assert "registration_endpoint" in admin.get(METADATA).json()
    assert register(admin).status_code == 201
    response = save_policy(admin, "off")
    assert response.status_code == 303
    assert "Registration policy saved" in admin.get("/admin/policy").text
    response = register(admin)
    assert response.status_code == 404
    assert response.json() == admin.post("/no-such-route").json()  # like an unknown route
    assert "registration_endpoint" not in admin.get(METADATA).json()
    assert "registration_endpoint" not in admin.get("/.well-known/openid-configuration").json()
    assert sql(db, "SELECT value, updated_by FROM server_settings WHERE key = 'registration.mode'")[0][1] == "root"
    assert sql(db, "SELECT COUNT(*) FROM audit_events WHERE event = 'policy.updated'")[0][0] == 1
    save_policy(admin, "open")
    assert register(admin).status_code == 201
    assert "registration_endpoint" in admin.get(METADATA).json()


def test_policy_token_needs_a_live_console_token(admin: TestClient, db: Database) -> None:
    assert save_policy(admin, "token").status_code == 303
    assert register(admin).status_code == 401
    assert register(admin, "made-up").status_code == 401
    token = make_token(admin, "CI runner")
    assert sql(db, "SELECT token_hash FROM initial_access_tokens")[0][0] != token  # only the hash is stored
    assert token not in admin.get("/admin/policy").text  # shown once
    assert register(admin, token).status_code == 201
    assert sql(db, "SELECT last_used_at FROM initial_access_tokens")[0][0] is not None

    token_id = sql(db, "SELECT id FROM initial_access_tokens")[0][0]
    page = admin.get(f"/admin/policy/tokens/{token_id}/revoke")
    assert "refused from now on" in page.text
    form = next(f for f in parse_forms(page.text) if f.action.endswith("/revoke"))
    assert admin.post(form.action, data=dict(form.fields)).status_code == 303
    assert "revoked" in admin.get("/admin/policy").text
    assert register(admin, token).status_code == 401

    expiring = make_token(admin, "expiring", "2999-01-01")
    assert register(admin, expiring).status_code == 201
    execute(db, "UPDATE initial_access_tokens SET expires_at = :t WHERE label = 'expiring'",
            t=sql(db, "SELECT created_at FROM initial_access_tokens WHERE label = 'expiring'")[0][0])
    assert register(admin, expiring).status_code == 401
    events = [r[0] for r in sql(db, "SELECT event FROM audit_events WHERE event LIKE 'initial_access_token.%' "
                                    "ORDER BY id")]
    assert events == ["initial_access_token.created", "initial_access_token.revoked", "initial_access_token.created"]


def test_environment_token_still_works_in_token_mode(db_url: str, db: Database) -> None:
    settings = make_settings(db_url, policy_cache_seconds=0, registration="token",
                             registration_initial_access_token="let-me-in-please")
    with TestClient(create_app(settings, db=db), base_url=ISSUER, follow_redirects=False) as client:
        assert register(client).status_code == 401
        assert register(client, "let-me-in-please").status_code == 201


def test_token_form_errors_keep_the_input(admin: TestClient, db: Database) -> None:
    token = csrf(admin, "/admin/policy")
    response = admin.post("/admin/policy/tokens", data={"csrf": token, "label": "", "expires_at": ""})
    assert response.status_code == 400 and 'id="e-label"' in response.text
    response = admin.post("/admin/policy/tokens", data={"csrf": token, "label": "CI", "expires_at": "tomorrow"})
    assert response.status_code == 400 and 'id="e-expires_at"' in response.text
    assert 'value="CI"' in response.text and 'value="tomorrow"' in response.text
    response = admin.post("/admin/policy/tokens", data={"csrf": token, "label": "CI", "expires_at": "2001-01-01"})
    assert response.status_code == 400 and "in the future" in response.text
    assert count(db, "initial_access_tokens") == 0


def test_invalid_host_pattern_is_shown_next_to_its_field(admin: TestClient, db: Database) -> None:
    response = save_policy(admin, "open", allowed="*.example.com", denied="https://evil.example/path")
    assert response.status_code == 400
    assert 'id="e-denied_hosts"' in response.text and "not a host name pattern" in response.text
    assert "https://evil.example/path" in response.text and "*.example.com" in response.text
    assert count(db, "server_settings") == 0


def test_stored_deny_pattern_refuses_a_metadata_document_client(admin: TestClient, db: Database) -> None:
    # Nothing listens on port 9: without a pattern the fetch fails; with one it is never tried.
    client_id = "http://127.0.0.1:9/client.json"
    _, challenge = pkce_pair()
    params = authorize_params(client_id, challenge, redirect_uri=LOOPBACK)
    before = admin.get("/authorize", params=params)
    assert before.status_code == 400 and "not accepted here" not in before.text
    assert save_policy(admin, "open", denied="127.0.0.*").status_code == 303
    after = admin.get("/authorize", params=params)
    assert after.status_code == 400 and "location" not in after.headers
    assert "not accepted here" in after.text
    assert save_policy(admin, "open", allowed="*.example.com").status_code == 303
    assert "not accepted here" in admin.get("/authorize", params=params).text


def test_auditor_reads_the_policy_and_cannot_change_it(client: TestClient, db: Database) -> None:
    seed(db)
    make_user(db, "root", "admin")
    make_user(db, "eve", "auditor")
    with db.session() as s:
        from authserver.policy import repository as policy

        row, _ = policy.create_token(s, "existing", None, by="root")
        token_id = row.id
    assert sign_in(client, "eve").status_code == 303
    assert client.get("/admin/policy").status_code == 200
    assert client.get(f"/admin/policy/tokens/{token_id}/revoke").status_code == 200
    token = csrf(client, f"/admin/policy/tokens/{token_id}/revoke")
    assert client.post("/admin/policy", data={"csrf": token, "mode": "off"}).status_code == 403
    assert client.post("/admin/policy/tokens", data={"csrf": token, "label": "x"}).status_code == 403
    assert client.post(f"/admin/policy/tokens/{token_id}/revoke", data={"csrf": token}).status_code == 403
    assert count(db, "server_settings") == 0 and count(db, "initial_access_tokens") == 1
    assert sql(db, "SELECT revoked_at FROM initial_access_tokens")[0][0] is None


def test_anonymous_plain_user_and_csrf(client: TestClient, db: Database, app: Any) -> None:
    seed(db)
    make_user(db, "root", "admin")
    assert client.get("/admin/policy").headers["location"] == "/login?next=/admin/policy"
    with browser(app, "alice") as alice:
        assert alice.get("/admin/policy").status_code == 403
    make_user(db, "root2", "admin")
    with browser(app, "root2") as other:
        foreign = csrf(other, "/admin/policy")
    assert sign_in(client, "root", PASSWORD).status_code == 303
    for data in ({}, {"csrf": foreign}):
        assert client.post("/admin/policy", data={**data, "mode": "off"}).status_code == 403
    assert count(db, "server_settings") == 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_policy_cache_serves_memory_within_its_bound(db: Database, db_url: str) -> None:
    from authserver.policy import repository as policy

    clock = Clock()
    cache = PolicyCache(db, make_settings(db_url), max_age=5.0, clock=clock)
    assert cache.current().mode == "open" and not cache.current().saved
    with db.session() as s:
        policy.save(s, "off", [], [], by="root")
    clock.now = 4.9
    assert cache.current().mode == "open"  # within the bound: memory, no query
    clock.now = 5.0
    assert cache.current().mode == "off"
    with db.session() as s:
        policy.save(s, "token", [], [], by="root")
    cache.invalidate()
    assert cache.current().mode == "token"
