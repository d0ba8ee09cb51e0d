"""/metrics: the counters move by exactly what a real flow did, labels never carry a raw path, and
the token (AUTHSERVER_METRICS_TOKEN) and the switch (AUTHSERVER_METRICS) are honoured."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.clients import repository as clients
from authserver.db import Database
from tests.conftest import ISSUER, make_settings
from tests.live import wait_healthy
from tests.oauth_helpers import (
    RESOURCE,
    authorize_params,
    exchange,
    login,
    pkce_pair,
    run_flow,
    seed,
    start,
)
from tests.test_cli import Cli, _env

TOKEN = "metrics-token-0123456789abcdef"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient, token: str | None = TOKEN) -> Samples:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def moved(before: Samples, after: Samples, prefix: str = "authserver_") -> Samples:
    """Every sample that changed (counters only: ``_total``), by how much."""
    return {key: after[key] - before.get(key, 0.0) for key in after
            if key[0].startswith(prefix) and key[0].endswith("_total") and after[key] != before.get(key, 0.0)}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def metered(db_url: str, db: Database) -> Iterator[TestClient]:
    settings = make_settings(db_url, metrics_token=TOKEN, refresh_reuse_grace=0, cimd_allow_loopback_http=True)
    with TestClient(create_app(settings, db=db), base_url=ISSUER, follow_redirects=False) as client:
        yield client


def test_counters_move_by_exactly_what_a_flow_did(metered: TestClient, db: Database) -> None:
    client = metered
    world = seed(db)
    with db.session() as s:
        rs = clients.create_client(s, clients.NewClient(
            name="Calendar MCP server", grant_types=["client_credentials"], resources=[RESOURCE], can_introspect=True))
        machine = clients.create_client(s, clients.NewClient(
            name="Nightly sync", grant_types=["client_credentials"], scopes=["read:calendar"], resources=[RESOURCE]))
    assert rs.client_secret and machine.client_secret
    rs_auth = (rs.client.client_id, rs.client_secret)
    before = scrape(client)

    # authorize → sign in → consent → code → tokens
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge))
    code = parse_qs(urlsplit(location).query)["code"][0]
    first = exchange(client, code, verifier, world.public_id)
    assert first.status_code == 200, first.text
    # refresh, then the old refresh token again: reuse detected (no grace window here)
    refresh = {"grant_type": "refresh_token", "client_id": world.public_id}
    second = client.post("/token", data={**refresh, "refresh_token": first.json()["refresh_token"]})
    assert second.status_code == 200, second.text
    assert client.post("/token", data={**refresh, "refresh_token": first.json()["refresh_token"]}).status_code == 400
    # a client_credentials token, introspected (active), and a forged token (inactive)
    machine_token = client.post("/token", data={"grant_type": "client_credentials", "resource": RESOURCE},
                                auth=(machine.client.client_id, machine.client_secret))
    assert machine_token.status_code == 200, machine_token.text
    active = client.post("/introspect", data={"token": machine_token.json()["access_token"]}, auth=rs_auth)
    assert active.json()["active"] is True
    assert client.post("/introspect", data={"token": "not.a.token"}, auth=rs_auth).json() == {"active": False}
    # a failed sign-in (in another browser: this one is signed in)
    client.cookies.clear()
    page = client.get(start(client, authorize_params(world.public_id, challenge)).headers["location"])
    assert login(client, page.text, password="wrong password").status_code == 401
    # a registration (RFC 7591)
    registered = client.post("/register", json={"client_name": "Agent", "redirect_uris": ["http://127.0.0.1/cb"],
                                                "token_endpoint_auth_method": "none"})
    assert registered.status_code == 201, registered.text
    # a metadata document that cannot be fetched (nothing listens there)
    document = f"http://127.0.0.1:{closed_port()}/client.json"
    assert start(client, authorize_params(document, challenge)).status_code in (400, 401)

    after = scrape(client)
    changes = moved(before, after)
    requests = {(dict(labels)["route"], dict(labels)["method"], dict(labels)["status"]): n
                for (name, labels), n in changes.items() if name == "authserver_http_requests_total"}
    others = {(name, labels): n for (name, labels), n in changes.items() if name != "authserver_http_requests_total"}
    assert others == {
        ("authserver_tokens_issued_total", (("grant_type", "authorization_code"),)): 1,
        ("authserver_tokens_issued_total", (("grant_type", "refresh_token"),)): 1,
        ("authserver_tokens_issued_total", (("grant_type", "client_credentials"),)): 1,
        ("authserver_events_total", (("event", "login.succeeded"),)): 1,
        ("authserver_events_total", (("event", "consent.granted"),)): 1,
        ("authserver_events_total", (("event", "code.issued"),)): 1,
        ("authserver_events_total", (("event", "token.issued"),)): 2,
        ("authserver_events_total", (("event", "token.refreshed"),)): 1,
        ("authserver_events_total", (("event", "token.reuse_detected"),)): 1,
        ("authserver_events_total", (("event", "login.failed"),)): 1,
        ("authserver_events_total", (("event", "client.registered"),)): 1,
        ("authserver_introspections_total", (("result", "active"),)): 1,
        ("authserver_introspections_total", (("result", "inactive"),)): 1,
        ("authserver_metadata_document_fetches_total", (("result", "failed"),)): 1,
    }, others
    assert requests[("/token", "POST", "200")] == 3
    assert requests[("/token", "POST", "400")] == 1
    assert requests[("/introspect", "POST", "200")] == 2
    assert requests[("/register", "POST", "201")] == 1
    assert requests[("/authorize", "GET", "303")] == 2
    assert requests[("/metrics", "GET", "200")] == 1  # the first scrape
    # Route templates only: no interaction id, no query string, no code in any label.
    routes = {route for route, _, _ in requests}
    assert "/interaction/{rid}/login" in routes, routes
    for (_, labels) in after:
        for _, value in labels:
            assert "?" not in value and code not in value
            assert not (value.startswith("/interaction/") and "{" not in value), value
    # The latency histogram counted the same requests.
    token_latency = ("authserver_http_request_duration_seconds_count", (("method", "POST"), ("route", "/token")))
    assert after[token_latency] - before.get(token_latency, 0) == 4


def test_metrics_need_the_token_when_one_is_set(metered: TestClient) -> None:
    assert metered.get("/metrics").status_code == 401
    wrong = metered.get("/metrics", headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
    assert wrong.status_code == 401 and "authserver_" not in wrong.text
    assert metered.get("/metrics", headers={"Authorization": TOKEN}).status_code == 401  # no Bearer
    scrape(metered)


@pytest.mark.parametrize(("overrides", "served"), [
    ({"metrics": "off"}, False),
    ({"metrics": "on"}, True),
    ({}, True),  # auto, on a loopback http issuer: development
    ({"issuer": "https://auth.example.com"}, False),  # auto, https without a token: not published
    ({"issuer": "https://auth.example.com", "metrics_token": TOKEN}, True),
])
def test_the_metrics_switch(db_url: str, db: Database, overrides: dict[str, str], served: bool) -> None:
    settings = make_settings(db_url, **overrides)
    with TestClient(create_app(settings, db=db), base_url=settings.issuer) as client:
        token = overrides.get("metrics_token")
        response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
        assert response.status_code == (200 if served else 404), response.text
        assert ("authserver_http_requests_total" in response.text) is served
        assert client.get("/login").headers["x-request-id"]


def test_request_ids_are_honoured_or_made(metered: TestClient) -> None:
    given = metered.get("/healthz", headers={"X-Request-Id": "lb-1234.abc"})
    assert given.headers["x-request-id"] == "lb-1234.abc"
    page = metered.get("/login", headers={"X-Request-Id": "lb-5678"})  # the pages' lane too
    assert page.headers["x-request-id"] == "lb-5678"
    made = {metered.get("/login").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3
    bad = metered.get("/login", headers={"X-Request-Id": "two words" * 20}).headers["x-request-id"]
    assert " " not in bad and len(bad) < 40
    # The hot lane makes one only for what is logged: an error answer (its reason is a log line).
    assert "x-request-id" not in metered.get("/healthz").headers
    refused = metered.post("/token", data={"grant_type": "client_credentials"}, auth=("nobody", "wrong"))
    assert refused.status_code == 401 and refused.headers["x-request-id"] not in made


def test_workers_are_added_up_and_their_directory_removed(tmp_path: Path) -> None:
    """``serve --workers 2``: whichever worker answers a scrape reports every worker's requests
    (PROMETHEUS_MULTIPROC_DIR, made by serve in the temporary directory and removed when it stops)."""
    env = _env(f"sqlite:///{tmp_path / 'serve.db'}", AUTHSERVER_METRICS_TOKEN=TOKEN, TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    cli = Cli(env, tmp_path)
    cli.ok("init")
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "authserver.cli", "serve", "--port", str(port), "--workers", "2"],
                              env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    # Refused token requests: an error answer carries a request id made by the worker (its prefix).
    refused = ("authserver_http_requests_total", (("method", "POST"), ("route", "/token"), ("status", "400")))

    def scraped() -> Samples:
        response = httpx.get(f"{url}/metrics", headers=headers)
        assert response.status_code == 200, response.text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(response.text) for s in family.samples}

    try:
        wait_healthy(url, lambda: server.poll() is None)
        assert next(p.name for p in (tmp_path / "tmp").iterdir()).startswith("authserver-metrics-")
        time.sleep(1.5)  # what the health checks left is handed over
        before = scraped().get(refused, 0.0)
        answered_by: dict[str, int] = {}
        sent = 0
        # A new connection each time: the workers share the socket, either may accept it.
        while sent < 40 or (len(answered_by) < 2 and sent < 400):
            response = httpx.post(f"{url}/token", data={"grant_type": "password"})
            assert response.status_code == 400, response.text
            sent += 1
            prefix = response.headers["x-request-id"].split("-")[0]  # per process
            answered_by[prefix] = answered_by.get(prefix, 0) + 1
        assert len(answered_by) == 2, answered_by  # both workers served some
        time.sleep(1.5)  # each worker hands its tally over within a second
        assert {scraped().get(refused, 0.0) - before for _ in range(6)} == {float(sent)}  # whichever scrapes
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert list((tmp_path / "tmp").iterdir()) == []
