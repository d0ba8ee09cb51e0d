"""The browser scenarios, driven from Python (asyncio + httpx): sign-in and the full authorization flow.

These run at tens of requests per second (argon2id costs tens of milliseconds per sign-in), far
below what one core of Python can send, and they need what wrk cannot do easily: read each page's
form (CSRF token, action), keep each browser's cookies, check PKCE and the final token response.
Every virtual browser is a fresh one (its own cookies, no session), so every flow really signs in.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.cookiejar
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import httpx
from tqdm import tqdm

from harness.measure import Measurement, percentile
from harness.seed import REDIRECT_URI, RESOURCE, SCOPE, Seeded

TIMEOUT = 30.0


class StepFailed(Exception):
    """A response that is not what a successful sign-in or flow gets."""


# ---- pages and cookies ------------------------------------------------------------------------

@dataclass
class Form:
    action: str
    fields: dict[str, str] = field(default_factory=dict)
    ticked: list[tuple[str, str]] = field(default_factory=list)  # checked checkboxes (name, value)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", "")))
        elif tag == "input" and self.forms and a.get("name"):
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self.forms[-1].ticked.append((a["name"], a.get("value", "on")))
            elif a.get("type") != "submit":
                self.forms[-1].fields[a["name"]] = a.get("value", "")


def form_of(response: httpx.Response, action_part: str) -> Form:
    """The page's form whose action contains ``action_part`` (the login or the consent form)."""
    if response.status_code != 200:
        raise StepFailed(f"GET {response.url.path}: HTTP {response.status_code} {response.text[:200]}")
    parser = _Forms()
    parser.feed(response.text)
    found = next((f for f in parser.forms if action_part in f.action and "csrf" in f.fields), None)
    if found is None:
        raise StepFailed(f"no {action_part} form on {response.url.path}")
    return found


class Browser:
    """One person's browser: its cookies, kept by hand (the shared client stores none)."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def headers(self) -> dict[str, str]:
        return {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def keep(self, response: httpx.Response) -> httpx.Response:
        for header in response.headers.get_list("set-cookie"):
            pair, _, attributes = header.partition(";")
            name, _, value = pair.strip().partition("=")
            if not value or "max-age=0" in attributes.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value.strip('"')
        return response


def redirect_target(response: httpx.Response, step: str) -> str:
    if response.status_code != 303 or "location" not in response.headers:
        raise StepFailed(f"{step}: HTTP {response.status_code} {response.text[:200]}")
    return response.headers["location"]


def new_client(base: str, connections: int) -> httpx.AsyncClient:
    # No cookie jar of its own (a policy that accepts no domain): each Browser sends its own cookies.
    jar = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(base_url=base, timeout=TIMEOUT, cookies=jar, follow_redirects=False,
                             limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))


# ---- the steps of a flow ----------------------------------------------------------------------

def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class Started:
    """An authorization request showing its sign-in page, in the browser that started it."""

    browser: Browser
    interaction: str
    login: Form
    verifier: str
    state: str


async def start(client: httpx.AsyncClient, seeded: Seeded) -> Started:
    """GET /authorize (PKCE S256, exact loopback redirect URI, prompt=consent) and its sign-in page.

    prompt=consent makes the consent page appear on every flow, not only the person's first one.
    """
    browser, (verifier, challenge), state = Browser(), pkce_pair(), secrets.token_urlsafe(12)
    params = {"response_type": "code", "client_id": seeded.app_id, "redirect_uri": REDIRECT_URI,
              "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
              "resource": RESOURCE, "scope": SCOPE, "prompt": "consent"}
    interaction = redirect_target(browser.keep(await client.get("/authorize", params=params)), "GET /authorize")
    page = browser.keep(await client.get(interaction, headers=browser.headers()))
    return Started(browser, interaction, form_of(page, "/login"), verifier, state)


async def sign_in(client: httpx.AsyncClient, started: Started, seeded: Seeded) -> None:
    """POST the sign-in form; success is a 303 back to the interaction with a session cookie."""
    data = {**started.login.fields, "username": seeded.username, "password": seeded.password}
    response = started.browser.keep(await client.post(started.login.action, data=data,
                                                      headers=started.browser.headers()))
    if redirect_target(response, "POST login") != started.interaction:
        raise StepFailed(f"POST login went to {response.headers['location']}")
    if not any("session" in name for name in started.browser.cookies):
        raise StepFailed("POST login set no session cookie")


async def consent_and_token(client: httpx.AsyncClient, started: Started, seeded: Seeded) -> None:
    """Allow on the consent page, then exchange the code; success is a token response with an access token."""
    browser = started.browser
    form = form_of(browser.keep(await client.get(started.interaction, headers=browser.headers())), "/consent")
    data: dict[str, str | list[str]] = {**form.fields, "decision": "allow",
                                        "scope": [v for k, v in form.ticked if k == "scope"]}
    location = redirect_target(browser.keep(await client.post(form.action, data=data, headers=browser.headers())),
                               "POST consent")
    got = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    if not location.startswith(REDIRECT_URI) or "code" not in got or got.get("state") != started.state:
        raise StepFailed(f"consent redirected to {location[:200]}")
    token = await client.post("/token", data={
        "grant_type": "authorization_code", "code": got["code"], "code_verifier": started.verifier,
        "redirect_uri": REDIRECT_URI, "client_id": seeded.app_id, "resource": RESOURCE})
    if token.status_code != 200 or "access_token" not in token.json():
        raise StepFailed(f"POST /token: HTTP {token.status_code} {token.text[:200]}")


# ---- driving ----------------------------------------------------------------------------------

Work = Callable[[int], Awaitable[None]]


async def drive(work: Work, *, concurrency: int, duration: float, cap: int, label: str | None) -> Measurement:
    """``concurrency`` tasks call ``work(i)`` for i = 0, 1, ... until ``cap`` calls or ``duration`` seconds.

    Latency is the whole call (for the flow: every request of it); the bar ticks per completed call.
    """
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    start = time.perf_counter()
    deadline = start + duration

    async def worker(bar: tqdm[None]) -> None:
        nonlocal issued
        while issued < cap and time.perf_counter() < deadline:
            i, issued = issued, issued + 1
            t0 = time.perf_counter()
            try:
                await work(i)
                latencies.append(time.perf_counter() - t0)
            except (StepFailed, httpx.HTTPError, ValueError) as exc:  # ValueError: a body that is not JSON
                errors.append(f"{type(exc).__name__}: {exc}")
            bar.update(1)

    # A bar to the cap when the cap is what ends the run (prepared pages), else a counter with the rate.
    bounded = cap != float("inf") and cap / max(duration, 1e-9) < 1000
    with tqdm(total=cap if bounded else None, desc=label, unit="req", disable=label is None, leave=False,
              bar_format="{desc:<38} {bar} {n}/{total} [{elapsed}]" if bounded
              else f"{{desc:<38}} {{n}} req, {{rate_fmt}} [{{elapsed}} of {duration:.0f}s]") as bar:
        await asyncio.gather(*(worker(bar) for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    latencies.sort()
    ms = [1000 * x for x in latencies]
    return Measurement(requests=len(latencies) + len(errors), seconds=seconds, errors=len(errors),
                       p50_ms=percentile(ms, 50), p95_ms=percentile(ms, 95), p99_ms=percentile(ms, 99),
                       first_error=errors[0] if errors else None, capped=issued >= cap)


async def _prepare(client: httpx.AsyncClient, seeded: Seeded, count: int, concurrency: int,
                   label: str | None) -> list[Started]:
    """``count`` authorization requests showing their sign-in page, each in its own fresh browser."""
    started: list[Started] = []

    async def one(_: int) -> None:
        started.append(await start(client, seeded))

    prep = await drive(one, concurrency=concurrency, duration=float("inf"), cap=count,
                       label=f"{label} (preparing)" if label else None)
    if prep.errors:
        raise RuntimeError(f"preparing sign-in pages: {prep.errors} failed, first: {prep.first_error}")
    return started


async def signin(base: str, seeded: Seeded, *, connections: int, duration: float, warmup: float, cap: int,
                 label: str | None) -> Measurement:
    """POST of the sign-in form (argon2id verification, a new session); the pages are fetched beforehand.

    Only the POST is timed: ``cap`` sign-in pages are prepared first (GET /authorize and the page),
    so the rate is that of sign-ins alone.
    """
    async with new_client(base, connections) as client:
        warm = await _prepare(client, seeded, max(connections, 4), connections, None)
        await drive(lambda i: sign_in(client, warm[i], seeded), concurrency=connections, duration=warmup,
                    cap=len(warm), label=None)
        pages = await _prepare(client, seeded, cap, connections, label)
        return await drive(lambda i: sign_in(client, pages[i], seeded), concurrency=connections,
                           duration=duration, cap=len(pages), label=label)


async def flow(base: str, seeded: Seeded, *, connections: int, duration: float, warmup: float, cap: int,
               label: str | None) -> Measurement:
    """authorize → sign-in page → sign-in → consent page → allow → code → token, one "request" per flow."""
    async with new_client(base, connections) as client:

        async def one(_: int) -> None:
            started = await start(client, seeded)
            await sign_in(client, started, seeded)
            await consent_and_token(client, started, seeded)

        await drive(one, concurrency=connections, duration=warmup, cap=connections, label=None)
        return await drive(one, concurrency=connections, duration=duration, cap=cap, label=label)
