"""A Client ID Metadata Document as client_id, through the real authorization flow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.db import Database
from tests.conftest import ISSUER, make_settings
from tests.live import json_server
from tests.oauth_helpers import authorize_params, exchange, pkce_pair, query, run_flow, seed, start
from tests.security.dpop_helpers import DPoPKey

REDIRECT = "http://127.0.0.1:47011/callback"


@pytest.fixture
def documents() -> Iterator[dict[str, dict]]:
    """A loopback server answering each path with the document registered for it."""
    served: dict[str, dict] = {}
    with json_server(served.get) as base:
        served["__base__"] = {"url": base}
        yield served


@pytest.fixture
def cimd_client(db_url: str, db: Database) -> Iterator[TestClient]:
    app = create_app(make_settings(db_url, cimd_allow_loopback_http=True), db=db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as client:
        yield client


def publish(documents: dict[str, dict], path: str, **overrides: object) -> str:
    url = documents["__base__"]["url"] + path
    documents[path] = {"client_id": url, "client_name": "Notes Agent", "redirect_uris": [REDIRECT],
                       "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none",
                       **overrides}
    return url


def test_metadata_document_client_completes_the_flow(cimd_client: TestClient, db: Database,
                                                     documents: dict[str, dict]) -> None:
    seed(db)
    client_id = publish(documents, "/agent.json")
    verifier, challenge = pkce_pair()
    params = authorize_params(client_id, challenge, redirect_uri=REDIRECT, scope="read:calendar offline_access")
    page = cimd_client.get(cimd_client.get("/authorize", params=params).headers["location"])
    location = run_flow(cimd_client, params)
    assert query(location)["iss"] == ISSUER
    token = exchange(cimd_client, query(location)["code"], verifier, client_id, redirect_uri=REDIRECT)
    assert token.status_code == 200, token.text
    assert token.json()["refresh_token"]
    assert "Notes Agent" in page.text


def test_consent_names_the_publishing_host(cimd_client: TestClient, db: Database, documents: dict[str, dict]) -> None:
    seed(db)
    client_id = publish(documents, "/agent.json")
    _, challenge = pkce_pair()
    params = authorize_params(client_id, challenge, redirect_uri=REDIRECT)
    response = cimd_client.get("/authorize", params=params)
    login_page = cimd_client.get(response.headers["location"])
    from tests.oauth_helpers import login

    consent = cimd_client.get(login(cimd_client, login_page.text).headers["location"])
    assert "published by" in consent.text and documents["__base__"]["url"].split("//")[1] in consent.text
    assert "Unverified application" in consent.text


def test_document_with_another_client_id_is_refused(cimd_client: TestClient, db: Database,
                                                    documents: dict[str, dict]) -> None:
    seed(db)
    client_id = publish(documents, "/liar.json", client_id="https://someone-else.example.com/client.json")
    _, challenge = pkce_pair()
    response = start(cimd_client, authorize_params(client_id, challenge, redirect_uri=REDIRECT))
    assert response.status_code == 400 and "location" not in response.headers


def test_redirect_uri_not_in_the_document_is_refused(cimd_client: TestClient, db: Database,
                                                     documents: dict[str, dict]) -> None:
    seed(db)
    client_id = publish(documents, "/agent.json")
    _, challenge = pkce_pair()
    response = start(cimd_client, authorize_params(client_id, challenge, redirect_uri="https://evil.example.com/cb"))
    assert response.status_code == 400 and "location" not in response.headers


def test_loopback_documents_are_off_by_default(client: TestClient, db: Database, documents: dict[str, dict]) -> None:
    seed(db)
    client_id = publish(documents, "/agent.json")
    _, challenge = pkce_pair()
    response = start(client, authorize_params(client_id, challenge, redirect_uri=REDIRECT))
    assert response.status_code == 400 and "location" not in response.headers


def test_loopback_switch_is_refused_with_an_https_issuer(db_url: str) -> None:
    with pytest.raises(ValueError, match="testing switch"):
        make_settings(db_url, issuer="https://auth.example.com", cimd_allow_loopback_http=True)


def test_document_asking_for_dpop_bound_tokens_gets_nothing_without_a_proof(
        cimd_client: TestClient, db: Database, documents: dict[str, dict]) -> None:
    """RFC 9449 §5.2 in a metadata document: a stolen code (or refresh token) is useless without the key."""
    seed(db)
    client_id = publish(documents, "/bound.json", dpop_bound_access_tokens=True)
    verifier, challenge = pkce_pair()
    location = run_flow(cimd_client, authorize_params(client_id, challenge, redirect_uri=REDIRECT,
                                                      scope="read:calendar"))
    code = query(location)["code"]
    refused = exchange(cimd_client, code, verifier, client_id, redirect_uri=REDIRECT)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request", refused.text
    key = DPoPKey()
    token = cimd_client.post("/token", headers={"DPoP": key.proof()}, data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": REDIRECT,
        "client_id": client_id})
    assert token.status_code == 200, token.text  # the refusal spent nothing
    assert token.json()["token_type"] == "DPoP"


def test_document_with_a_non_boolean_dpop_bound_access_tokens_is_refused(
        cimd_client: TestClient, db: Database, documents: dict[str, dict]) -> None:
    seed(db)
    client_id = publish(documents, "/odd.json", dpop_bound_access_tokens="yes")
    _, challenge = pkce_pair()
    response = start(cimd_client, authorize_params(client_id, challenge, redirect_uri=REDIRECT))
    assert response.status_code == 400 and "location" not in response.headers
    assert "dpop_bound_access_tokens" in response.text
