"""CPU per request of the hot paths, in process: the ASGI app called directly (no HTTP, no client).

    .venv/bin/python bench/cpu_per_request.py [--requests 20000] [--rounds 5]

For each of token (client_credentials), introspection (an active access token) and JWKS, the
best of ``--rounds`` runs of ``--requests`` requests, as ``time.process_time()`` per request (all
threads of the process, so the batched audit writer counts too), on a throw-away SQLite database.
Used to keep the cost of metrics and logging on the hot lane measured (README, Operations).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import logging.config
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authserver import migrate
from authserver.app import create_app
from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.db import Database
from authserver.settings import Settings

RESOURCE = "https://calendar.example.com/mcp"


def _seed(db: Database) -> tuple[tuple[str, str], tuple[str, str]]:
    with db.session() as s:
        catalog.create_scope(s, "read:calendar", "See your calendar events")
        catalog.create_resource(s, RESOURCE, "Calendar", ["read:calendar"])
        machine = clients.create_client(s, clients.NewClient(
            name="bench", grant_types=["client_credentials"], scopes=["read:calendar"], resources=[RESOURCE]))
        rs = clients.create_client(s, clients.NewClient(
            name="rs", grant_types=["client_credentials"], resources=[RESOURCE], can_introspect=True))
    assert machine.client_secret and rs.client_secret
    return (machine.client.client_id, machine.client_secret), (rs.client.client_id, rs.client_secret)


def _basic(creds: tuple[str, str]) -> bytes:
    return b"Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode())


async def _call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
             "headers": [(b"host", b"127.0.0.1:8000"), *headers,
                         (b"content-length", str(len(body)).encode())]}
    sent = False
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    assert status == 200, (path, status, b"".join(chunks))
    return b"".join(chunks)


async def main(requests: int, rounds: int, configurations: list[str]) -> dict[str, dict[str, float]]:
    """Each configuration (an AUTHSERVER_METRICS value) is its own app on the same database; rounds
    alternate between them, so a noisy neighbour slows all alike; the best round of each is kept."""
    try:
        from authserver import observe
    except ImportError:  # the code before observability: one configuration, nothing to switch
        observe = None  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        db = Database(url)
        migrate.upgrade(db)
        machine, rs = _seed(db)
        form = [(b"content-type", b"application/x-www-form-urlencoded")]
        token_form = f"grant_type=client_credentials&resource={RESOURCE}".encode()
        token_headers = [*form, (b"authorization", _basic(machine))]
        introspect_headers = [*form, (b"authorization", _basic(rs))]
        apps = {}
        for value in configurations:
            settings = Settings(issuer="http://127.0.0.1:8000", database_url=url, secret_key="b" * 48,
                                home=Path(tmp), metrics="off" if value == "bare" else value)  # type: ignore[call-arg]
            apps[value] = create_app(settings, db=db)
            if value == "bare":  # the hot lane's dispatch as before observability: no request id either
                apps[value].hot_routes.observed = False
        best: dict[str, dict[str, float]] = {value: {} for value in configurations}
        async with contextlib.AsyncExitStack() as stack:
            for app in apps.values():
                await stack.enter_async_context(app.router.lifespan_context(app))
            access = json.loads(await _call(apps[configurations[0]], "POST", "/token", token_headers,
                                            token_form))["access_token"]
            cases = {"token": ("POST", "/token", token_headers, token_form),
                     "introspect": ("POST", "/introspect", introspect_headers, f"token={access}".encode()),
                     "jwks": ("GET", "/jwks.json", [], b"")}
            for _ in range(rounds):
                for value, app in apps.items():
                    if observe is not None:
                        observe.enable(value not in ("off", "bare"))
                    # bare: no audit event log lines either (they did not exist before)
                    logging.getLogger("authserver.events").disabled = value == "bare"
                    for name, (method, path, headers, body) in cases.items():
                        for _ in range(100):  # warm caches
                            await _call(app, method, path, headers, body)
                        start = time.process_time()
                        for _ in range(requests):
                            await _call(app, method, path, headers, body)
                        spent = (time.process_time() - start) / requests * 1e6
                        best[value][name] = min(best[value].get(name, float("inf")), spent)
        db.dispose()
        return best


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--metrics", nargs="+", default=["bare", "off", "on"],
                        help="AUTHSERVER_METRICS values to compare; bare: off, and no request ids on the hot lane "
                             "(the dispatch as it was before observability)")
    parser.add_argument("--logs", choices=["none", "text", "json"], default="none",
                        help="configure logging as `serve` does at info, in this format (lines go to standard "
                             "error: redirect it), so the audit events' log lines are measured too")
    options = parser.parse_args()
    if options.logs != "none":
        from authserver.logconfig import uvicorn_log_config

        logging.config.dictConfig(uvicorn_log_config("info", options.logs))
    for value, figures in asyncio.run(main(options.requests, options.rounds, options.metrics)).items():
        print(f"metrics={value}:", json.dumps({k: round(v, 1) for k, v in figures.items()}), "µs CPU per request")
