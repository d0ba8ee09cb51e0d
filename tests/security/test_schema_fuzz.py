"""Schemathesis against the machine-facing JSON endpoints: no input gets a 5xx, on either database.

The schema is ``openapi.yaml`` beside this file (hand-written: FastAPI's OpenAPI is off and would
not describe the hot lane or form bodies). Each operation is fuzzed against a real uvicorn server
on 127.0.0.1 (``tests/live.py``) bound to a fresh SQLite or PostgreSQL database, with data that
fits the schema and data that does not (schemathesis' positive and negative modes). Half of the
requests carry real credentials (a confidential client's Basic auth, a registration access
token), so the fuzzing gets past client authentication into the grant, introspection and
registration code. Checks: no 5xx (``not_a_server_error``) and, where a documented status came
back, the body has the documented shape (``response_schema_conformance``: OAuth errors carry an
``error`` code, token responses an ``access_token``).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, openapi
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from authserver.app import create_app
from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.db import Database
from authserver.oauth.params import has_control_characters
from tests.conftest import make_settings
from tests.live import serve

SPEC = Path(__file__).with_name("openapi.yaml")
METHODS = ("get", "put", "post", "delete")
OPERATIONS = [(path, method.upper()) for path, item in yaml.safe_load(SPEC.read_text())["paths"].items()
              for method in item if method in METHODS]
RESOURCE = "https://calendar.example.com/mcp"
REDIRECT = "https://app.example.com/callback"
# Per operation and database; 13 operations x 2 databases x this = the requests of one run.
MAX_EXAMPLES = 40
CHECKS = [not_a_server_error, response_schema_conformance]


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


class Target:
    """A live server on a fresh database, a confidential client and a way to register more."""

    def __init__(self, base: str, client_id: str, secret: str) -> None:
        self.base = base
        self.basic = _basic(client_id, secret)
        self.http = httpx.Client(base_url=base)

    def register(self) -> tuple[str, str]:
        """A new dynamic client: its id and registration access token."""
        answer = self.http.post("/register", json={"redirect_uris": [REDIRECT], "client_name": "fuzz"})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        return body["client_id"], body["registration_access_token"]

    def access_token(self) -> str:
        answer = self.http.post("/token", data={"grant_type": "client_credentials", "resource": RESOURCE},
                                headers={"Authorization": self.basic})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])


@pytest.fixture
def target(db_url: str) -> Any:
    db = Database(db_url)
    with db.session() as s:
        catalog.create_scope(s, "read:calendar", "See your calendar events")
        catalog.create_resource(s, RESOURCE, "Calendar", ["read:calendar"])
        created = clients.create_client(s, clients.NewClient(
            name="Fuzzer", redirect_uris=[REDIRECT], scopes=["read:calendar"], resources=[RESOURCE],
            grant_types=["authorization_code", "refresh_token", "client_credentials"],
            default_scopes=["read:calendar"], can_introspect=True))
        client_id, secret = created.client.client_id, created.client_secret
    assert secret
    # Registrations per IP and hour are limited; the fuzzer registers far more than a person would.
    def make_app(base: str) -> Any:
        return create_app(make_settings(db_url, issuer=base, registration_rate_limit=0), db=db)

    try:
        with serve(make_app) as base:
            target = Target(base, client_id, secret)
            yield target
            target.http.close()
    finally:
        db.dispose()


def _strategy(path: str, method: str) -> st.SearchStrategy[Any]:
    operation = openapi.from_path(SPEC)[path][method]
    return st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))


def _tame(body: Any, token: str | None) -> Any:
    """The generated body without the fields every endpoint refuses first (names or values with control
    characters), and with a real access token where a token goes, so requests reach the code behind."""
    if not isinstance(body, dict):
        return body
    tame = {k: v for k, v in body.items()
            if not has_control_characters(k) and not (isinstance(v, str) and has_control_characters(v))}
    if token is not None and "token" in tame:
        tame["token"] = token
    return tame


def _authenticate(case: Any, target: Target, path: str, real_token: bool) -> None:
    """Real credentials instead of the generated ones; the body is fuzzed past the control-character gate."""
    headers = dict(case.headers or {})
    if case.method == "POST" and path in ("/token", "/introspect", "/revoke"):
        case.body = _tame(case.body, target.access_token() if real_token else None)
    if path.startswith("/register/"):
        client_id, token = target.register()
        case.path_parameters = {**(case.path_parameters or {}), "client_id": client_id}
        headers["Authorization"] = f"Bearer {token}"
        if isinstance(case.body, dict) and case.method == "PUT":
            case.body.setdefault("client_id", client_id)
    elif path == "/tool-calls":
        headers["Authorization"] = target.basic
        if isinstance(case.body, dict):
            case.body["token"] = target.access_token()
    elif path != "/register":
        headers["Authorization"] = target.basic
    case.headers = headers


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_no_input_gets_a_server_error(target: Target, path: str, method: str) -> None:
    @settings(max_examples=MAX_EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.function_scoped_fixture])
    @given(case=_strategy(path, method), real_credentials=st.booleans(), real_token=st.booleans())
    def run(case: Any, real_credentials: bool, real_token: bool) -> None:
        if real_credentials:
            _authenticate(case, target, path, real_token)
        response = case.call(base_url=target.base)
        case.validate_response(response, checks=CHECKS)

    run()


def test_lone_surrogates_in_registration_are_refused_not_a_server_error(target: Target) -> None:
    """JSON may escape a lone surrogate (\\ud800); it is no Unicode text and must be invalid_client_metadata."""
    for body in ('{"redirect_uris": ["https://app.example.com/cb\\ud800"]}',
                 '{"redirect_uris": ["https://app.example.com/cb"], "client_name": "a\\udc00"}'):
        answer = target.http.post("/register", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 400, (body, answer.status_code)
