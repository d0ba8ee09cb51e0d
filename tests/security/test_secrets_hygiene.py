"""Nothing secret in the logs or in the database, on SQLite and on PostgreSQL.

A real ``authserver serve --access-log`` at ``AUTHSERVER_LOG_LEVEL=debug``, its stdout and stderr
in one file, is driven over HTTP through every feature: registration (RFC 7591) and its read
and update (RFC 7592); the code flow through the real sign-in and consent pages, after the link
was opened in another browser, a forged form and a wrong password; refresh rotation, a race
within the grace window and reuse after it; ``client_secret_basic`` (once in a query string),
DPoP, ``private_key_jwt``; wrong credentials of each kind; introspection, tool-call reports,
revocation; the stand-alone sign-in (a password typed as the username), the account page and its
password change, setting up two-step verification and a sign-in with a code; the console (a
person's passwords, a rotated client secret, an initial access token).

Every secret sent or received on the way is collected by httpx hooks (form fields, credentials,
DPoP proofs, client assertions, cookies, tokens, codes, CSRF values, interaction ids, secrets a
console page shows once), plus the passwords, the private keys' ``d``, the secret key and the
server's signing keys. After a graceful stop (``SIGTERM``: the audit buffer flushes), none of
them, raw, URL- or JSON-encoded, nor a JWT's signature alone, may appear in a log line or in any
column of any table. The test also checks that it saw what it scanned: the access-log lines and
the app's own messages, the audit events, the stored hashes of the tokens.
"""
from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

import httpx
import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import MetaData, select

from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.db import Database
from authserver.keys.crypto import KeyEncryptor
from authserver.keys.ring import all_keys
from authserver.logconfig import redact_target
from authserver.oauth.client_assertion import JWT_BEARER
from authserver.secrets import hash_secret
from authserver.users import repository as users
from tests.conftest import TEST_SECRET
from tests.live import wait_healthy
from tests.oauth_helpers import RESOURCE, parse_forms, pkce_pair, query
from tests.security.dpop_helpers import DPoPKey, b64url

PASSWORD = "Alice's-r1ght-passphrase-4hygiene"
NEW_PASSWORD = "Alice's-n3w-passphrase-after-change"
ADMIN_PASSWORD = "R00t's-admin-passphrase-4hygiene"
WRONG_PASSWORD = "Wr0ng-guess-0f-alice's-passphrase"
CAROL_PASSWORD = "Carol's-f1rst-passphrase-from-admin"
CAROL_RESET = "Carol's-r3set-passphrase-from-admin"
PASSWORD_AS_USERNAME = "Tr0ub4dor&3-typed-as-the-username"  # people type passwords in the username box
TOOL_ARGUMENT = "Alice's private appointment with her doctor"  # a tool call's argument: the person's data
REDIRECT = "https://app.example.com/callback"
DYNAMIC_REDIRECT = "https://agent.example.com/cb"
SCOPES = "read:calendar offline_access"
KEY_ID = "hygiene-k1"
REUSE_GRACE = 2  # seconds in which a rotated refresh token coming back is a race, not reuse

# Form fields and JSON members that carry a secret, wherever they are sent or answered.
SECRET_FIELDS = frozenset({"password", "current_password", "new_password", "confirm_password", "code",
                           "code_verifier", "refresh_token", "access_token", "token", "client_secret",
                           "client_assertion", "csrf", "registration_access_token"})
SECRET_COOKIES = ("authserver_session", "authserver_browser", "authserver_second_step")
# A TOTP code (6 digits, good for one 30 s step, once) is too short to search for without false
# alarms; the key it is made from is collected instead (``totp_secret``, shown by the set-up page).
TOTP_CODE = re.compile(r"[0-9]{6}")
TOTP_SECRET = re.compile(r'<code id="totp-secret">([A-Z2-7]{16,})</code>')
CSRF_VALUE = re.compile(r'name="csrf" value="([^"]+)"')
SHOWN_ONCE = re.compile(r'<p class="secret"[^>]*>\s*([^<\s]+)\s*</p>')  # the console's new secrets


class Secrets:
    """Every secret value seen, each with where it was first seen; httpx hooks collect them."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def add(self, label: str, value: str | None) -> None:
        if value and value not in self.seen:
            assert len(value) >= 16, f"{label} is too short to search for without false alarms: {value!r}"
            kind, _, where = label.partition(" ")
            number = sum(seen.startswith(f"{kind} #") for seen in self.seen.values()) + 1
            self.seen[value] = f"{kind} #{number} {where}"

    def kinds(self) -> set[str]:
        return {label.split(" ", 1)[0] for label in self.seen.values()}

    def on_request(self, request: httpx.Request) -> None:
        where = f"{request.method} {request.url.path}"
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            for name, value in parse_qsl(request.content.decode(), keep_blank_values=True):
                if name in SECRET_FIELDS and not (name == "code" and TOTP_CODE.fullmatch(value)):
                    self.add(f"{name} (sent to {where})", value)
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            self.add(f"basic_credentials (sent to {where})", credentials)
            self.add(f"client_secret (in the Basic header to {where})",
                     base64.b64decode(credentials).decode().partition(":")[2])
        elif credentials:
            self.add(f"{scheme.lower()}_token (sent to {where})", credentials)
        self.add(f"dpop_proof (sent to {where})", request.headers.get("dpop"))

    def on_response(self, response: httpx.Response) -> None:
        response.read()
        where = f"{response.request.method} {response.request.url.path}"
        for cookie in response.headers.get_list("set-cookie"):
            name, _, rest = cookie.partition("=")
            if name.endswith(SECRET_COOKIES):
                self.add(f"cookie {name} (set by {where})", rest.split(";", 1)[0].strip('"'))
        location = response.headers.get("location")
        if location:
            path = urlsplit(location).path
            if "/interaction/" in path:
                self.add(f"interaction_id (from {where})", path.split("/interaction/", 1)[1].split("/", 1)[0])
            self.add(f"code (in the redirect from {where})", query(location).get("code"))
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            body = response.json()
            if isinstance(body, dict):
                for name in SECRET_FIELDS & body.keys():
                    self.add(f"{name} (answered by {where})", body[name])
        elif content_type.startswith("text/html"):
            for value in CSRF_VALUE.findall(response.text):
                self.add(f"csrf (on the page {where})", value)
            for value in SHOWN_ONCE.findall(response.text):
                self.add(f"console_secret (shown once by {where})", value)
            for value in TOTP_SECRET.findall(response.text):
                self.add(f"totp_secret (shown by {where})", value)

    def needles(self) -> dict[str, str]:
        """Each secret in the encodings a leak would take: raw, URL-encoded, JSON-escaped, and a JWT's
        signature alone (its header and payload are not secret by themselves)."""
        out: dict[str, str] = {}
        for value, label in self.seen.items():
            forms = [(value, label), (quote(value, safe=""), f"{label}, URL-encoded"),
                     (quote_plus(value), f"{label}, form-encoded"), (json.dumps(value)[1:-1], f"{label}, JSON-escaped")]
            parts = value.split(".")
            if len(parts) == 3 and len(parts[2]) >= 16:
                forms.append((parts[2], f"{label}, its signature"))
            for needle, where in forms:
                out.setdefault(needle, where)
        return out


@dataclass
class Seeded:
    web: tuple[str, str]
    machine: tuple[str, str]
    introspector: tuple[str, str]
    key_client: str
    key: Any  # the key client's private key (ec.EllipticCurvePrivateKey), registered under KEY_ID
    dpop: DPoPKey = field(default_factory=DPoPKey)


def seed(db: Database, found: Secrets) -> Seeded:
    key = ec.generate_private_key(ec.SECP256R1())
    public = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())), "kid": KEY_ID, "use": "sig"}
    with db.session() as s:
        catalog.create_scope(s, "read:calendar", "See your calendar events")
        catalog.create_scope(s, "write:calendar", "Change your calendar events", write=True)
        catalog.create_resource(s, RESOURCE, "Calendar", ["read:calendar", "write:calendar"])
        web = clients.create_client(s, clients.NewClient(
            name="Web Agent", redirect_uris=[REDIRECT], scopes=["read:calendar"], resources=[RESOURCE]))
        machine = clients.create_client(s, clients.NewClient(
            name="Nightly sync", grant_types=["client_credentials"], scopes=["read:calendar"], resources=[RESOURCE]))
        rs = clients.create_client(s, clients.NewClient(
            name="Calendar MCP server", grant_types=["client_credentials"], resources=[RESOURCE], can_introspect=True))
        keyed = clients.create_client(s, clients.NewClient(
            name="Key agent", grant_types=["client_credentials"], scopes=["read:calendar"], resources=[RESOURCE],
            auth_method="private_key_jwt", jwks={"keys": [public]}))
        users.create_user(s, "alice", PASSWORD)
        users.create_user(s, "root", ADMIN_PASSWORD, ["admin"])
    assert web.client_secret and machine.client_secret and rs.client_secret
    seeded = Seeded((web.client.client_id, web.client_secret), (machine.client.client_id, machine.client_secret),
                    (rs.client.client_id, rs.client_secret), keyed.client.client_id, key)
    for label, value in (("client_secret (seeded web client)", web.client_secret),
                         ("client_secret (seeded machine client)", machine.client_secret),
                         ("client_secret (seeded resource server client)", rs.client_secret),
                         ("password (alice's)", PASSWORD), ("password (alice's new one)", NEW_PASSWORD),
                         ("password (the admin's)", ADMIN_PASSWORD), ("password (the wrong one)", WRONG_PASSWORD),
                         ("password (typed as a username)", PASSWORD_AS_USERNAME),
                         ("tool_argument (the person's data, sent in a refused tool-call report)", TOOL_ARGUMENT),
                         ("private_key_d (the private_key_jwt key)",
                          json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))["d"]),
                         ("private_key_d (the DPoP key)", seeded.dpop.private_jwk["d"])):
        found.add(label, value)
    return seeded


def server_secrets(db: Database, found: Secrets) -> None:
    """The secret key, and each signing key's private half (PEM and ``d``), decrypted as the server does."""
    found.add("secret_key (AUTHSERVER_SECRET_KEY)", TEST_SECRET)
    encryptor = KeyEncryptor(TEST_SECRET)
    with db.session() as s:
        keys = all_keys(s)
        assert keys, "the server made no signing key"
        for key in keys:
            pem = encryptor.decrypt(key.private_key_encrypted, key.kid.encode())
            private = serialization.load_pem_private_key(pem, password=None)
            assert isinstance(private, ec.EllipticCurvePrivateKey)
            found.add(f"signing_key_pem (of {key.kid})", "".join(pem.decode().splitlines()[1:-1]))
            found.add(f"private_key_d (of the signing key {key.kid})",
                      b64url(private.private_numbers().private_value.to_bytes(32, "big")))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(db_url: str, log: Path, **extra: str) -> Iterator[str]:
    """``authserver serve --access-log`` at debug level, its output in ``log``; stopped with SIGTERM.
    ``extra``: more environment (``AUTHSERVER_LOG_FORMAT="json"``)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AUTHSERVER_DATABASE_URL": db_url, "AUTHSERVER_ISSUER": url,
           "AUTHSERVER_SECRET_KEY": TEST_SECRET, "AUTHSERVER_LOG_LEVEL": "debug",
           "AUTHSERVER_REFRESH_REUSE_GRACE": str(REUSE_GRACE), **extra}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "authserver.cli", "serve", "--port", str(port),
                                    "--access-log"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, lambda: process.poll() is None)
        yield url
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def browser(url: str, found: Secrets) -> httpx.Client:
    return httpx.Client(base_url=url, follow_redirects=False, timeout=30,
                        event_hooks={"request": [found.on_request], "response": [found.on_response]})


def form_on(page: httpx.Response, action: str) -> dict[str, str]:
    """The fields (CSRF token included) of the page's form whose action contains ``action``."""
    form = next(f for f in parse_forms(page.text) if action in f.action)
    return dict(form.fields)


def action_of(page: httpx.Response, action: str) -> str:
    return next(f.action for f in parse_forms(page.text) if action in f.action)


def authorize(http: httpx.Client, client_id: str, redirect_uri: str, *, password: str | None = None,
              stranger: httpx.Client | None = None) -> tuple[str, str]:
    """The code flow through the real pages: /authorize → sign-in (when asked) → consent → the code;
    the code and its PKCE verifier. With a ``stranger`` (another browser), the mishaps of a sign-in
    first: the link opened in that browser, a forged form, a wrong password."""
    verifier, challenge = pkce_pair()
    response = http.get("/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "resource": RESOURCE,
        "scope": SCOPES, "code_challenge": challenge, "code_challenge_method": "S256", "state": "hygiene-state"})
    assert response.status_code == 303, response.text
    page = http.get(response.headers["location"])
    if 'name="password"' in page.text:
        assert password is not None
        fields = form_on(page, "/login")
        if stranger is not None:
            elsewhere = stranger.get(response.headers["location"])
            assert elsewhere.status_code == 403, elsewhere.text
            forged = http.post(action_of(page, "/login"), data={**fields, "csrf": "forged-" + fields["csrf"][::-1],
                                                              "username": "alice", "password": password})
            assert forged.status_code == 403, forged.text
            refused = http.post(action_of(page, "/login"), data={**fields, "username": "alice",
                                                                "password": WRONG_PASSWORD})
            assert refused.status_code == 401 and 'name="password"' in refused.text, refused.text
            fields = form_on(refused, "/login")
            page = refused
        response = http.post(action_of(page, "/login"), data={**fields, "username": "alice", "password": password})
        assert response.status_code == 303, response.text
        page = http.get(response.headers["location"])
    form = next(f for f in parse_forms(page.text) if "consent" in f.action)
    ticked = [value for name, value, checked in form.checkboxes if name == "scope" and checked]
    assert "offline_access" in ticked, page.text
    response = http.post(form.action, data={**dict(form.fields), "scope": ticked, "decision": "allow"})
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(redirect_uri), location
    return query(location)["code"], verifier


def tokens(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def sign_in(http: httpx.Client, username: str, password: str, next_path: str) -> httpx.Response:
    """The stand-alone sign-in page (for /account and /admin)."""
    page = http.get("/login", params={"next": next_path})
    return http.post(action_of(page, "/login"), data={**form_on(page, "/login"), "username": username,
                                                    "password": password})


def drive(url: str, seeded: Seeded, found: Secrets) -> None:
    """Every feature, over HTTP, as clients and people use them."""
    token_url = f"{url}/token"
    with browser(url, found) as http, browser(url, found) as machine:
        # RFC 7591 registration, then RFC 7592 read and update with the registration access token.
        metadata = {"client_name": "Hygiene Agent", "redirect_uris": [DYNAMIC_REDIRECT],
                    "token_endpoint_auth_method": "client_secret_basic",
                    "grant_types": ["authorization_code", "refresh_token"], "scope": SCOPES}
        registered = machine.post("/register", json=metadata)
        assert registered.status_code == 201, registered.text
        dynamic = registered.json()
        dynamic_auth = (dynamic["client_id"], dynamic["client_secret"])
        read = machine.get(f"/register/{dynamic['client_id']}",
                           headers={"Authorization": f"Bearer {dynamic['registration_access_token']}"})
        assert read.status_code == 200, read.text
        updated = machine.put(f"/register/{dynamic['client_id']}",
                              headers={"Authorization": f"Bearer {dynamic['registration_access_token']}"},
                              json={**metadata, "client_name": "Hygiene Agent 2", "client_id": dynamic["client_id"],
                                    "client_secret": dynamic["client_secret"]})
        assert updated.status_code == 200, updated.text

        # The code flow for the registered client: its mishaps, the right password, consent, tokens.
        with browser(url, found) as stranger:
            code, verifier = authorize(http, dynamic["client_id"], DYNAMIC_REDIRECT, password=PASSWORD,
                                       stranger=stranger)
        first = tokens(machine.post("/token", auth=dynamic_auth, data={
            "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": DYNAMIC_REDIRECT}))
        # Rotation; the rotated token again within the grace window (a race: the same answer, kept
        # sealed meanwhile), then after it: reuse, the family is revoked.
        second = tokens(machine.post("/token", auth=dynamic_auth, data={
            "grant_type": "refresh_token", "refresh_token": first["refresh_token"]}))
        assert second["refresh_token"] != first["refresh_token"]
        raced = tokens(machine.post("/token", auth=dynamic_auth, data={
            "grant_type": "refresh_token", "refresh_token": first["refresh_token"]}))
        assert raced["refresh_token"] == second["refresh_token"]
        time.sleep(REUSE_GRACE + 0.2)
        reused = machine.post("/token", auth=dynamic_auth, data={
            "grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant", reused.text
        after = machine.post("/token", auth=dynamic_auth, data={
            "grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
        assert after.status_code == 400, after.text

        # The seeded confidential client: already signed in, consent, and a DPoP-bound code exchange.
        code, verifier = authorize(http, seeded.web[0], REDIRECT)
        web = tokens(machine.post("/token", auth=seeded.web, headers={"DPoP": seeded.dpop.proof(htu=token_url)},
                                  data={"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                                        "redirect_uri": REDIRECT}))
        assert web["token_type"] == "DPoP" and web.get("refresh_token"), web

        # client_credentials: client_secret_basic, with and without DPoP; private_key_jwt.
        bearer = tokens(machine.post("/token", auth=seeded.machine, data={"grant_type": "client_credentials"}))
        bound = tokens(machine.post("/token", auth=seeded.machine, headers={"DPoP": seeded.dpop.proof(htu=token_url)},
                                    data={"grant_type": "client_credentials"}))
        assert bound["token_type"] == "DPoP", bound
        # Wrong credentials of every kind, each refused: what a guesser sends is kept nowhere either.
        guess = secrets.token_urlsafe
        assert machine.post("/token", auth=(seeded.machine[0], guess(32)),
                            data={"grant_type": "client_credentials"}).status_code == 401
        assert machine.post("/token", auth=seeded.web, data={"grant_type": "refresh_token",
                                                             "refresh_token": guess(32)}).status_code == 400
        assert machine.post("/token", auth=seeded.web, data={
            "grant_type": "authorization_code", "code": guess(32), "code_verifier": guess(48),
            "redirect_uri": REDIRECT}).status_code == 400
        assert machine.get(f"/register/{dynamic['client_id']}",
                           headers={"Authorization": f"Bearer {guess(32)}"}).status_code == 401
        # A careless client puts its secret in the query string: refused, and the access log drops it.
        careless = machine.post("/token", params={"client_id": seeded.machine[0], "client_secret": seeded.machine[1]},
                                data={"grant_type": "client_credentials"})
        assert careless.status_code == 401, careless.text

        def assertion(aud: str) -> str:
            now = int(time.time())
            return jwt.encode({"iss": seeded.key_client, "sub": seeded.key_client, "aud": aud, "iat": now,
                               "exp": now + 60, "jti": uuid.uuid4().hex}, seeded.key, algorithm="ES256",
                              headers={"kid": KEY_ID})

        keyed = tokens(machine.post("/token", data={
            "grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion(url)}))

        # Introspection by the resource server's client; revocation; introspection again.
        for access in (web["access_token"], bearer["access_token"], bound["access_token"], keyed["access_token"]):
            info = machine.post("/introspect", auth=seeded.introspector, data={"token": access})
            assert info.status_code == 200 and info.json()["active"] is True, info.text
        # The MCP server reports a tool call under the person's token; one report that also carries
        # the call's arguments (the person's data) is refused whole.
        reported = machine.post("/tool-calls", auth=seeded.introspector, json={
            "token": web["access_token"], "tool": "create_event", "outcome": "success"})
        assert reported.status_code == 204, reported.text
        nosy = machine.post("/tool-calls", auth=seeded.introspector, json={
            "token": web["access_token"], "tool": "create_event", "outcome": "success",
            "arguments": {"title": TOOL_ARGUMENT}})
        assert nosy.status_code == 400, nosy.text
        assert machine.post("/revoke", auth=seeded.web, data={"token": web["refresh_token"]}).status_code == 200
        assert machine.post("/revoke", auth=seeded.machine, data={"token": bearer["access_token"]}).status_code == 200
        revoked = machine.post("/revoke", data={"token": keyed["access_token"], "client_assertion_type": JWT_BEARER,
                                                "client_assertion": assertion(token_url)})
        assert revoked.status_code == 200, revoked.text
        for access in (bearer["access_token"], keyed["access_token"]):
            info = machine.post("/introspect", auth=seeded.introspector, data={"token": access})
            assert info.json() == {"active": False}, info.text
        refresh = machine.post("/introspect", auth=seeded.web, data={"token": web["refresh_token"]})
        assert refresh.json() == {"active": False}, refresh.text

    # The stand-alone sign-in: a password typed as the username, then the account page and a
    # password change; the console, signed in as its admin.
    with browser(url, found) as person, browser(url, found) as admin:
        failed = sign_in(person, PASSWORD_AS_USERNAME, PASSWORD, "/account")
        assert failed.status_code == 401 and 'name="password"' in failed.text, failed.text
        assert sign_in(person, "alice", PASSWORD, "/account").status_code == 303
        account = person.get("/account")
        assert account.status_code == 200 and "Hygiene Agent 2" in account.text, account.text
        page = person.get("/account/password")
        changed = person.post(action_of(page, "/account/password"), data={
            **form_on(page, "/account/password"), "current_password": PASSWORD, "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD})
        assert changed.status_code == 303, changed.text
        # Two-step verification: set up with a code made from the key the page shows, then a
        # sign-in in another browser with the password and the code of the next time step.
        setup = person.get("/account/two-step")
        began = person.post(action_of(setup, "/two-step/begin"), data=form_on(setup, "/two-step/begin"))
        setup = person.get(began.headers["location"])
        shown = TOTP_SECRET.search(setup.text)
        assert shown, setup.text
        confirmed = person.post(action_of(setup, "/two-step/confirm"), data={
            **form_on(setup, "/two-step/confirm"), "code": pyotp.TOTP(shown.group(1)).now()})
        assert confirmed.status_code == 200 and "recovery-codes" in confirmed.text, confirmed.text
        with browser(url, found) as later:
            asked = sign_in(later, "alice", NEW_PASSWORD, "/account")
            assert asked.status_code == 303, asked.text
            step = later.get(asked.headers["location"])
            done = later.post(action_of(step, "/second-factor"), data={
                **form_on(step, "/second-factor"), "code": pyotp.TOTP(shown.group(1)).at(time.time() + 30)})
            assert done.status_code == 303 and later.get("/account").status_code == 200, done.text
        assert sign_in(admin, "root", ADMIN_PASSWORD, "/admin").status_code == 303
        for path in ("/admin", "/admin/clients", "/admin/audit", "/admin/users"):
            assert admin.get(path).status_code == 200, path
        console(admin, seeded)


def console(admin: httpx.Client, seeded: Seeded) -> None:
    """The console's secrets: a person made with a password and given another, a client's secret
    rotated (shown once, then used), an initial access token made (shown once)."""
    page = admin.get("/admin/users/new")
    created = admin.post(action_of(page, "/admin/users/new"), data={
        **form_on(page, "/admin/users/new"), "username": "carol", "password": CAROL_PASSWORD, "role": "user"})
    assert created.status_code == 303, created.text
    person = created.headers["location"]
    page = admin.get(person)
    reset = admin.post(action_of(page, "/password"), data={**form_on(page, "/password"), "password": CAROL_RESET})
    assert reset.status_code == 303, reset.text
    page = admin.get("/admin/clients/rotate", params={"client_id": seeded.machine[0]})
    rotated = admin.post(action_of(page, "/admin/clients/rotate"), data=form_on(page, "/admin/clients/rotate"))
    assert rotated.status_code == 200, rotated.text
    secret = SHOWN_ONCE.findall(rotated.text)
    assert len(secret) == 1, rotated.text
    with httpx.Client(base_url=str(admin.base_url), event_hooks=admin.event_hooks) as machine:
        tokens(machine.post("/token", auth=(seeded.machine[0], secret[0]), data={"grant_type": "client_credentials"}))
    page = admin.get("/admin/policy")
    made = admin.post(action_of(page, "/admin/policy/tokens"), data={
        **form_on(page, "/admin/policy/tokens"), "label": "Hygiene agents", "expires_at": ""})
    assert made.status_code == 200 and len(SHOWN_ONCE.findall(made.text)) == 1, made.text


# ---- the scan -----------------------------------------------------------------------------------

def database_cells(db: Database) -> Iterator[tuple[str, str]]:
    """(table.column, the value as text) for every non-empty cell of every table."""
    metadata = MetaData()
    metadata.reflect(db.engine)
    with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for column, value in zip(table.columns, row, strict=True):
                    if value is None:
                        continue
                    if isinstance(value, bytes | memoryview):
                        text = bytes(value).decode("utf-8", "replace")
                    elif isinstance(value, dict | list):
                        text = json.dumps(value, ensure_ascii=False)
                    else:
                        text = str(value)
                    yield f"{table.name}.{column.name}", text


def leaks(places: Iterable[tuple[str, str]], needles: dict[str, str]) -> list[tuple[str, str]]:
    """(which secret, where) for each needle found; the secret itself is left out."""
    pattern = re.compile("|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))
    return [(needles[match.group()], place) for place, text in places for match in pattern.finditer(text)]


def summary(leaked: list[tuple[str, str]], per_secret: int = 3) -> str:
    """At most ``per_secret`` places for each leaked secret, and how many more."""
    by_secret: dict[str, list[str]] = {}
    for secret, place in leaked:
        by_secret.setdefault(secret, []).append(place)
    out = [f"{len(by_secret)} secret(s) leaked, {len(leaked)} time(s):"]
    for secret, places in by_secret.items():
        out.append(f"- {secret}, in:")
        out.extend(f"    {place}" for place in places[:per_secret])
        if len(places) > per_secret:
            out.append(f"    … and {len(places) - per_secret} more")
    return "\n".join(out)


def log_places(lines: list[str], needles: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Each log line, named by its number and its text with every secret replaced (so a failure
    message can say where without repeating the secret)."""
    pattern = re.compile("|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))
    for number, line in enumerate(lines, 1):
        shown = pattern.sub("<secret>", line)
        yield f"log line {number}: {shown[:160]}", line


def test_no_secret_reaches_the_logs_or_the_database(db: Database, db_url: str, tmp_path: Path) -> None:
    found = Secrets()
    seeded = seed(db, found)
    log = tmp_path / "server.log"
    with server(db_url, log) as url:
        drive(url, seeded, found)
    server_secrets(db, found)

    # Not vacuous: every kind of secret was collected, the log has the requests, the database the events.
    assert {"password", "code", "code_verifier", "refresh_token", "access_token", "client_secret",
            "registration_access_token", "client_assertion", "csrf", "interaction_id", "dpop_proof",
            "basic_credentials", "private_key_d", "cookie", "secret_key", "signing_key_pem",
            "console_secret", "totp_secret"} <= found.kinds(), found.kinds()
    lines = log.read_text("utf-8", "replace").splitlines()
    text = "\n".join(lines)
    for request in ('"POST /register HTTP/1.1" 201', '"GET /register/', '"PUT /register/',
                    '"GET /authorize?<query> HTTP/1.1" 303', '"GET /interaction/<id> HTTP/1.1" 200',
                    '"POST /interaction/<id>/login HTTP/1.1" 401',
                    '"POST /interaction/<id>/consent HTTP/1.1" 303', '"POST /login HTTP/1.1" 401',
                    '"POST /token?<query> HTTP/1.1" 401', '"POST /token HTTP/1.1" 200', '"POST /token HTTP/1.1" 400',
                    '"POST /introspect HTTP/1.1" 200', '"POST /tool-calls HTTP/1.1" 204',
                    '"POST /tool-calls HTTP/1.1" 400', '"POST /revoke HTTP/1.1" 200', '"GET /account HTTP/1.1" 200',
                    '"POST /account/password HTTP/1.1" 303', '"POST /login/second-factor HTTP/1.1" 303',
                    '"GET /admin HTTP/1.1" 200',
                    '"POST /admin/clients/rotate?<query> HTTP/1.1" 200'):
        assert request in text, f"no access-log line with {request!r}"
    # The app's own messages are there too (the reasons for refused requests, at info).
    for message in ("authserver: authserver serving issuer", "authserver.errors: oauth error invalid_grant on /token",
                    "authserver.errors: oauth error invalid_client on /token",
                    "authserver.errors: error page 'Request from another browser' on /interaction/<id>:",
                    "authserver.errors: error page 'Form expired' on /interaction/<id>/login:",
                    "Application shutdown complete"):
        assert message in text, f"no log line with {message!r}"
    cells = list(database_cells(db))
    events = {value for place, value in cells if place == "audit_events.event"}
    assert {"client.registered", "login.failed", "login.succeeded", "consent.granted", "code.issued",
            "token.issued", "token.refreshed", "token.refresh_race", "token.reuse_detected", "token.revoked",
            "password.changed", "user.created", "user.password_reset", "client.secret_rotated",
            "initial_access_token.created", "tool.called", "mfa.enrolled", "mfa.challenged"} <= events, events
    # The sealed successor response of the raced rotation (AES-GCM) is among the cells scanned.
    assert "refresh_tokens.successor_response" in {place for place, _ in cells}
    # What is stored as a hash (and still there) is there as its hash: the scan read those rows.
    stored = {value for _, value in cells}
    hashed = [label for label in found.seen.values() if label.startswith("console_secret")
              or (label.startswith(("refresh_token", "registration_access_token", "client_secret"))
                  and "(answered by" in label)]
    assert len(hashed) >= 6, hashed
    missing = [label for value, label in found.seen.items() if label in hashed and hash_secret(value) not in stored]
    assert not missing, f"not in the database as hashes: {missing}"

    needles = found.needles()
    leaked = leaks(log_places(lines, needles), needles) + leaks(cells, needles)
    if leaked:
        pytest.fail(summary(leaked), pytrace=False)


def test_json_logs_are_one_object_a_line_and_carry_no_secret(db: Database, db_url: str, tmp_path: Path) -> None:
    """The same drive with ``AUTHSERVER_LOG_FORMAT=json``: every line of the server's output is one JSON
    object; the app's access lines name route templates (never a path, a query string or an interaction
    id) with status, latency, request id and, once authenticated, the client; the audit events are
    lines too; and no secret appears anywhere."""
    found = Secrets()
    seeded = seed(db, found)
    log = tmp_path / "server.log"
    with server(db_url, log, AUTHSERVER_LOG_FORMAT="json") as url:
        drive(url, seeded, found)
    server_secrets(db, found)
    lines = log.read_text("utf-8", "replace").splitlines()
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"log line {number} is not JSON: {line[:200]}", pytrace=False)
        assert isinstance(entry, dict) and {"ts", "level", "logger", "message"} <= set(entry), line[:200]
        parsed.append(entry)
    access = [e for e in parsed if e["logger"] == "authserver.access"]
    routes = {(e["method"], e["route"], e["status"]) for e in access}
    for expected in (("GET", "/authorize", 303), ("GET", "/interaction/{rid}", 200),
                     ("POST", "/interaction/{rid}/login", 401), ("POST", "/interaction/{rid}/consent", 303),
                     ("POST", "/token", 200), ("POST", "/token", 401), ("POST", "/introspect", 200),
                     ("POST", "/register", 201), ("GET", "/register/{client_id}", 200)):
        assert expected in routes, (expected, sorted(routes, key=str))
    for entry in access:
        assert entry["request_id"] and isinstance(entry["latency_ms"], float)
        assert "?" not in entry["route"] and "<" not in entry["route"], entry
        assert not re.search(r"/interaction/(?!\{rid\})", entry["route"]), entry
    assert any(e["route"] == "/token" and e["client_id"] == seeded.web[0] for e in access)
    events = {e["event"] for e in parsed if e["logger"] == "authserver.events"}
    assert {"login.failed", "login.succeeded", "consent.granted", "token.issued", "token.refreshed",
            "token.reuse_detected", "client.registered"} <= events, events
    assert any(e["logger"] == "authserver.errors" and e.get("request_id") for e in parsed)
    needles = found.needles()
    leaked = leaks(log_places(lines, needles), needles)
    if leaked:
        pytest.fail(summary(leaked), pytrace=False)


def test_the_access_log_writes_paths_without_query_strings_or_interaction_ids() -> None:
    assert redact_target("/authorize?client_id=a&code_challenge=b") == "/authorize?<query>"
    assert redact_target("/auth/interaction/F-QHlWP04EiKDnGp3on9Xw/login") == "/auth/interaction/<id>/login"
    assert redact_target("/interaction/F-QHlWP04EiKDnGp3on9Xw?x=1") == "/interaction/<id>?<query>"
    assert redact_target("/token") == "/token"
    assert redact_target("/token?") == "/token?<query>"


def test_a_websocket_handshake_to_an_interaction_url_leaves_no_secret_in_the_log(db_url: str, tmp_path: Path) -> None:
    """uvicorn logs WebSocket handshakes itself, outside the access log's redaction: a handshake to
    ``/interaction/<id>?client_secret=…`` wrote the id and the query in full at the default INFO level."""
    log = tmp_path / "serve.log"
    rid, value = secrets.token_urlsafe(16), secrets.token_urlsafe(24)
    with server(db_url, log) as url:
        host, port = urlsplit(url).hostname or "", urlsplit(url).port or 0
        with socket.create_connection((host, port), timeout=10) as sock:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall((f"GET /interaction/{rid}?client_secret={value} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                          "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            assert sock.recv(64).startswith(b"HTTP/1.1 ")
    text = log.read_text(errors="replace")
    assert "/interaction/" in text  # the request was logged (redacted), so the scan below means something
    assert rid not in text and value not in text, [line for line in text.splitlines() if rid in line or value in line]
