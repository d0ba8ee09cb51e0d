"""Fixtures for the abuse-limit tests: every limit test runs on both limit back ends.

``limit_backend`` is the database back end (the default) or Redis (AUTHSERVER_REDIS_URL). Redis
tests isolate themselves with a key prefix of their own (``AUTHSERVER_REDIS_PREFIX``) and delete
only those keys afterwards, since other tests may share the server. They are skipped when Redis
is unreachable, except with AUTHSERVER_TEST_REQUIRE_POSTGRES=1 (CI), where that is a failure,
like PostgreSQL's.

Hypothesis profiles for the property and schema tests here: ``ci`` (chosen when ``CI`` is set) is
derandomized, so a CI run tries the same examples every time and a failure reproduces from the log
alone, with no example database; ``dev`` is random and keeps its example database. Each test bounds
its own ``max_examples``; ``deadline`` is off because 2 shared cores make timings noisy.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.db import Database
from tests.conftest import ISSUER, REQUIRE_PG, make_settings

hypothesis_settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                                     suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

REDIS_URL = os.environ.get("AUTHSERVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Requests come from this proxy; X-Forwarded-For (see ``headers``) names the client address.
PROXY = ("10.0.0.1", 50000)


def redis_available() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def require_redis() -> None:
    """Skip without Redis, except in CI (AUTHSERVER_TEST_REQUIRE_POSTGRES=1), where it fails."""
    if not redis_available():
        if REQUIRE_PG:
            pytest.fail(f"Redis at {REDIS_URL} is required (AUTHSERVER_TEST_REQUIRE_POSTGRES=1)")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")


def drop_redis_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["database", "redis"])
def limit_backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Settings choosing the limit back end: {} (the database) or a Redis URL and a prefix of this test's own."""
    if request.param == "database":
        yield {}
        return
    require_redis()
    prefix = f"authserver-test:{uuid.uuid4().hex}:"
    try:
        yield {"redis_url": REDIS_URL, "redis_prefix": prefix}
    finally:
        drop_redis_keys(prefix)


def headers(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


@contextmanager
def limited_client(db_url: str, db: Database, limit_backend: dict[str, Any], **settings: Any) -> Iterator[TestClient]:
    """The app over ASGI behind a trusted proxy, so each request can name its client address."""
    app = create_app(make_settings(db_url, trusted_proxies=["10.0.0.0/8"], **limit_backend, **settings), db=db)
    with TestClient(app, base_url=ISSUER, follow_redirects=False, client=PROXY) as client:
        yield client


def csrf_of(html: str) -> str:
    return html.split('name="csrf" value="')[1].split('"')[0]


def sign_in(client: Any, username: str, password: str, ip: str) -> Any:
    """The stand-alone sign-in page, from ``ip``, in a fresh browser; the POST's response."""
    client.cookies.clear()
    page = client.get("/login", headers=headers(ip))
    return client.post("/login", data={"csrf": csrf_of(page.text), "username": username, "password": password,
                                       "next": "/account"}, headers=headers(ip))


def error_of(html: str) -> str | None:
    """The sign-in form's error message (None without one)."""
    marker = 'class="error"'
    if marker not in html:
        return None
    return html.split(marker, 1)[1].split(">", 1)[1].split("<", 1)[0].strip()
