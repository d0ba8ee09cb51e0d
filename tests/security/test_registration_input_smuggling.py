"""Registration input that is not what it looks like: lone UTF-16 surrogates, userinfo and
backslashes in redirect URIs, control characters in names and URIs.

* ``"\\ud800"`` in any string of ``/register`` answered 500 and still stored the client on SQLite
  (PostgreSQL refuses such text at insert): now 400 ``invalid_client_metadata`` before any write.
* ``https://a@b/`` and ``https://good.example\\@evil.example/`` were accepted as redirect URIs:
  browsers and our parser disagree on their host. The one redirect-URI check (``uris``) refuses
  them for registration, metadata documents, the CLI and the console; the consent page shows only
  the redirect's host and port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from starlette.testclient import TestClient

from authserver.clients.metadata_document import MetadataDocumentError, MetadataFetcher
from authserver.db import Database
from authserver.uris import redirect_host
from tests.admin_pages import browser, csrf, make_user
from tests.conftest import TEST_SECRET
from tests.oauth_helpers import count, seed

GOOD = "https://app.example.com/cb"
TRICKY_REDIRECTS = [
    "https://app.example.com@evil.example/cb",
    "https://user:pass@app.example.com/cb",
    "http://127.0.0.1@evil.example/cb",
    "https://app.example.com\\@evil.example/cb",
    "https://evil.example\\app.example.com/cb",
]


def _register_raw(client: TestClient, body: bytes):  # type: ignore[no-untyped-def]
    return client.post("/register", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("body", [
    b'{"redirect_uris": ["https://app.example.com/cb"], "client_name": "\\ud800"}',
    b'{"redirect_uris": ["https://app.example.com/cb"], "client_name": "Agent \\udfff"}',
    b'{"redirect_uris": ["https://app.example.com/cb\\ud800"]}',
    b'{"redirect_uris": ["https://app.example.com/cb"], "contacts": ["a\\ud83d@example.com"]}',
    b'{"redirect_uris": ["https://app.example.com/cb"], "software_id": "\\udc00x"}',
    b'{"redirect_uris": ["https://app.example.com/cb"], "unknown_member": "\\ud800"}',
])
def test_lone_surrogate_anywhere_is_invalid_client_metadata_and_stores_nothing(
        client: TestClient, db: Database, body: bytes) -> None:
    before = count(db, "clients")
    response = _register_raw(client, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_client_metadata"
    assert count(db, "clients") == before
    # A proper pair (an emoji spelled as two escapes) is text and is accepted.
    ok = _register_raw(client, b'{"redirect_uris": ["https://app.example.com/cb"], "client_name": "A \\ud83d\\ude00"}')
    assert ok.status_code == 201 and ok.json()["client_name"] == "A \U0001F600"


@pytest.mark.parametrize("uri", TRICKY_REDIRECTS)
def test_userinfo_or_backslash_redirect_uri_is_refused_at_registration(
        client: TestClient, db: Database, uri: str) -> None:
    before = count(db, "clients")
    response = client.post("/register", json={"redirect_uris": [uri], "token_endpoint_auth_method": "none"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_redirect_uri", uri
    assert count(db, "clients") == before


@pytest.mark.parametrize("field,value", [
    ("client_name", "Agent\u202eevil"), ("client_name", "line\nbreak"), ("contacts", ["ops\x00@example.com"]),
    ("client_uri", "https://app.example.com/\x07"), ("client_uri", "https://trusted.example@evil.example/"),
    ("logo_uri", "https://app.example.com\\evil"),
])
def test_control_characters_and_tricky_uris_in_other_fields_are_refused(
        client: TestClient, db: Database, field: str, value: object) -> None:
    before = count(db, "clients")
    response = client.post("/register", json={"redirect_uris": [GOOD], field: value})
    assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata", (field, value)
    assert count(db, "clients") == before


def test_metadata_document_with_tricky_redirect_or_surrogate_is_refused() -> None:
    fetcher = MetadataFetcher(allow_loopback_http=True)
    url = "https://client.example.com/client.json"
    expires = time.time() + 60
    for doc in ({"client_id": url, "client_name": "Doc", "redirect_uris": [uri]} for uri in TRICKY_REDIRECTS):
        with pytest.raises(MetadataDocumentError):
            fetcher._validate(url, doc, expires)
    for bad in ({"client_name": "Doc\ud800"}, {"client_name": "Doc\u202e"}, {"scope": "read\ud800"},
                {"client_uri": "https://a@b.example/"}):
        doc = {"client_id": url, "client_name": "Doc", "redirect_uris": [GOOD], **bad}
        with pytest.raises(MetadataDocumentError):
            fetcher._validate(url, doc, expires)
    assert fetcher._validate(url, {"client_id": url, "client_name": "Doc", "redirect_uris": [GOOD]}, expires)


def test_cli_refuses_userinfo_and_backslash_redirect_uris(db: Database, db_url: str) -> None:
    env = {**os.environ, "AUTHSERVER_DATABASE_URL": db_url, "AUTHSERVER_SECRET_KEY": TEST_SECRET}
    for uri in TRICKY_REDIRECTS[:1] + TRICKY_REDIRECTS[3:4]:
        result = subprocess.run([sys.executable, "-m", "authserver.cli", "clients", "create", "--name", "Tricky",
                                 "--public", "--redirect-uri", uri], env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert "userinfo" in result.stderr or "backslash" in result.stderr
    assert count(db, "clients") == 0


def test_console_refuses_userinfo_redirect_uri(app, db: Database) -> None:  # type: ignore[no-untyped-def]
    seed(db)
    make_user(db, "root", "admin")
    before = count(db, "clients")
    with browser(app, "root") as admin:
        for uri in TRICKY_REDIRECTS:
            response = admin.post("/admin/clients", data={
                "csrf": csrf(admin, "/admin/clients/new"), "name": "Tricky", "redirect_uris": uri,
                "grant_type": ["authorization_code"], "auth_method": "none"})
            assert response.status_code == 400 and "error-redirect_uris" in response.text, uri
    assert count(db, "clients") == before


def test_consent_page_shows_only_the_redirect_host() -> None:
    # Clients stored before this check existed may still hold such URIs: the page never shows userinfo.
    assert redirect_host("https://app.example.com@evil.example:8443/cb?x=1") == "evil.example:8443"
    assert redirect_host("http://127.0.0.1:53127/callback") == "127.0.0.1:53127"
    assert redirect_host("http://[::1]:9/cb") == "[::1]:9"
