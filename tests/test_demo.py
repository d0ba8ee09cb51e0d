"""`make demo`: its ports are DEMO_PORT and DEMO_MCP_PORT, a port in use is one clear line and a
non-zero exit before anything starts or is written, the README and the demo name the same scopes,
and the demo calendar starts with a few events."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import inspect

from authserver.db import Database
from examples.calendar_mcp import seed, server
from tests.conftest import pg_database, require_pg

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process (this one) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _make_demo(*ports: str) -> list[str]:
    # The environment is installed already (make test's own): do not reinstall the demo extra.
    return ["make", "--no-print-directory", "-o", ".venv/.demo-deps", "demo", *ports]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSERVER_", "DEMO_", "MAKE"))}
    env.update({"AUTHSERVER_HOME": str(tmp_path / "data")}, **extra)
    return env


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'demo.db'}"
        return
    require_pg()
    with pg_database("authserver_demo") as url:
        yield url


def test_make_demo_with_a_port_in_use_stops_at_once_with_one_line(tmp_path: Path, taken_port: int,
                                                                   database: str) -> None:
    env = _env(tmp_path, AUTHSERVER_DATABASE_URL=database)
    free = str(_free_port())
    for ports, named in (([f"DEMO_PORT={taken_port}", f"DEMO_MCP_PORT={free}"], str(taken_port)),
                         ([f"DEMO_PORT={free}", f"DEMO_MCP_PORT={taken_port}"], str(taken_port))):
        result = subprocess.run(_make_demo(*ports), cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert errors == [f"error: port {named} on 127.0.0.1 is in use (another `make demo` or `make run`?): "
                          "stop it, or choose other ports with make demo DEMO_PORT=8100 DEMO_MCP_PORT=8101"]
        assert "Traceback" not in result.stderr and "authserver init" not in result.stdout
    assert not (tmp_path / "data").exists() and not (tmp_path / "demo.db").exists()
    if database.startswith("postgresql"):
        db = Database(database)
        try:
            assert inspect(db.engine).get_table_names() == []
        finally:
            db.dispose()


def test_make_demo_serves_on_demo_port_and_demo_mcp_port(tmp_path: Path) -> None:
    env = _env(tmp_path)
    as_port, mcp_port = _free_port(), _free_port()
    demo = subprocess.Popen(_make_demo(f"DEMO_PORT={as_port}", f"DEMO_MCP_PORT={mcp_port}"), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if "Ctrl-C stops both servers." in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(120), "".join(lines)
        summary = "".join(lines)
        assert f"MCP server URL (paste into your MCP client):  http://127.0.0.1:{mcp_port}/mcp" in summary
        assert f"Authorization server:  http://127.0.0.1:{as_port}" in summary
        assert f"data directory: {tmp_path / 'data'}" in summary
        metadata = httpx.get(f"http://127.0.0.1:{as_port}/.well-known/oauth-authorization-server").json()
        assert metadata["issuer"] == f"http://127.0.0.1:{as_port}"
        protected = httpx.get(f"http://127.0.0.1:{mcp_port}/.well-known/oauth-protected-resource/mcp").json()
        assert protected["resource"] == f"http://127.0.0.1:{mcp_port}/mcp"
        assert protected["authorization_servers"] == [f"http://127.0.0.1:{as_port}"]
        assert protected["scopes_supported"] == [name for name, _, _ in seed.SCOPES]
    finally:
        os.killpg(demo.pid, signal.SIGTERM)  # make, its shell and both servers: the group this test started
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        reader.join(10)


def test_the_readme_names_the_demos_scopes() -> None:
    demo_scopes = {name for name, _, _ in seed.SCOPES}
    assert demo_scopes == {server.READ, server.WRITE}
    created = set(re.findall(r"authserver scopes create ([a-z]\S*)", README))
    assert created and created <= demo_scopes
    mentioned = set(re.findall(r"\b(\w+:calendar|calendar:\w+)\b", README))
    assert mentioned == demo_scopes
    demo_section = README.split("### Demo", 1)[1].split("###", 1)[0]
    assert all(f"`{name}`" in demo_section for name in demo_scopes)


def test_the_demo_calendar_starts_with_a_few_events_per_person(monkeypatch: pytest.MonkeyPatch) -> None:
    made: dict[str, Any] = {}
    monkeypatch.setattr(server, "create_app", lambda issuer, resource, **kwargs: made.update(kwargs) or object())
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    monkeypatch.setattr(sys, "argv", ["calendar"])
    server.main(["--issuer", "http://127.0.0.1:8000", "--resource", "http://127.0.0.1:8001/mcp"])
    calendar: server.Calendar = made["calendar"]
    alice = calendar.list("alice")
    assert len(alice) >= 3 and all(datetime.fromisoformat(e.start) > datetime.now(UTC) for e in alice)
    calendar.add("alice", "Dinner", "2099-01-01T19:00:00+00:00", None)
    assert len(calendar.list("alice")) == len(alice) + 1 and len(calendar.list("bob")) == len(alice)
    assert [e.title for e in server.Calendar(server.sample_events(date(2026, 12, 2))).list("x")] == [
        "Team stand-up", "Lunch with Sam", "Dentist", "Quarterly planning"]
    assert server.Calendar().list("x") == []  # the tests' own calendars start empty
