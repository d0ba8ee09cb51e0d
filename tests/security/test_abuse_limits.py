"""Abuse limits per address and per client, on both databases and both limit back ends:
registration floods, metadata-document fetch floods, token request floods."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.db import Database
from tests.live import json_server
from tests.oauth_helpers import REDIRECT, RESOURCE, authorize_params, count, pkce_pair
from tests.security.conftest import headers, limited_client

LOOPBACK = "http://127.0.0.1:9/callback"


def register(client: Any, ip: str) -> Any:
    return client.post("/register", json={"redirect_uris": [LOOPBACK], "token_endpoint_auth_method": "none",
                                          "client_name": "Flood"}, headers=headers(ip))


def assert_rate_limited(response: Any) -> None:
    """429, Retry-After, an OAuth-style JSON error body, never cached."""
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"] == "temporarily_unavailable"


def test_registration_flood_from_one_address_is_refused_and_another_address_is_not(
        db_url: str, db: Database, limit_backend: dict[str, Any]) -> None:
    with limited_client(db_url, db, limit_backend, registration_rate_limit=3) as client:
        for _ in range(3):
            assert register(client, "198.51.100.20").status_code == 201
        assert_rate_limited(register(client, "198.51.100.20"))
        assert register(client, "198.51.100.21").status_code == 201
        # IPv6: one /64 is one address.
        assert register(client, "2001:db8:5:5::1").status_code == 201
        assert register(client, "2001:db8:5:5::2").status_code == 201
        assert register(client, "2001:db8:5:5:ffff::3").status_code == 201
        assert_rate_limited(register(client, "2001:db8:5:5::4"))
    assert count(db, "clients") == 7


@pytest.fixture
def document_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback server answering every path with a valid metadata document for its URL; the paths it was asked."""
    asked: list[str] = []
    served_at: list[str] = []

    def answer(path: str) -> dict[str, Any]:
        asked.append(path)
        return {"client_id": served_at[0] + path, "client_name": "Flood Agent", "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none"}

    with json_server(answer) as base:
        served_at.append(base)
        yield base, asked


def test_metadata_document_fetch_flood_from_one_address_is_refused(
        db_url: str, db: Database, limit_backend: dict[str, Any], document_server: tuple[str, list[str]]) -> None:
    """A page (or a script) sending many URLs as client_id makes us fetch only so many of them."""
    base, asked = document_server
    _, challenge = pkce_pair()
    with limited_client(db_url, db, limit_backend, cimd_allow_loopback_http=True, cimd_fetch_rate_limit=3) as client:
        def authorize(path: str, ip: str) -> Any:
            return client.get("/authorize", params=authorize_params(f"{base}{path}", challenge,
                                                                    redirect_uri=REDIRECT), headers=headers(ip))

        for n in range(3):
            assert authorize(f"/agent-{n}.json", "203.0.113.30").status_code == 303
        refused = authorize("/agent-3.json", "203.0.113.30")
        assert refused.status_code == 400 and "not available yet" in refused.text
        for n in range(4, 10):
            authorize(f"/agent-{n}.json", "203.0.113.30")
        assert asked == ["/agent-0.json", "/agent-1.json", "/agent-2.json"]
        # A document already fetched is served from the cache and costs the address nothing.
        assert authorize("/agent-0.json", "203.0.113.30").status_code == 303
        # Another address may still have the refused URL fetched: nothing was cached for it.
        assert authorize("/agent-3.json", "203.0.113.31").status_code == 303
        assert asked[-1] == "/agent-3.json" and len(asked) == 4


def machine_clients(db: Database) -> list[tuple[str, str]]:
    with db.session() as s:
        catalog.create_scope(s, "read:calendar", "See your calendar events")
        catalog.create_resource(s, RESOURCE, "Calendar", ["read:calendar"])
        made = [clients.create_client(s, clients.NewClient(name=f"Nightly sync {n}", grant_types=["client_credentials"],
                                                           scopes=["read:calendar"], resources=[RESOURCE]))
                for n in range(2)]
    return [(m.client.client_id, m.client_secret or "") for m in made]


def test_token_request_flood_from_one_client_is_refused_and_other_clients_are_not(
        db_url: str, db: Database, limit_backend: dict[str, Any]) -> None:
    flooding, quiet = machine_clients(db)
    with limited_client(db_url, db, limit_backend, token_rate_limit=5, limits_sync_seconds=0.05) as client:
        def token(creds: tuple[str, str]) -> Any:
            return client.post("/token", data={"grant_type": "client_credentials", "scope": "read:calendar"},
                               auth=creds)

        assert [token(flooding).status_code for _ in range(5)] == [200] * 5
        assert_rate_limited(token(flooding))
        assert token(quiet).status_code == 200
        # The counts reached the shared store (what another node would see at its next sync).
        services = client.app.state.services
        services.token_rate.sync()
        from authserver.limits.shared import _digest

        assert services.limits.peek("token:" + _digest(flooding[0])).count == 5
        # A wrong secret is refused before counting: nobody spends another client's budget.
        assert token((quiet[0], "wrong")).status_code == 401
        assert services.limits.peek("token:" + _digest(quiet[0])).count <= 1


def test_self_registered_client_flooding_token_requests_meets_its_budget_and_operator_clients_do_not(
        db_url: str, db: Database, limit_backend: dict[str, Any]) -> None:
    """Anyone can register a client, so a self-registered one has a token budget by default; a
    client the operator registered has none unless the operator sets one (a busy machine client)."""
    machine, _ = machine_clients(db)
    with limited_client(db_url, db, limit_backend, self_registered_token_rate_limit=5,
                        limits_sync_seconds=0.05) as client:
        registered = register(client, "198.51.100.30")
        assert registered.status_code == 201, registered.text
        dynamic = registered.json()["client_id"]
        guesses = [client.post("/token", data={"grant_type": "authorization_code", "code": f"guess-{n}",
                                               "code_verifier": "v" * 43, "redirect_uri": LOOPBACK,
                                               "client_id": dynamic}) for n in range(6)]
        assert [g.json()["error"] for g in guesses[:5]] == ["invalid_grant"] * 5
        assert_rate_limited(guesses[5])
        for _ in range(30):
            response = client.post("/token", data={"grant_type": "client_credentials", "scope": "read:calendar"},
                                   auth=machine)
            assert response.status_code == 200, response.text
