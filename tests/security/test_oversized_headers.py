"""Request headers are bounded: over 16 KB in all, or over 100 of them, is 431 (RFC 6585 §5).

The attack: a multi-megabyte header (or thousands of small ones) parsed, logged and stored on every
request. uvicorn's httptools parser (``authserver serve``, the Docker image) has no limit of its
own, so ``middleware.HeaderLimit`` refuses such requests in both stacks: the hot lane (token,
metadata, JWKS, health) and the FastAPI pages.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
from starlette.testclient import TestClient

from authserver.db import Database
from tests.conftest import TEST_SECRET
from tests.live import wait_healthy

HOT_AND_PAGE_PATHS = ("/healthz", "/.well-known/oauth-authorization-server", "/jwks.json", "/login", "/authorize")


def test_a_header_over_16_kb_is_431_on_both_stacks(client: TestClient) -> None:
    for path in HOT_AND_PAGE_PATHS:
        response = client.get(path, headers={"x-padding": "a" * (16 * 1024 + 1)})
        assert response.status_code == 431, path
        assert response.json()["error"] == "invalid_request"
        assert response.headers["x-frame-options"] == "DENY"  # security headers still on
    token = client.post("/token", data={"grant_type": "client_credentials"}, headers={"x-padding": "a" * 20_000})
    assert token.status_code == 431


def test_many_small_headers_add_up_or_count_over_100(client: TestClient) -> None:
    many = [(f"x-h{i}", "v") for i in range(101)]
    assert client.get("/healthz", headers=many).status_code == 431
    assert client.get("/login", headers=many).status_code == 431
    adding_up = [(f"x-h{i}", "v" * 400) for i in range(45)]  # 45 headers of ~405 bytes: over 16 KB
    assert client.get("/healthz", headers=adding_up).status_code == 431


def test_headers_just_under_the_limit_are_served(client: TestClient) -> None:
    assert client.get("/healthz", headers={"x-padding": "a" * 15_000}).status_code == 200
    assert client.get("/login", headers=[(f"x-h{i}", "v") for i in range(90)]).status_code == 200


def _raw_request(port: int, extra_header: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_header + b"\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_a_1_mb_header_to_a_real_server_is_431_and_the_server_keeps_serving(db: Database, db_url: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AUTHSERVER_DATABASE_URL": db_url, "AUTHSERVER_ISSUER": url,
           "AUTHSERVER_SECRET_KEY": TEST_SECRET}
    server = subprocess.Popen([sys.executable, "-m", "authserver.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url, lambda: server.poll() is None)
        answer = _raw_request(port, b"X-Padding: " + b"a" * (1024 * 1024) + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(500))
        assert _raw_request(port, many).startswith(b"HTTP/1.1 431 ")
        # The server is still there and serves the next request.
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/.well-known/oauth-authorization-server").json()["issuer"] == url
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)
