"""`authserver serve` without AUTHSERVER_ISSUER: the issuer it advertises is where it listens, or it
refuses to start with one line; a real server process on SQLite and on PostgreSQL."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import pg_database, require_pg
from tests.live import wait_healthy
from tests.test_cli import Cli, _assert_one_line_error, _env, _row_counts


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    tmp = tmp_path_factory.mktemp("serve")
    if request.param == "sqlite":
        yield _without_issuer(Cli(_env(f"sqlite:///{tmp / 'serve.db'}"), tmp))
        return
    require_pg()
    with pg_database("authserver_serve") as url:
        yield _without_issuer(Cli(_env(url), tmp))


def _without_issuer(cli: Cli) -> Cli:
    del cli.env["AUTHSERVER_ISSUER"]
    return cli


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metadata_of_a_server(cli: Cli, *args: str, host: str) -> dict[str, object]:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "authserver.cli", "serve", "--port", str(port), *args],
                              env=cli.env, cwd=cli.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, lambda: server.poll() is None)
        answers = [httpx.get(f"{url}/.well-known/oauth-authorization-server").json() for _ in range(6)]
        metadata = answers[0]
        assert isinstance(metadata, dict) and all(a == metadata for a in answers)  # whichever worker answered
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert metadata["issuer"] == f"http://{host}:{port}"
    assert metadata["token_endpoint"] == f"http://{host}:{port}/token"
    return metadata


def test_serve_on_a_port_without_an_issuer_advertises_that_port(cli: Cli) -> None:
    cli.ok("init")
    _metadata_of_a_server(cli, host="127.0.0.1")
    _metadata_of_a_server(cli, "--host", "localhost", host="localhost")
    _metadata_of_a_server(cli, "--workers", "2", host="127.0.0.1")  # each worker reads it from the environment


def test_serve_on_all_interfaces_without_an_issuer_refuses_with_one_line(cli: Cli) -> None:
    cli.ok("init")
    before = _row_counts(cli.url)
    refused = cli.many(["serve", "--host", "0.0.0.0", "--port", str(_free_port())],
                       ["serve", "--host", "192.0.2.10"])
    for result in refused:
        _assert_one_line_error(result, "AUTHSERVER_ISSUER is not set", "not a loopback address")
    assert _row_counts(cli.url) == before
