"""Metrics, request ids and access lines: what the operator sees of the traffic (issue 11).

Prometheus metrics (``prometheus-client``), served at ``/metrics`` (see ``metrics_endpoint``):

==========================================================  =====================================
``authserver_http_requests_total{route,method,status}``     every request; ``route`` is the route
                                                            template (``/interaction/{request_id}``),
                                                            never the raw path; unmatched: ``other``
``authserver_http_request_duration_seconds{route,method}``  the same, as a latency histogram
``authserver_tokens_issued_total{grant_type}``              access tokens issued, per grant
``authserver_events_total{event}``                          every audit event (``token.refreshed``,
                                                            ``token.reuse_detected``, ``login.failed``,
                                                            ``login.throttled``, ``client.registered``…)
``authserver_introspections_total{result}``                 ``active`` / ``inactive`` answers
``authserver_metadata_document_fetches_total{result}``      ``ok`` / ``failed`` network fetches
==========================================================  =====================================

**Cost.** Token, introspection and JWKS requests are the hot paths (``fastlane``); a
``prometheus-client`` counter increment costs ~0.5 µs and a histogram observation ~1.1 µs, which
on a 36 µs introspection would be 5 %. So requests and events are first tallied in plain
dictionaries (``Tally``: a dict lookup and a few additions, no lock for requests, which are all
counted on the event loop; a lock for events, which threads record too) and moved into the
``prometheus-client`` metrics in bulk: about once a second while there is traffic (a timer on the
event loop), and before every scrape in the scraping process. A scrape can thus miss at most the
last second of another worker's traffic. The hot lane counts inside its own dispatch
(``HotRoutes``), without a wrapper around each request.

**Workers.** With ``serve --workers N`` (N > 1) every worker is its own process: ``serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh temporary directory, each worker's metrics live in
memory-mapped files there, and a scrape (answered by whichever worker gets it) adds them all up.

**Request ids.** Every page's response carries ``X-Request-Id`` (on the hot lane: every error
answer, every answer when the access log is on, and any request that sent one): the request's own when it sent a
plausible one (1 to 128 of ``A-Z a-z 0-9 . _ : -``), else one made here (a per-process random
prefix and a counter: unique, cheap, not a secret). It is in every log line written while the
request is handled (``REQUEST_ID``) and in the access line. On the hot lane the context variable
is set only around error responses (the lines written there are the refusal reasons): 0.3 µs a
request saved.

**Access lines** (``serve --access-log`` with ``AUTHSERVER_LOG_FORMAT=json``): one JSON line per
request on the ``authserver.access`` logger with the route template (never the path: no query
strings, interaction ids, codes or tokens), method, status, latency, request id and the client
once authenticated (``CLIENT_ID`` in the ASGI scope).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from authserver.settings import Settings

access_log = logging.getLogger("authserver.access")

# Where an endpoint notes the client it authenticated, for the access line.
CLIENT_ID = "authserver.client_id"
REQUEST_ID: ContextVar[str | None] = ContextVar("authserver_request_id", default=None)
FLUSH_SECONDS = 1.0
# Latency buckets (seconds): the hot paths answer in well under a millisecond, sign-in takes ~0.2 s (argon2).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER_ROUTE = "other"

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_PREFIX = secrets.token_hex(4).encode() + b"-"
_SEQUENCE = itertools.count(1)


def given_request_id(scope: Scope) -> bytes | None:
    """The request's own ``X-Request-Id`` when plausible (as the header's bytes)."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return value if _REQUEST_ID.fullmatch(value) else None
    return None


def new_request_id() -> bytes:
    return _PREFIX + b"%x" % next(_SEQUENCE)


def request_id_of(scope: Scope) -> bytes:
    """The request's own ``X-Request-Id`` when plausible, else a new one (as the header's bytes)."""
    return given_request_id(scope) or new_request_id()


class _Metrics:
    """The ``prometheus-client`` metrics of this process (built on first use, see ``metrics``)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("authserver_http_requests", "HTTP requests, by route template, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("authserver_http_request_duration_seconds",
                                 "HTTP request latency, by route template and method", ["route", "method"],
                                 buckets=BUCKETS, registry=self.registry)
        self.tokens = Counter("authserver_tokens_issued", "Access tokens issued, by grant type", ["grant_type"],
                              registry=self.registry)
        self.events = Counter("authserver_events", "Audit events recorded, by event type", ["event"],
                              registry=self.registry)
        self.introspections = Counter("authserver_introspections", "Introspection answers, active or inactive",
                                      ["result"], registry=self.registry)
        self.documents = Counter("authserver_metadata_document_fetches",
                                 "Client ID Metadata Document fetches from the network, ok or failed", ["result"],
                                 registry=self.registry)
        self.counters = {"tokens": self.tokens, "events": self.events, "introspections": self.introspections,
                         "documents": self.documents}


_metrics: _Metrics | None = None
_metrics_lock = threading.Lock()


def metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = _Metrics()
    return _metrics


class Tally:
    """Counts not yet moved into the metrics (see the module docstring: why, and how often)."""

    def __init__(self) -> None:
        # (route, method, status) → [count, seconds, per-bucket counts (the last: above every bucket)]
        self._requests: dict[tuple[str, str, int], list[Any]] = {}
        self._counts: dict[tuple[str, str], int] = {}  # (counter, label) → n
        self._loop_counts: dict[tuple[str, str], int] = {}  # the same, counted on the event loop
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request done (on the event loop only)."""
        entry = self._requests.get((route, method, status))
        if entry is None:
            entry = self._requests[(route, method, status)] = [0, 0.0, [0] * (len(BUCKETS) + 1)]
        entry[0] += 1
        entry[1] += seconds
        entry[2][bisect_left(BUCKETS, seconds)] += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def count(self, counter: str, label: str) -> None:
        """One event of ``counter`` (``tokens``, ``events``, ``introspections``, ``documents``); any thread."""
        key = (counter, label)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def count_on_loop(self, counter: str, label: str) -> None:
        """``count`` from the event loop's thread only (as ``request``): no lock."""
        key = (counter, label)
        self._loop_counts[key] = self._loop_counts.get(key, 0) + 1

    def event(self, event: str, detail: dict[str, Any]) -> None:
        with self._lock:
            counts = self._counts
            counts[("events", event)] = counts.get(("events", event), 0) + 1
            if event in ("token.issued", "token.refreshed"):
                key = ("tokens", detail.get("grant_type", "refresh_token"))
                counts[key] = counts.get(key, 0) + 1

    def flush(self) -> None:
        """Move everything tallied into the metrics (on the event loop, or with no loop running)."""
        self._timer = None
        requests, self._requests = self._requests, {}
        loop_counts, self._loop_counts = self._loop_counts, {}
        with self._lock:
            counts, self._counts = self._counts, {}
        for key, n in loop_counts.items():
            counts[key] = counts.get(key, 0) + n
        if not requests and not counts:
            return
        m = metrics()
        for (route, method, status), (n, seconds, buckets) in requests.items():
            m.requests.labels(route, method, str(status)).inc(n)
            child = m.latency.labels(route, method)
            # prometheus-client keeps a histogram child's buckets non-cumulative (``_buckets``) and its sum
            # (``_sum``); adding to them is what ``observe`` does, n observations at once.
            child._sum.inc(seconds)
            for i, k in enumerate(buckets):
                if k:
                    child._buckets[i].inc(k)
        for (counter, label), n in counts.items():
            m.counters[counter].labels(label).inc(n)


# The tally of this process; counting sites call ``TALLY.count`` only when metrics are on (``enabled``).
TALLY = Tally()
_enabled = False


def enable(on: bool) -> None:
    """Whether this process counts (set by ``create_app`` from ``AUTHSERVER_METRICS``)."""
    global _enabled
    _enabled = on


def count(counter: str, label: str) -> None:
    if _enabled:
        TALLY.count(counter, label)


def count_on_loop(counter: str, label: str) -> None:
    if _enabled:
        TALLY.count_on_loop(counter, label)


def audit_event(event: str, detail: dict[str, Any]) -> None:
    """An audit event was recorded (``audit.log.record``, ``audit.buffer.AuditBuffer.record``): counted
    in ``authserver_events_total`` and, when it issued an access token, ``authserver_tokens_issued_total``."""
    if _enabled:
        TALLY.event(event, detail)


def access_line(scope: Scope, route: str, status: int, seconds: float, request_id: bytes) -> None:
    access_log.info("%s %s %d", scope["method"], route, status, extra={
        "route": route, "method": scope["method"], "status": status, "latency_ms": round(seconds * 1000, 3),
        "request_id": request_id.decode(), "client_id": scope.get(CLIENT_ID)})


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else OTHER_ROUTE


class Observe:
    """The pages' lane (everything FastAPI routes): request id, count, access line. The hot lane does
    the same in its own dispatch (``fastlane.HotRoutes``), without this wrapper."""

    def __init__(self, app: ASGIApp, *, count: bool, log_access: bool) -> None:
        self.app = app
        self.count = count
        self.log_access = log_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_id_of(scope)
        header = (b"x-request-id", request_id)
        status = 500
        token = REQUEST_ID.set(request_id.decode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            seconds = time.perf_counter() - start
            route = route_template(scope)
            if self.count:
                TALLY.request(route, scope["method"], status, seconds)
            if self.log_access:
                access_line(scope, route, status, seconds, request_id)


def metrics_enabled(setting: str, token: str | None, is_https: bool) -> bool:
    """``AUTHSERVER_METRICS``: ``on``, ``off``, or ``auto`` (on with a token, or on a development
    (plain http, loopback) issuer; off on an https issuer without a token, so a production server
    never publishes its traffic to anyone by default)."""
    if setting == "auto":
        return bool(token) or not is_https
    return setting == "on"


@contextmanager
def metrics_directory(workers: int, settings: Settings) -> Iterator[None]:
    """For ``serve --workers N`` (N > 1) with metrics on: ``PROMETHEUS_MULTIPROC_DIR`` set to a fresh
    temporary directory for the worker processes (they inherit it; prometheus-client reads it when
    first imported, which the supervising process never does), removed when serve ends."""
    if workers <= 1 or not metrics_enabled(settings.metrics, settings.metrics_token, settings.is_https):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="authserver-metrics-") as path:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        try:
            yield
        finally:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def metrics_endpoint(token: str | None) -> Callable[[Request], Awaitable[Response]]:
    """``GET /metrics``: the Prometheus text format; with ``AUTHSERVER_METRICS_TOKEN`` only for
    ``Authorization: Bearer <token>`` (compared in constant time), else 401."""
    expected = f"Bearer {token}".encode() if token else None

    async def metrics_page(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return Response(b'{"error":"unauthorized"}', status_code=401, media_type="application/json",
                                headers={"WWW-Authenticate": 'Bearer realm="metrics"', "Cache-Control": "no-store"})
        TALLY.flush()
        return Response(scrape(), media_type="text/plain; version=0.0.4; charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    return metrics_page


def scrape() -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(metrics().registry)
