"""Operators set a client's keys (private_key_jwt) and IP allow-list in the console and with the CLI;
a private key or a malformed block is refused there as at registration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html import unescape
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from authserver import migrate
from authserver.clients.models import Client
from authserver.db import Database
from tests.admin_pages import browser, csrf, make_user
from tests.conftest import TEST_SECRET
from tests.oauth_helpers import sql


def key_pair(kid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key())), "kid": kid}
    return public, {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private)), "kid": kid}


def console_form(**fields: str) -> dict[str, Any]:
    return {"name": "Keyed service", "redirect_uris": "", "grant_type": ["client_credentials"],
            "auth_method": "private_key_jwt", **fields}


def test_console_creates_and_edits_a_private_key_jwt_client_with_an_allow_list(app: Any, db: Database) -> None:
    make_user(db, "root", "admin")
    public, private = key_pair("k1")
    with browser(app, "root") as admin:
        refused = admin.post("/admin/clients", data={**console_form(jwks=json.dumps({"keys": [private]})),
                                                     "csrf": csrf(admin, "/admin/clients/new")})
        assert refused.status_code == 400 and "private member" in refused.text
        bad_ip = admin.post("/admin/clients", data={**console_form(jwks=json.dumps({"keys": [public]}),
                                                                   allowed_ips="10.0.0.0/33"),
                                                    "csrf": csrf(admin, "/admin/clients/new")})
        assert bad_ip.status_code == 400 and "not an IP address" in bad_ip.text
        assert sql(db, "SELECT COUNT(*) FROM clients") == [(0,)]
        created = admin.post("/admin/clients", data={**console_form(jwks=json.dumps({"keys": [public]}),
                                                                    allowed_ips="192.0.2.0/24\n2001:db8::1"),
                                                     "csrf": csrf(admin, "/admin/clients/new")})
        assert created.status_code == 303, created.text  # no secret page: a key client has no secret
        with db.session() as s:
            client = s.query(Client).one()
            assert (client.token_endpoint_auth_method, client.secret_hash) == ("private_key_jwt", None)
            assert client.jwks == {"keys": [public]}
            assert client.allowed_ips == ["192.0.2.0/24", "2001:db8::1/128"]
            client_id = client.client_id
        edit = f"/admin/clients/edit?client_id={client_id}"
        page = admin.get(edit)
        assert "192.0.2.0/24" in page.text and '"k1"' in unescape(page.text)
        moved = admin.post(edit, data={**console_form(jwks_uri="https://keys.example.com/jwks.json", allowed_ips=""),
                                       "csrf": csrf(admin, edit)})
        assert moved.status_code == 303, moved.text
        with db.session() as s:
            client = s.get(Client, client_id)
            assert client is not None
            assert (client.jwks, client.jwks_uri, client.allowed_ips) == (
                None, "https://keys.example.com/jwks.json", [])
        assert admin.get(f"/admin/clients/rotate?client_id={client_id}").status_code == 200
        rotate = admin.post(f"/admin/clients/rotate?client_id={client_id}",
                            data={"csrf": csrf(admin, f"/admin/clients/rotate?client_id={client_id}")})
        assert rotate.status_code == 400  # no secret to rotate


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "authserver.cli", *args], env=env, input=stdin, text=True,
                          capture_output=True, timeout=120)


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env.update({"AUTHSERVER_DATABASE_URL": db_url, "AUTHSERVER_SECRET_KEY": TEST_SECRET,
                "AUTHSERVER_ISSUER": "http://127.0.0.1:8000"})
    return env


def test_cli_sets_and_changes_keys_and_allowed_ips(cli_env: dict[str, str], db: Database, tmp_path: Path) -> None:
    assert migrate.is_current(db)
    public, private = key_pair("k1")
    leaked = _cli(cli_env, "clients", "create", "--name", "svc", "--grant-type", "client_credentials",
                  "--auth-method", "private_key_jwt", "--jwks-file", "-", stdin=json.dumps({"keys": [private]}))
    assert leaked.returncode == 1 and leaked.stderr.startswith("error: ") and "private" in leaked.stderr
    made = _cli(cli_env, "clients", "create", "--name", "svc", "--grant-type", "client_credentials",
                "--auth-method", "private_key_jwt", "--jwks-file", "-", "--allowed-ip", "192.0.2.0/24",
                "--json", stdin=json.dumps({"keys": [public]}))
    assert made.returncode == 0, made.stderr
    row = json.loads(made.stdout)
    assert "client_secret" not in row and row["allowed_ips"] == ["192.0.2.0/24"] and row["jwks_kids"] == ["k1"]
    client_id = row["client_id"]
    new_public, _ = key_pair("k2")
    keys_file = tmp_path / "jwks.json"
    keys_file.write_text(json.dumps({"keys": [new_public]}))
    rotated = _cli(cli_env, "clients", "set-keys", client_id, "--jwks-file", str(keys_file), "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["jwks_kids"] == ["k2"]
    bad = _cli(cli_env, "clients", "set-allowed-ips", client_id, "--allowed-ip", "not-an-address")
    assert bad.returncode == 1 and "not an IP address" in bad.stderr
    cleared = _cli(cli_env, "clients", "set-allowed-ips", client_id, "--json")
    assert cleared.returncode == 0 and json.loads(cleared.stdout)["allowed_ips"] == []
    assert _cli(cli_env, "clients", "rotate-secret", client_id).returncode == 1


def test_dynamic_registration_with_jwks_uri(client: TestClient) -> None:
    body = {"redirect_uris": ["https://app.example.com/cb"], "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": "https://app.example.com/jwks.json", "token_endpoint_auth_signing_alg": "ES256"}
    response = client.post("/register", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["jwks_uri"] == body["jwks_uri"] and "client_secret" not in response.json()
    assert client.post("/register", json={**body, "token_endpoint_auth_signing_alg": "HS256"}).status_code == 400
    assert client.post("/register", json={**body, "token_endpoint_auth_method": "client_secret_basic"}
                       ).status_code == 400  # keys with a secret method would never be used
