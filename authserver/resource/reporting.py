"""Tool-call reports (opt-in): tell authserver which tools ran under each grant, so the person sees it.

The MCP security checklist asks that what runs is logged and shown to the person who granted
access. With this on, each ``tools/call`` your MCP server answers is reported to authserver's
``tool_call_endpoint`` (from its RFC 8414 metadata, else ``{issuer}/tool-calls``), which stores
it as an audit event on the grant; the person's account page lists it ("Calendar assistant used
create_event on Calendar MCP server, 10:02").

What is sent, per call: the **tool name**, the **outcome** (``success``, ``error`` or
``denied``), the **time**, and the **access token** the call was made with. The token proves to
authserver that the call was made under a token it issued for *your* resource (it checks the
signature and audience; it reads the ``jti``, person and client from it), exactly as when you
introspect it. The request is authenticated with your resource server's own confidential client
(the one that may introspect), using ``client_secret_basic``.

What is never sent: the call's **arguments** and its **results** (the person's data), nor any
other header or body content. authserver refuses reports carrying anything more.

Reporting never slows down or breaks your MCP responses: ``report`` only puts the report on a
bounded in-memory queue (when full, the report is dropped with a warning), and one background
task posts them with a short timeout and one retry on network errors and 5xx answers. Failures
are logged (never the token) and forgotten. Reports still queued when the process stops are sent
by ``aclose`` within a deadline; ``ToolCallReportMiddleware`` calls it on ASGI lifespan shutdown.

    reporter = ToolCallReporter(issuer, client_id, client_secret)
    app = BearerAuthMiddleware(ToolCallReportMiddleware(mcp_app, reporter), verifier, required_scopes=[...])

``ToolCallReportMiddleware`` goes *inside* ``BearerAuthMiddleware`` (it reports only calls made
with a verified token) and outside anything that may refuse a call (per-tool scope checks), so a
refusal is reported as ``denied``. For a POST whose JSON-RPC body (read up to a bound, then
replayed to the app unchanged) calls tools, it watches the response: HTTP 401/403 is ``denied``,
any other status from 400 up is ``error``, and so is a JSON-RPC ``error`` or a tool result with
``"isError": true`` for that call's id (in a JSON body or the ``data:`` lines of an SSE stream,
of which the first ``max_scan_bytes`` are read); anything else is ``success``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Literal, get_args

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authserver.resource._http import Fetcher, check_url
from authserver.resource.discovery import AuthServerMetadata
from authserver.resource.errors import AuthServerUnavailableError
from authserver.resource.introspection import basic_auth
from authserver.resource.jsonrpc import MAX_BODY_BYTES, failed_request_ids, read_body, replay, tool_calls
from authserver.resource.middleware import STATE_KEY, _credentials
from authserver.resource.verifier import VerifiedToken

log = logging.getLogger("authserver.resource.reporting")

Outcome = Literal["success", "error", "denied"]
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))
DEFAULT_PATH = "/tool-calls"
MAX_TOOL_NAME = 128
RETRY_DELAY = 0.5


@dataclass(frozen=True)
class _Report:
    token: str
    tool: str
    outcome: str
    at: int


class ToolCallReporter:
    """Sends tool-call reports to authserver in the background. Build one per process and share it."""

    def __init__(self, issuer: str, client_id: str, client_secret: str, *, endpoint: str | None = None,
                 timeout: float = 3.0, max_queue: int = 1000, http_client: httpx.AsyncClient | None = None,
                 metadata_retry_interval: float = 30.0) -> None:
        """``endpoint`` defaults to the metadata's ``tool_call_endpoint``, else ``{issuer}/tool-calls``.

        ``http_client``: yours to close; by default the reporter makes one on first use and closes it
        in ``aclose``.
        """
        self.issuer = check_url(issuer, "issuer")
        if not client_id or not client_secret:
            raise ValueError("tool-call reports need the resource server's client_id and client_secret")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self._endpoint = check_url(endpoint, "endpoint") if endpoint else None
        self._fallback = self.issuer.rstrip("/") + DEFAULT_PATH
        self._authorization = basic_auth(client_id, client_secret)
        self._timeout = timeout
        self._max_queue = max_queue
        self._given_client = http_client
        self._metadata_retry_interval = metadata_retry_interval
        self._queue: asyncio.Queue[_Report] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None
        self._fetcher = Fetcher(http_client, timeout=timeout)
        self._metadata = AuthServerMetadata(self.issuer, self._fetcher, retry_interval=metadata_retry_interval)
        self.dropped = 0

    def __repr__(self) -> str:
        return f"ToolCallReporter(issuer={self.issuer!r})"

    def report(self, token: str, tool: str, outcome: Outcome, *, at: int | None = None) -> None:
        """Queue one report and return at once (call it from the event loop). Never raises for a full queue."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}")
        queue = self._started()
        try:
            queue.put_nowait(_Report(token, tool, outcome, int(time.time()) if at is None else at))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("tool-call report queue is full (%d): dropped the report of %r", self._max_queue, tool)

    def _started(self) -> asyncio.Queue[_Report]:
        """The queue, with its worker running on the current loop (started on first use, or anew on a new loop)."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._worker is None or self._worker.done():
            if self._queue is None or self._loop is not loop:
                self._queue = asyncio.Queue(self._max_queue)
                if self._given_client is None:
                    # A client is bound to the loop it first ran on: one per loop, closed in aclose.
                    self._http = httpx.AsyncClient(timeout=self._timeout)
                    self._fetcher = Fetcher(self._http, timeout=self._timeout)
                    self._metadata = AuthServerMetadata(self.issuer, self._fetcher,
                                                        retry_interval=self._metadata_retry_interval)
            self._loop = loop
            self._worker = loop.create_task(self._run(self._queue), name="tool-call reporter")
        return self._queue

    async def _run(self, queue: asyncio.Queue[_Report]) -> None:
        while True:
            item = await queue.get()
            try:
                await self._send(item)
            except Exception:  # a reporting bug must not kill the worker
                log.exception("tool-call report of %r failed", item.tool)
            finally:
                queue.task_done()

    async def endpoint(self) -> str:
        if self._endpoint:
            return self._endpoint
        try:
            self._endpoint = await self._metadata.endpoint("tool_call_endpoint")
            return self._endpoint
        except AuthServerUnavailableError as exc:
            log.debug("no tool_call_endpoint from the metadata (%s); using %s", exc, self._fallback)
            return self._fallback

    async def _send(self, item: _Report) -> None:
        body = {"token": item.token, "tool": item.tool, "outcome": item.outcome, "at": item.at}
        headers = {"Authorization": self._authorization}
        for attempt in (1, 2):
            endpoint = await self.endpoint()
            try:
                status = await self._fetcher.post_json(endpoint, body, headers, "tool-call endpoint")
            except AuthServerUnavailableError as exc:
                problem = f"{exc} ({exc.__cause__.__class__.__name__})" if exc.__cause__ else str(exc)
            else:
                if status < 300:
                    return
                problem = f"HTTP {status}"
                if status < 500:
                    break  # refused: retrying the same report cannot help
            if attempt == 1:
                await asyncio.sleep(RETRY_DELAY)
        log.warning("tool-call report of %r (%s) not accepted: %s", item.tool, item.outcome, problem)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Send what is queued (for at most ``timeout`` seconds), then stop the worker."""
        queue, worker = self._queue, self._worker
        if queue is not None and worker is not None and not worker.done() and self._loop is asyncio.get_running_loop():
            try:
                await asyncio.wait_for(queue.join(), timeout)
            except TimeoutError:
                log.warning("tool-call reporter closed with %d reports unsent", queue.qsize())
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await worker
        self._queue = self._worker = self._loop = None
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()


class ToolCallReportMiddleware:
    """ASGI middleware reporting each ``tools/call`` with its outcome; see the module docstring."""

    def __init__(self, app: ASGIApp, reporter: ToolCallReporter, *, max_body_bytes: int = MAX_BODY_BYTES,
                 max_scan_bytes: int = 256 * 1024) -> None:
        self.app = app
        self.reporter = reporter
        self.max_body_bytes = max_body_bytes
        self.max_scan_bytes = max_scan_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._closing_on_shutdown(receive), send)
            return
        verified: VerifiedToken | None = scope.get("state", {}).get(STATE_KEY)
        token = _raw_bearer(scope)
        if scope["type"] != "http" or scope.get("method") != "POST" or verified is None or token is None:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive, self.max_body_bytes)
        receive = replay(body, receive)
        calls = [c for c in tool_calls(body.data) if 0 < len(c.name) <= MAX_TOOL_NAME] if body.complete else []
        if not calls:
            await self.app(scope, receive, send)
            return
        at = _call_time(verified)
        status = 500
        content_type = ""
        scanned = bytearray()

        async def watching_send(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = int(message["status"])
                content_type = next((v.decode("latin-1") for k, v in message.get("headers", [])
                                     if k.lower() == b"content-type"), "")
            elif message["type"] == "http.response.body" and len(scanned) < self.max_scan_bytes:
                scanned.extend(message.get("body", b"")[: self.max_scan_bytes - len(scanned)])
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception:
            for call in calls:
                self.reporter.report(token, call.name, "error", at=at)
            raise
        failed = failed_request_ids(content_type, bytes(scanned)) if status < 400 else []
        for call in calls:
            outcome: Outcome = ("denied" if status in (401, 403) else "error" if status >= 400
                                else "error" if call.id is not None and call.id in failed else "success")
            self.reporter.report(token, call.name, outcome, at=at)

    def _closing_on_shutdown(self, receive: Receive) -> Receive:
        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.reporter.aclose()
            return message

        return lifespan_receive


def _raw_bearer(scope: Scope) -> str | None:
    values = [v for k, v in scope.get("headers", []) if k == b"authorization"]
    return _credentials(values[0].decode("latin-1"))[1] if len(values) == 1 else None


def _call_time(verified: VerifiedToken) -> int:
    """Now, but never before the token's ``iat`` (authserver refuses that; our clock may lag its own)."""
    iat = verified.claims.get("iat")
    now = int(time.time())
    return max(now, iat) if isinstance(iat, int) and not isinstance(iat, bool) else now
