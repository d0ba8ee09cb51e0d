"""The scenarios of issue 9's performance budgets, and how each is loaded and checked.

wrk scenarios (GET, client_credentials, introspection, refresh) send a fixed request, or for refresh a
new never-used token each time; the Python scenarios (sign-in, flow) drive the pages. Each is checked
once by hand before it is loaded (``preflight``), so a broken setup fails loudly instead of measuring
fast error responses.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx

from harness import drivers, wrk
from harness.measure import Measurement
from harness.seed import RESOURCE, SCOPE, Seeded
from harness.server import MB

IDLE_RSS_BUDGET = 100 * MB
LOAD_RSS_BUDGET = 200 * MB
SCALING_BUDGET = 1.8  # --workers 2 within 10 % of twice the single-core rate


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    driver: str                       # "wrk" or "python"
    min_rps: float | None = None      # the throughput budget, per core
    budget_databases: tuple[str, ...] = ("sqlite", "postgresql")
    note: str = ""

    def rps_budget(self, database: str) -> float | None:
        return self.min_rps if database in self.budget_databases else None


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("metadata", "GET /.well-known/oauth-authorization-server", "wrk", 8000),
    Scenario("jwks", "GET /jwks.json", "wrk", 8000),
    Scenario("client_credentials", "POST /token client_credentials", "wrk",
             note="budget: vs node-oidc-provider (see vs_peer.sh)"),
    Scenario("introspection", "POST /introspect (active token)", "wrk",
             note="budget: vs node-oidc-provider (see vs_peer.sh)"),
    Scenario("refresh", "POST /token refresh_token (rotation)", "wrk", 1000, ("postgresql",)),
    Scenario("signin", "POST sign-in form (argon2id)", "python", 30),
    Scenario("flow", "authorize → sign-in → consent → token", "python", 25),
]}
# Run with --scenario scaling: client_credentials and introspection again on `serve --workers 2`.
SCALED = ("client_credentials", "introspection")
CONDITIONAL = {"metadata": "/.well-known/oauth-authorization-server", "jwks": "/jwks.json"}
# Refresh tokens minted per second of the scenario: three times the budget, so the cap (the minted
# tokens) ends a run early only on a server far beyond it (the rate is right even then).
REFRESH_MINT_RATE = 3000
# Sign-in pages prepared per second of the sign-in scenario (each costs two requests beforehand).
SIGNIN_PREPARE_RATE = 100


def basic(client_id: str, secret: str) -> str:
    # RFC 6749 §2.3.1: form-urlencode each part before the Basic encoding.
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@dataclass
class Target:
    """One running server and what the scenarios need to load it."""

    database: str
    base: str
    seeded: Seeded
    access_token: str = ""
    refresh_warm: Path | None = None
    refresh_main: Path | None = None
    refresh_limit: int = 0
    refresh_warm_limit: int = 0

    @property
    def m2m_auth(self) -> str:
        return basic(self.seeded.m2m_id, self.seeded.m2m_secret)

    @property
    def token_body(self) -> str:
        return urlencode({"grant_type": "client_credentials", "scope": SCOPE, "resource": RESOURCE})

    @property
    def refresh_prefix(self) -> str:
        return urlencode({"grant_type": "refresh_token", "client_id": self.seeded.app_id}) + "&refresh_token="


@dataclass(frozen=True)
class Settings:
    duration: float
    warmup: float
    connections: int
    max_requests: int
    pin: bool

    @property
    def server_cpus(self) -> str | None:
        return "1" if self.pin else None

    @property
    def load_cpus(self) -> str | None:
        return "0" if self.pin else None


# ---- checks before loading ---------------------------------------------------------------------

def preflight(target: Target, refresh_token: str | None) -> dict[str, str]:
    """Check by hand what the scenarios will send; return the ETags offered (path → ETag) for conditional GETs."""
    etags: dict[str, str] = {}
    with httpx.Client(base_url=target.base, timeout=10) as client:
        form = {"content-type": "application/x-www-form-urlencoded", "authorization": target.m2m_auth}
        issued = client.post("/token", content=target.token_body, headers=form)
        if issued.status_code != 200 or "access_token" not in issued.json():
            raise RuntimeError(f"client_credentials: HTTP {issued.status_code} {issued.text[:300]}")
        target.access_token = issued.json()["access_token"]
        seen = client.post("/introspect", content=f"token={target.access_token}", headers=form)
        if seen.status_code != 200 or seen.json().get("active") is not True or '"active":true' not in seen.text:
            raise RuntimeError(f"introspection: HTTP {seen.status_code} {seen.text[:300]}")
        for path in CONDITIONAL.values():
            got = client.get(path)
            if got.status_code != 200:
                raise RuntimeError(f"GET {path}: HTTP {got.status_code}")
            if "etag" in got.headers:
                etags[path] = got.headers["etag"]
        if refresh_token is not None:
            rotated = client.post("/token", content=target.refresh_prefix + refresh_token,
                                  headers={"content-type": "application/x-www-form-urlencoded"})
            if rotated.status_code != 200 or "refresh_token" not in rotated.json():
                raise RuntimeError(f"refresh: HTTP {rotated.status_code} {rotated.text[:300]}")
    return etags


async def _one_flow(target: Target) -> None:
    async with drivers.new_client(target.base, 1) as client:
        started = await drivers.start(client, target.seeded)
        await drivers.sign_in(client, started, target.seeded)
        await drivers.consent_and_token(client, started, target.seeded)


def preflight_flow(target: Target) -> None:
    """One full flow by hand: the page driver works against this server."""
    asyncio.run(_one_flow(target))


# ---- loading ----------------------------------------------------------------------------------

def wrk_load(name: str, target: Target, *, conditional_etag: str | None = None,
             warm: bool = False) -> wrk.Load:
    if name in CONDITIONAL:
        if conditional_etag:
            return wrk.Load(target.base + CONDITIONAL[name], if_none_match=conditional_etag, ok_status=304)
        return wrk.Load(target.base + CONDITIONAL[name])
    if name == "client_credentials":
        return wrk.Load(target.base + "/token", method="POST", body=target.token_body,
                        authorization=target.m2m_auth, expect='"access_token"')
    if name == "introspection":
        return wrk.Load(target.base + "/introspect", method="POST", body=f"token={target.access_token}",
                        authorization=target.m2m_auth, expect='"active":true')
    if name == "refresh":
        tokens, limit = ((target.refresh_warm, target.refresh_warm_limit) if warm
                         else (target.refresh_main, target.refresh_limit))
        return wrk.Load(target.base + "/token", method="POST", tokens=tokens, token_prefix=target.refresh_prefix,
                        limit=limit, expect='"refresh_token"')
    raise ValueError(f"no wrk load for {name}")


def run_wrk(name: str, target: Target, settings: Settings, *, label: str, cpus: str | None,
            conditional_etag: str | None = None, server_cpu: Callable[[], float] | None = None) -> Measurement:
    """``server_cpu``: the server's CPU time so far, read around the measured run (not the warm-up)."""
    cap = 0 if name == "refresh" else settings.max_requests  # refresh: the minted tokens are the cap
    warm = wrk_load(name, target, conditional_etag=conditional_etag, warm=True)
    if name != "refresh":
        warm = _with_limit(warm, cap)
    wrk.run(warm, duration=settings.warmup, connections=settings.connections, cpus=cpus, label=None)
    load = wrk_load(name, target, conditional_etag=conditional_etag)
    if name != "refresh":
        load = _with_limit(load, cap)
    before = server_cpu() if server_cpu else None
    measured = wrk.run(load, duration=settings.duration, connections=settings.connections, cpus=cpus, label=label)
    if server_cpu is not None and before is not None:
        measured.server_cpu_s = server_cpu() - before
    return measured


def _with_limit(load: wrk.Load, limit: int) -> wrk.Load:
    return replace(load, limit=limit)


@contextmanager
def pinned(cpus: str | None) -> Iterator[None]:
    """This process (the Python driver) on the load generator's core for the duration, then as before."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run_python(name: str, target: Target, settings: Settings, *, label: str, cpus: str | None) -> Measurement:
    s = settings
    with pinned(cpus):
        if name == "signin":
            # The prepared pages are the cap: enough for a server several times faster than the budget.
            cap = min(s.max_requests, max(s.connections, round(s.duration * SIGNIN_PREPARE_RATE)))
            return asyncio.run(drivers.signin(target.base, target.seeded, connections=s.connections,
                                              duration=s.duration, warmup=s.warmup, cap=cap, label=label))
        if name == "flow":
            return asyncio.run(drivers.flow(target.base, target.seeded, connections=s.connections,
                                            duration=s.duration, warmup=s.warmup, cap=s.max_requests, label=label))
    raise ValueError(f"no Python driver for {name}")


def refresh_token_counts(settings: Settings) -> tuple[int, int]:
    """(warm-up, measured) refresh tokens to mint; the measured count is the scenario's request cap."""
    main = min(settings.max_requests, round(settings.duration * REFRESH_MINT_RATE))
    warm = round(settings.warmup * REFRESH_MINT_RATE)
    return warm, main
