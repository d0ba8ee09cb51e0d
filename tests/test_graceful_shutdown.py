"""SIGTERM stops a real ``authserver serve`` gracefully: no new connections, requests in flight finish,
exit status 0; and ``--timeout-graceful-shutdown`` bounds how long a stuck request can hold it up.

The request in flight is a password sign-in (the form POST of the real page, CSRF included) that
sends ``Expect: 100-continue`` and holds back its body: the server's ``100 Continue`` is the proof
that the app is running the request and waiting to read the form, so the SIGTERM lands mid-request
without guessing at timings. The body then arrives after the signal, and argon2 verifies the
password after it too.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from authserver.db import Database
from tests.oauth_helpers import PASSWORD, seed
from tests.security.conftest import csrf_of
from tests.test_cli import _env

DEADLINE = 15.0


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def database(_sqlite_template: Path, tmp_path: Path) -> str:
    target = tmp_path / "authserver.db"
    shutil.copy(_sqlite_template, target)
    url = f"sqlite:///{target}"
    db = Database(url)
    seed(db)
    db.dispose()
    return url


def start(url: str, tmp_path: Path, *args: str) -> Server:
    port = _free_port()
    log = tmp_path / f"serve-{port}.log"
    env = _env(url, AUTHSERVER_ISSUER=f"http://127.0.0.1:{port}", AUTHSERVER_LOG_LEVEL="warning")
    proc = subprocess.Popen([sys.executable, "-m", "authserver.cli", "serve", "--port", str(port), *args],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    server = Server(proc, port, log)
    end = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{server.url}/healthz").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < end, log.read_text()
        time.sleep(0.05)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def held_sign_in(server: Server) -> tuple[socket.socket, bytes]:
    """A sign-in POST whose headers are sent and whose body is held back; returns once the app
    asked for the body (``100 Continue``): the socket and the body still to send."""
    with httpx.Client(base_url=server.url) as browser:
        page = browser.get("/login")
        assert page.status_code == 200
        cookies = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    body = urlencode({"csrf": csrf_of(page.text), "username": "alice", "password": PASSWORD,
                      "next": "/account"}).encode()
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)
    conn.sendall(("POST /login HTTP/1.1\r\n"
                  f"Host: 127.0.0.1:{server.port}\r\n"
                  "Content-Type: application/x-www-form-urlencoded\r\n"
                  f"Content-Length: {len(body)}\r\n"
                  f"Cookie: {cookies}\r\n"
                  "Expect: 100-continue\r\n\r\n").encode())
    interim = conn.recv(100)
    assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
    return conn, body


def read_response(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def refuses_connections(server: Server) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_for(what: str, done: Callable[[], bool], deadline: float = DEADLINE) -> None:
    """Poll ``done()`` (never a blind sleep) until true; fail past ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not done():
        assert time.monotonic() < end, f"not within {deadline} s: {what}"
        time.sleep(0.02)


def test_sigterm_lets_a_sign_in_in_flight_finish_then_exits_0(database: str, tmp_path: Path,
                                                               servers: list[Server]) -> None:
    server = start(database, tmp_path)
    servers.append(server)
    conn, body = held_sign_in(server)
    with conn:
        server.proc.send_signal(signal.SIGTERM)
        # The listening socket closes at once: new clients go to another node...
        wait_for("new connections are refused", lambda: refuses_connections(server))
        assert server.proc.poll() is None  # ...while this one still waits for the request it started
        conn.sendall(body)
        response = read_response(conn)
    head = response.split(b"\r\n\r\n", 1)[0].decode()
    status_line, *headers = head.split("\r\n")
    assert status_line == "HTTP/1.1 303 See Other", response[:500]  # signed in: argon2 ran after the signal
    fields = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in headers)}
    assert fields["location"] == "/account"
    assert "set-cookie" in fields
    assert fields.get("connection") == "close"  # answered during the shutdown, not before it
    assert server.proc.wait(timeout=DEADLINE) == 0, server.log.read_text()
    assert refuses_connections(server)


def test_a_request_stuck_past_the_graceful_timeout_is_cut_off_and_the_server_still_exits(
        database: str, tmp_path: Path, servers: list[Server]) -> None:
    """``--timeout-graceful-shutdown 1``: a client that never sends its body holds the process up
    for about a second, not for ever (the default of 20 s would outlast this test's deadline)."""
    server = start(database, tmp_path, "--timeout-graceful-shutdown", "1")
    servers.append(server)
    conn, _ = held_sign_in(server)
    with conn:
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=10)
        waited = time.monotonic() - signalled
        assert 0.9 <= waited < 8, waited  # it did wait for the request, and no longer than the timeout
        assert code == 0, server.log.read_text()
        assert not read_response(conn).startswith(b"HTTP/1.1 303")  # the stuck request got no answer
