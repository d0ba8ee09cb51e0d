"""Per-client IP allow-lists (token, introspection, revocation), the console's allow-list
(AUTHSERVER_ADMIN_ALLOWED_IPS), and `authserver serve` trusting forwarded addresses only by
AUTHSERVER_TRUSTED_PROXIES. TestClient's ``client=`` sets the connection's peer address."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.catalog import repository as catalog
from authserver.cli.serve import proxy_environment
from authserver.clients import repository as clients
from authserver.db import Database
from authserver.errors import FieldError
from authserver.oauth.client_assertion import JWT_BEARER
from authserver.settings import ConfigError, load_settings
from tests.admin_pages import make_user, sign_in
from tests.conftest import ISSUER, TEST_SECRET, make_settings
from tests.live import wait_healthy
from tests.oauth_helpers import RESOURCE, sql

INSIDE, OUTSIDE = ("192.0.2.7", 1234), ("203.0.113.5", 1234)
ALLOWED = ["192.0.2.0/24", "2001:db8::/32"]


def make_client(db: Database, allowed_ips: list[str], **spec: Any) -> tuple[str, str | None]:
    with db.session() as s:
        if catalog.get_scopes(s, ["read:calendar"]) == {}:
            catalog.create_scope(s, "read:calendar", "See your calendar events")
            catalog.create_resource(s, RESOURCE, "Calendar", ["read:calendar"])
        created = clients.create_client(s, clients.NewClient(
            name="Calendar MCP server", grant_types=["client_credentials"], scopes=["read:calendar"],
            resources=[RESOURCE], can_introspect=True, allowed_ips=allowed_ips, **spec))
        return created.client.client_id, created.client_secret


@contextmanager
def peer(app: Any, address: tuple[str, int]) -> Iterator[TestClient]:
    with TestClient(app, base_url=ISSUER, client=address, follow_redirects=False) as client:
        yield client


def refused(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"


def audited_refusals(db: Database, client_id: str) -> list[tuple[Any, ...]]:
    return sql(db, "SELECT ip, outcome FROM audit_events WHERE event = 'client_auth.refused' AND client_id = :c",
               c=client_id)


def test_allow_listed_client_from_another_address_is_refused_everywhere(app: Any, db: Database) -> None:
    client_id, secret = make_client(db, ALLOWED)
    creds = (client_id, secret or "")
    with peer(app, INSIDE) as inside:
        access = inside.post("/token", data={"grant_type": "client_credentials"}, auth=creds)
        assert access.status_code == 200, access.text
        token = access.json()["access_token"]
    with peer(app, OUTSIDE) as outside:
        refused(outside.post("/token", data={"grant_type": "client_credentials"}, auth=creds))
        refused(outside.post("/introspect", data={"token": token}, auth=creds))
        refused(outside.post("/revoke", data={"token": token}, auth=creds))
        # client_secret_post is the same client, from the same wrong place.
        refused(outside.post("/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                             "client_secret": secret or ""}))
        # A wrong secret from outside gets the same answer: nothing is learnt about the secret.
        refused(outside.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, "wrong")))
    # Nothing changed: the token is still active, as seen from inside.
    with peer(app, INSIDE) as inside:
        info = inside.post("/introspect", data={"token": token}, auth=creds)
        assert info.status_code == 200 and info.json()["active"] is True
    # The lifespan has flushed the audit buffer: each refusal is a failure event with the address.
    rows = audited_refusals(db, client_id)
    assert len(rows) == 5 and set(rows) == {(OUTSIDE[0], "failure")}
    assert sql(db, "SELECT COUNT(*) FROM audit_events WHERE event = 'token.issued' AND client_id = :c",
               c=client_id) == [(1,)]


def test_allow_listed_client_is_allowed_from_inside_over_ipv6(app: Any, db: Database) -> None:
    client_id, secret = make_client(db, ALLOWED)
    with peer(app, ("2001:db8:5::1", 1234)) as inside:
        assert inside.post("/token", data={"grant_type": "client_credentials"},
                           auth=(client_id, secret or "")).status_code == 200
    with peer(app, ("2001:db9::1", 1234)) as outside:
        refused(outside.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or "")))


def test_client_without_allow_list_works_from_anywhere(app: Any, db: Database) -> None:
    client_id, secret = make_client(db, [])
    with peer(app, OUTSIDE) as outside:
        assert outside.post("/token", data={"grant_type": "client_credentials"},
                            auth=(client_id, secret or "")).status_code == 200


def test_private_key_jwt_client_from_another_address_is_refused_before_its_jti_is_spent(
        app: Any, db: Database) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key())), "kid": "k"}
    client_id, _ = make_client(db, ALLOWED, auth_method="private_key_jwt", jwks={"keys": [public]})
    now = int(time.time())
    assertion = jwt.encode({"iss": client_id, "sub": client_id, "aud": ISSUER, "iat": now, "exp": now + 60,
                            "jti": uuid.uuid4().hex}, private, algorithm="ES256", headers={"kid": "k"})
    data = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER, "client_assertion": assertion}
    with peer(app, OUTSIDE) as outside:
        refused(outside.post("/token", data=data))
    with peer(app, INSIDE) as inside:
        assert inside.post("/token", data=data).status_code == 200
    assert audited_refusals(db, client_id) == [(OUTSIDE[0], "failure")]


@pytest.mark.parametrize("trusted", [False, True])
def test_spoofed_forwarded_for_gets_in_only_behind_a_trusted_proxy(db_url: str, db: Database, trusted: bool) -> None:
    client_id, secret = make_client(db, ALLOWED)
    app = create_app(make_settings(db_url, trusted_proxies=["203.0.113.0/24"] if trusted else []), db=db)
    with peer(app, OUTSIDE) as via_proxy:
        response = via_proxy.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or ""),
                                  headers={"X-Forwarded-For": INSIDE[0]})
        introspect = via_proxy.post("/introspect", data={"token": "x.y.z"}, auth=(client_id, secret or ""),
                                    headers={"X-Forwarded-For": INSIDE[0]})
    if trusted:
        assert response.status_code == 200 and introspect.status_code == 200
    else:
        refused(response)
        refused(introspect)


def test_allow_list_is_an_operator_setting_validated_as_cidr(db: Database) -> None:
    with pytest.raises(FieldError, match="not an IP address"):
        make_client(db, ["192.0.2.0/33"])
    client_id, _ = make_client(db, [])
    with db.session() as s:
        assert clients.set_allowed_ips(s, client_id, ["192.0.2.9", "10.0.0.0/8"]).allowed_ips == [
            "192.0.2.9/32", "10.0.0.0/8"]


def test_dynamic_registration_cannot_set_an_allow_list(client: TestClient, db: Database) -> None:
    response = client.post("/register", json={"redirect_uris": ["https://app.example.com/cb"],
                                              "allowed_ips": ["0.0.0.0/0"]})
    assert response.status_code == 201
    assert "allowed_ips" not in response.json()
    assert sql(db, "SELECT allowed_ips FROM clients WHERE client_id = :c",
               c=response.json()["client_id"])[0][0] in ([], "[]")


# ---- the console ------------------------------------------------------------------------------

def test_admin_from_outside_the_admin_allow_list_is_forbidden_even_signed_in(db_url: str, db: Database) -> None:
    make_user(db, "root", "admin")
    app = create_app(make_settings(db_url, admin_allowed_ips=["192.0.2.0/24"]), db=db)
    with peer(app, INSIDE) as inside:
        assert sign_in(inside, "root", next_path="/admin").status_code == 303
        assert inside.get("/admin").status_code == 200
        assert inside.get("/admin/clients").status_code == 200
        cookies = dict(inside.cookies)
    with peer(app, OUTSIDE) as outside:
        outside.cookies.update(cookies)  # the same signed-in browser, somewhere else
        for path in ("/admin", "/admin/clients", "/admin/users", "/admin/keys", "/admin/audit"):
            page = outside.get(path)
            assert page.status_code == 403, path
            assert "location" not in page.headers  # a page, not a redirect to sign in
            assert "cannot be reached from this address" in page.text
        post = outside.post("/admin/clients", data={"name": "x", "csrf": "anything"})
        assert post.status_code == 403
    with peer(app, OUTSIDE) as anonymous:
        assert anonymous.get("/admin").status_code == 403
        # The rest of the server is not fenced.
        assert anonymous.get("/.well-known/oauth-authorization-server").status_code == 200
    assert sql(db, "SELECT COUNT(*) FROM clients") == [(0,)]


def test_bad_admin_allow_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="AUTHSERVER_ADMIN_ALLOWED_IPS"):
        load_settings(admin_allowed_ips=["console.example.com"])


# ---- authserver serve ---------------------------------------------------------------------------

def test_proxy_headers_is_a_shorthand_for_trusted_proxies() -> None:
    assert proxy_environment(False, {"FORWARDED_ALLOW_IPS": "10.0.0.1"}) == {}
    assert proxy_environment(True, {}) == {"AUTHSERVER_TRUSTED_PROXIES": '["127.0.0.1", "::1"]'}
    assert proxy_environment(True, {"FORWARDED_ALLOW_IPS": "10.0.0.1, 10.0.0.2"}) == {
        "AUTHSERVER_TRUSTED_PROXIES": '["10.0.0.1", "10.0.0.2"]'}
    assert proxy_environment(True, {"FORWARDED_ALLOW_IPS": "*"}) == {
        "AUTHSERVER_TRUSTED_PROXIES": '["0.0.0.0/0", "::/0"]'}
    # Our own setting, when set, is the rule.
    assert proxy_environment(True, {"AUTHSERVER_TRUSTED_PROXIES": '["10.0.0.0/8"]',
                                    "FORWARDED_ALLOW_IPS": "*"}) == {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("args", "extra_env", "believed"), [
    (["--proxy-headers"], {}, True),  # shorthand: loopback is the trusted proxy
    ([], {}, False),  # no proxy trusted at all
    # Our setting wins, and uvicorn no longer rewrites the address on its own (FORWARDED_ALLOW_IPS
    # defaults to 127.0.0.1 there): a peer outside AUTHSERVER_TRUSTED_PROXIES is not believed.
    (["--proxy-headers"], {"AUTHSERVER_TRUSTED_PROXIES": '["10.0.0.0/8"]'}, False),
])
def test_serve_believes_forwarded_for_only_by_trusted_proxies(db_url: str, db: Database, args: list[str],
                                                              extra_env: dict[str, str], believed: bool) -> None:
    client_id, secret = make_client(db, ["198.51.100.0/24"])
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_") and k != "FORWARDED_ALLOW_IPS"}
    env.update({"AUTHSERVER_DATABASE_URL": db_url, "AUTHSERVER_ISSUER": url, "AUTHSERVER_SECRET_KEY": TEST_SECRET,
                **extra_env})
    server = subprocess.Popen([sys.executable, "-m", "authserver.cli", "serve", "--port", str(port), *args],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url, lambda: server.poll() is None)
        response = httpx.post(f"{url}/token", data={"grant_type": "client_credentials"},
                              auth=(client_id, secret or ""), headers={"X-Forwarded-For": "198.51.100.9"})
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert response.status_code == (200 if believed else 401), response.text
