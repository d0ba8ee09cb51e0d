"""Tool-call reports (``POST /tool-calls``): who may report, which tokens count, what is stored.

Tokens come from the real authorization-code flow (tests/oauth_helpers); attack tokens are
minted with the app's own key ring or a stranger's key. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from authserver.app import create_app
from authserver.clients import repository as clients
from authserver.db import Database
from authserver.resource import ToolCallReporter, ToolCallReportMiddleware, VerifiedToken
from authserver.resource.jsonrpc import failed_request_ids
from authserver.resource.reporting import Outcome
from authserver.tokens.access import issue_access_token
from tests.conftest import ISSUER, make_settings
from tests.live import serve
from tests.oauth_helpers import (
    OTHER_RESOURCE,
    RESOURCE,
    World,
    authorize_params,
    exchange,
    pkce_pair,
    query,
    run_flow,
    seed,
    sql,
    user_id,
)

PATH = "/tool-calls"
SECRET_ARGUMENT = "Dinner with the oncologist"  # what a tool call's arguments might hold; never stored


@dataclass
class Setup:
    world: World
    rs: tuple[str, str]  # the calendar MCP server's introspecting client
    token: str  # alice's access token for RESOURCE, issued to the public client


def _client(db: Database, name: str, *, resources: list[str], can_introspect: bool = True,
            public: bool = False) -> tuple[str, str]:
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name=name, public=public, grant_types=["authorization_code"] if public else ["client_credentials"],
            redirect_uris=["https://rs.example.com/cb"] if public else [], resources=resources,
            can_introspect=can_introspect))
        return created.client.client_id, created.client_secret or ""


def _access_token(client: TestClient, world: World) -> str:
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, scope="read:calendar write:calendar"))
    response = exchange(client, query(location)["code"], verifier, world.public_id)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
def setup(client: TestClient, db: Database) -> Setup:
    world = seed(db)
    rs = _client(db, "Calendar MCP server", resources=[RESOURCE])
    return Setup(world, rs, _access_token(client, world))


def report(client: TestClient, auth: tuple[str, str] | None, body: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
    return client.post(PATH, json=body, auth=auth, **kwargs)


def good(token: str, **extra: Any) -> dict[str, Any]:
    return {"token": token, "tool": "create_event", "outcome": "success", **extra}


def rows(db: Database) -> list[tuple[Any, ...]]:
    return sql(db, "SELECT event, outcome, actor, client_id, ip, detail FROM audit_events "
                   "WHERE event = 'tool.called' ORDER BY id")


def _detail(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


def assert_refused(response: Any, db: Database, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"
    assert rows(db) == []


def _mint(app: FastAPI, **overrides: Any) -> str:
    now = int(time.time())
    values: dict[str, Any] = {"issuer": ISSUER, "subject": "u1", "audience": RESOURCE, "client_id": "c1",
                              "scopes": ["read:calendar"], "ttl": 300, "now": now}
    values.update(overrides)
    return issue_access_token(app.state.services.keys, **values).token


# --------------------------------------------------------------------------- who may report


def test_a_report_without_client_authentication_is_invalid_client(client: TestClient, db: Database,
                                                                   setup: Setup) -> None:
    response = report(client, None, good(setup.token))
    assert_refused(response, db, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


def test_a_wrong_client_secret_is_invalid_client(client: TestClient, db: Database, setup: Setup) -> None:
    assert_refused(report(client, (setup.rs[0], "not-the-secret"), good(setup.token)), db, 401, "invalid_client")


def test_a_public_client_cannot_report(client: TestClient, db: Database, setup: Setup) -> None:
    public_id, _ = _client(db, "Public RS", resources=[RESOURCE], public=True)
    assert_refused(report(client, (public_id, ""), good(setup.token)), db, 401, "invalid_client")
    # Claiming the public client_id with any secret is no better.
    assert_refused(report(client, (public_id, "x"), good(setup.token)), db, 401, "invalid_client")


def test_a_confidential_client_without_can_introspect_is_unauthorized(client: TestClient, db: Database,
                                                                      setup: Setup) -> None:
    plain = _client(db, "Not a resource server", resources=[RESOURCE], can_introspect=False)
    assert_refused(report(client, plain, good(setup.token)), db, 403, "unauthorized_client")
    # The token's own client (confidential, not introspecting) may not report either.
    own = (setup.world.confidential_id, setup.world.confidential_secret)
    assert_refused(report(client, own, good(setup.token)), db, 403, "unauthorized_client")


def test_a_resource_server_cannot_report_tokens_of_a_resource_it_does_not_serve(
        client: TestClient, db: Database, setup: Setup) -> None:
    mail_rs = _client(db, "Mail MCP server", resources=[OTHER_RESOURCE])
    response = report(client, mail_rs, good(setup.token))
    assert_refused(response, db, 400, "invalid_token")
    assert "resource" in response.json()["error_description"]


# --------------------------------------------------------------------------- which tokens count


def test_forged_unsigned_foreign_and_garbage_tokens_are_refused(client: TestClient, app: FastAPI, db: Database,
                                                                setup: Setup) -> None:
    claims = jwt.decode(setup.token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(setup.token)["kid"]
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, stranger, algorithm="ES256", headers={"typ": "at+jwt", "kid": kid})
    header, payload, _ = setup.token.split(".")
    none_header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "at+jwt", "kid": kid}).encode())
    unsigned = f"{none_header.rstrip(b'=').decode()}.{payload}."
    tampered_claims = {**claims, "aud": RESOURCE, "sub": "someone-else"}
    tampered_payload = base64.urlsafe_b64encode(json.dumps(tampered_claims).encode()).rstrip(b"=").decode()
    tampered = f"{header}.{tampered_payload}.{setup.token.split('.')[2]}"
    foreign_issuer = _mint(app, issuer="https://evil.example.com")
    for token in (forged, unsigned, tampered, foreign_issuer, "garbage", "a.b.c"):
        response = report(client, setup.rs, good(token))
        assert_refused(response, db, 400, "invalid_token")


def test_a_token_expired_less_than_five_minutes_ago_still_backs_a_report(client: TestClient, app: FastAPI,
                                                                         db: Database, setup: Setup) -> None:
    expired = _mint(app, now=int(time.time()) - 400, ttl=300)  # expired 100 s ago
    assert report(client, setup.rs, good(expired)).status_code == 204
    assert len(rows(db)) == 1


def test_a_call_time_after_the_token_expired_is_refused(client: TestClient, app: FastAPI, db: Database,
                                                       setup: Setup) -> None:
    expired = _mint(app, now=int(time.time()) - 400, ttl=300)  # expired 100 s ago
    assert_refused(report(client, setup.rs, good(expired, at=time.time())), db, 400, "invalid_request")


def test_a_token_expired_more_than_five_minutes_ago_is_refused(client: TestClient, app: FastAPI, db: Database,
                                                               setup: Setup) -> None:
    expired = _mint(app, now=int(time.time()) - 700, ttl=300)  # expired 400 s ago
    assert_refused(report(client, setup.rs, good(expired)), db, 400, "invalid_token")


# --------------------------------------------------------------------------- what the body may hold


def test_arguments_and_other_unknown_fields_are_refused_and_nothing_is_stored(client: TestClient, db: Database,
                                                                               setup: Setup) -> None:
    for extra in ({"arguments": {"title": SECRET_ARGUMENT}}, {"result": SECRET_ARGUMENT}, {"jti": "x"}):
        assert_refused(report(client, setup.rs, good(setup.token, **extra)), db, 400, "invalid_request")
    assert SECRET_ARGUMENT not in json.dumps(sql(db, "SELECT * FROM audit_events"), default=str)


@pytest.mark.parametrize("change", [
    {"outcome": "maybe"}, {"tool": ""}, {"tool": "x" * 129}, {"tool": "create\u202eevent"}, {"tool": "a\nb"},
    {"tool": 7}, {"at": "1700000000"}, {"at": True}, {"token": None},
])
def test_malformed_reports_are_invalid_request(client: TestClient, db: Database, setup: Setup,
                                               change: dict[str, Any]) -> None:
    assert_refused(report(client, setup.rs, {**good(setup.token), **change}), db, 400, "invalid_request")


def test_a_report_that_is_not_json_is_invalid_request(client: TestClient, db: Database, setup: Setup) -> None:
    as_form = client.post(PATH, data=good(setup.token), auth=setup.rs)
    assert_refused(as_form, db, 400, "invalid_request")
    broken = client.post(PATH, content=b"{not json", auth=setup.rs, headers={"content-type": "application/json"})
    assert_refused(broken, db, 400, "invalid_request")


def test_an_oversized_report_is_refused(client: TestClient, db: Database, setup: Setup) -> None:
    body = json.dumps(good(setup.token, tool="t", padding="x" * 5000)).encode()
    declared = client.post(PATH, content=body, auth=setup.rs, headers={"content-type": "application/json"})
    assert_refused(declared, db, 413, "invalid_request")

    def chunks():  # type: ignore[no-untyped-def]
        yield body[:3000]
        yield body[3000:]

    streamed = client.post(PATH, content=chunks(), auth=setup.rs, headers={"content-type": "application/json"})
    assert_refused(streamed, db, 413, "invalid_request")


def test_a_call_time_far_in_the_future_or_before_the_token_is_refused(client: TestClient, db: Database,
                                                                      setup: Setup) -> None:
    iat = jwt.decode(setup.token, options={"verify_signature": False})["iat"]
    for at in (time.time() + 3600, iat - 10):
        assert_refused(report(client, setup.rs, good(setup.token, at=at)), db, 400, "invalid_request")


# --------------------------------------------------------------------------- what is stored


def test_a_good_report_stores_one_tool_called_event_linked_to_the_grant(client: TestClient, db: Database,
                                                                        setup: Setup) -> None:
    claims = jwt.decode(setup.token, options={"verify_signature": False})
    at = int(time.time())
    response = report(client, setup.rs, good(setup.token, at=at))
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert response.headers["cache-control"] == "no-store"

    (event, outcome, actor, client_id, ip, detail), = rows(db)
    alice = user_id(db, "alice")
    assert (event, outcome, actor, client_id, ip) == ("tool.called", "success", alice, setup.world.public_id,
                                                      "testclient")
    from datetime import UTC, datetime
    assert _detail(detail) == {"tool": "create_event", "tool_outcome": "success", "resource": RESOURCE,
                               "jti": claims["jti"], "reported_by": setup.rs[0],
                               "called_at": datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")}
    everything = json.dumps(sql(db, "SELECT * FROM audit_events WHERE event = 'tool.called'"), default=str)
    assert setup.token not in everything and setup.rs[1] not in everything

    (last_used,), = sql(db, "SELECT last_used_at FROM consents WHERE client_id = :c", c=setup.world.public_id)
    assert last_used is not None


@pytest.mark.parametrize(("reported", "stored"), [("error", "failure"), ("denied", "failure")])
def test_failed_and_denied_calls_are_stored_as_failures(client: TestClient, db: Database, setup: Setup,
                                                        reported: str, stored: str) -> None:
    body = {**good(setup.token), "outcome": reported, "tool": "list_events"}
    assert report(client, setup.rs, body).status_code == 204
    (_, outcome, _, _, _, detail), = rows(db)
    assert outcome == stored and _detail(detail)["tool_outcome"] == reported
    assert "called_at" in _detail(detail)  # default: now


def test_the_metadata_advertises_the_tool_call_endpoint(client: TestClient) -> None:
    metadata = client.get("/.well-known/oauth-authorization-server").json()
    assert metadata["tool_call_endpoint"] == f"{ISSUER}{PATH}"


# --------------------------------------------------------------------------- the kit: outcome detection

RS_RESOURCE = "http://127.0.0.1:8001/mcp"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingReporter(ToolCallReporter):
    """A real reporter whose ``report`` only records (what the middleware decided), sending nothing."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:8000", "rs", "secret")
        self.reports: list[tuple[str, str, str, int | None]] = []

    def report(self, token: str, tool: str, outcome: Outcome, *, at: int | None = None) -> None:
        self.reports.append((token, tool, outcome, at))


def _result(request_id: Any, *, is_error: bool = False) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": SECRET_ARGUMENT}],
                                                           "isError": is_error}}


def _error(request_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": "unknown tool"}}


def _sse(*messages: dict[str, Any]) -> bytes:
    return b"".join(b"event: message\r\ndata: " + json.dumps(m).encode() + b"\r\n\r\n" for m in messages)


async def _mcp_endpoint(request: Request) -> Response:
    """Answers each call as its tool name says: the shapes an MCP SDK produces."""
    body = await request.body()
    parsed = json.loads(body)
    messages = parsed if isinstance(parsed, list) else [parsed]
    calls = [(m["id"], m["params"]["name"]) for m in messages if m.get("method") == "tools/call"]
    first = calls[0][1] if calls else ""
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
    if first == "forbidden":
        return JSONResponse({"error": "insufficient_scope"}, status_code=403)
    if first == "unauthorized":
        return JSONResponse({"error": "invalid_token"}, status_code=401)
    if first == "boom":
        return JSONResponse({"error": "oops"}, status_code=500)
    answers = [_error(i) if "rpc_error" in name else _result(i, is_error="tool_error" in name)
               for i, name in calls]
    if "sse" in first:
        return Response(_sse(progress, *answers), media_type="text/event-stream")
    if not calls:
        return JSONResponse({"jsonrpc": "2.0", "id": parsed.get("id"), "result": {"tools": []}})
    return JSONResponse(answers if isinstance(parsed, list) else answers[0])


def _call(request_id: Any, name: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": name, "arguments": {"title": SECRET_ARGUMENT}}}


@pytest.mark.anyio
async def test_report_middleware_detects_outcomes_in_json_and_sse_responses() -> None:
    reporter = RecordingReporter()
    seen_bodies: list[bytes] = []

    async def recording_endpoint(request: Request) -> Response:
        seen_bodies.append(await request.body())
        return await _mcp_endpoint(request)

    inner = ToolCallReportMiddleware(Starlette(routes=[Route("/mcp", recording_endpoint, methods=["POST"])]),
                                     reporter)
    iat = int(time.time()) + 5  # the authorization server's clock runs a little ahead of ours

    async def with_token(scope: Any, receive: Any, send: Any) -> None:  # what BearerAuthMiddleware leaves
        scope.setdefault("state", {})["auth"] = VerifiedToken(
            subject="alice", client_id="c1", scopes=("read:calendar",), audience=RS_RESOURCE,
            expires_at=iat + 60, jti="j1", claims={"iat": iat})
        await inner(scope, receive, send)

    headers = {"authorization": "Bearer raw-token"}
    cases: list[tuple[Any, list[tuple[str, str]]]] = [
        (_call(1, "ok"), [("ok", "success")]),
        (_call(2, "tool_error"), [("tool_error", "error")]),
        (_call("a", "rpc_error"), [("rpc_error", "error")]),
        (_call(3, "sse_ok"), [("sse_ok", "success")]),
        (_call(4, "sse_tool_error"), [("sse_tool_error", "error")]),
        (_call(5, "forbidden"), [("forbidden", "denied")]),
        (_call(6, "unauthorized"), [("unauthorized", "denied")]),
        (_call(7, "boom"), [("boom", "error")]),
        ([_call(8, "ok"), {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, _call(10, "rpc_error")],
         [("ok", "success"), ("rpc_error", "error")]),
        ([_call(11, "sse_batch"), _call(12, "tool_error")], [("sse_batch", "success"), ("tool_error", "error")]),
        ({"jsonrpc": "2.0", "id": 13, "method": "tools/list"}, []),
    ]
    transport, transport_base = httpx.ASGITransport(app=with_token), "http://127.0.0.1:8001"
    async with httpx.AsyncClient(transport=transport, base_url=transport_base) as c:
        for body, expected in cases:
            reporter.reports.clear()
            content = json.dumps(body).encode()
            response = await c.post("/mcp", content=content, headers=headers)
            assert response.status_code in (200, 401, 403, 500)
            assert [(tool, outcome) for _, tool, outcome, _ in reporter.reports] == expected, body
            assert all(token == "raw-token" and at == iat for token, _, _, at in reporter.reports)
            assert seen_bodies[-1] == content  # replayed to the app unchanged
        # No verified token (not behind BearerAuthMiddleware): nothing to report.
        reporter.reports.clear()
        bare = ToolCallReportMiddleware(Starlette(routes=[Route("/mcp", _mcp_endpoint, methods=["POST"])]), reporter)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url=transport_base) as plain:
            assert (await plain.post("/mcp", json=_call(1, "ok"), headers=headers)).status_code == 200
        assert reporter.reports == []


def test_sse_scan_judges_only_complete_events() -> None:
    body = _sse(_result(1)) + b"data: " + json.dumps(_error(2)).encode()[:20]
    assert failed_request_ids("text/event-stream", body) == []
    multi = b'data: {"jsonrpc": "2.0", "id": 3,\ndata:  "error": {"code": 1}}\n\n'
    assert failed_request_ids("text/event-stream; charset=utf-8", multi) == [3]
    assert failed_request_ids("application/json", b"not json") == []


# --------------------------------------------------------------------------- the kit: sending


@dataclass
class Receiver:
    """A stand-in authorization server endpoint over real HTTP: records each report, answers from a script."""

    answers: list[int]
    received: list[tuple[str, dict[str, Any]]]

    def app(self, base: str) -> Starlette:
        async def endpoint(request: Request) -> Response:
            self.received.append((request.headers.get("authorization", ""), json.loads(await request.body())))
            return Response(status_code=self.answers.pop(0) if self.answers else 204)

        async def metadata(request: Request) -> JSONResponse:
            return JSONResponse({"issuer": base, "tool_call_endpoint": f"{base}/custom/tool-calls"})

        return Starlette(routes=[Route("/custom/tool-calls", endpoint, methods=["POST"]),
                                 Route("/.well-known/oauth-authorization-server", metadata)])


@pytest.mark.anyio
async def test_reporter_discovers_the_endpoint_retries_once_and_never_logs_the_token(
        caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(answers=[503, 204, 400, 500, 500], received=[])
    with serve(receiver.app) as base:
        reporter = ToolCallReporter(base, "rs:cal", "s3cret", timeout=2)
        with caplog.at_level(logging.DEBUG, logger="authserver.resource.reporting"):
            reporter.report("tok-1", "list_events", "success", at=1700000000)
            reporter.report("tok-2", "create_event", "denied")
            reporter.report("tok-3", "create_event", "error")
            await reporter.aclose(timeout=10)
    assert [body["token"] for _, body in receiver.received] == ["tok-1", "tok-1", "tok-2", "tok-3", "tok-3"]
    assert receiver.received[0][1] == {"token": "tok-1", "tool": "list_events", "outcome": "success",
                                       "at": 1700000000}
    assert receiver.received[0][0] == "Basic " + base64.b64encode(b"rs%3Acal:s3cret").decode()
    assert {"token", "tool", "outcome", "at"} == set(receiver.received[2][1])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and "HTTP 400" in warnings[0] and "HTTP 500" in warnings[1]
    assert not any("tok-" in r.getMessage() or "s3cret" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_reporter_drops_reports_when_the_queue_is_full_and_survives_an_unreachable_server(
        caplog: pytest.LogCaptureFixture) -> None:
    reporter = ToolCallReporter("http://127.0.0.1:9", "rs", "secret", endpoint="http://127.0.0.1:9/tool-calls",
                                timeout=0.5, max_queue=2)
    with caplog.at_level(logging.WARNING, logger="authserver.resource.reporting"):
        for _ in range(5):
            reporter.report("tok", "list_events", "success")  # returns at once
        assert reporter.dropped >= 2
        await reporter.aclose(timeout=10)
    messages = [r.getMessage() for r in caplog.records]
    assert any("queue is full" in m for m in messages) and any("not accepted" in m for m in messages)
    assert not any("tok" in m.replace("tool-call", "") for m in messages)


# --------------------------------------------------------------------------- end to end


@pytest.mark.anyio
async def test_the_calendar_demo_reports_its_tool_calls_end_to_end(db_url: str, db: Database) -> None:
    """Real uvicorn servers: authserver, and the calendar demo with its reporter; the official MCP SDK client."""
    from mcp.client.auth import OAuthClientProvider

    from examples.calendar_mcp.seed import MCP_CLIENT_ID
    from examples.calendar_mcp.seed import seed as seed_demo
    from examples.calendar_mcp.server import create_app as create_calendar_app
    from tests.test_mcp_sdk_e2e import (
        PASSWORD,
        USERNAME,
        HeadlessBrowser,
        MemoryStorage,
        Stack,
        Wire,
        _client_metadata,
        mcp_client,
    )

    def calendar(base: str) -> Any:
        resource = f"{base}/mcp"
        seeded = seed_demo(db, resource, username=USERNAME, password=PASSWORD, rotate_client_secret=True)
        assert seeded.client_secret
        reporter = ToolCallReporter(issuer, seeded.client_id, seeded.client_secret)
        return create_calendar_app(issuer, resource, reporter=reporter)

    with serve(lambda base: create_app(make_settings(db_url, issuer=base), db=db)) as issuer, \
            serve(calendar) as mcp_base:
        stack = Stack(issuer, f"{mcp_base}/mcp", db, cimd_base="")
        browser, storage, wire = HeadlessBrowser(issuer), MemoryStorage(), Wire()
        provider = OAuthClientProvider(server_url=stack.resource, client_metadata=_client_metadata(),
                                       storage=storage, redirect_handler=browser.redirect_handler,
                                       callback_handler=browser.callback_handler)
        async with browser.http, mcp_client(stack, provider, wire, "auto") as client:
            assert not (await client.call_tool("list_events", {})).is_error
            # 403 insufficient_scope, the SDK steps up, then the call succeeds.
            created = await client.call_tool("create_event", {"title": SECRET_ARGUMENT,
                                                              "start": "2030-01-07T09:00:00Z"})
            assert not created.is_error
        deadline = time.monotonic() + 5
        while len(rows(db)) < 3 and time.monotonic() < deadline:
            await anyio.sleep(0.05)
    found = rows(db)
    assert [(_detail(d)["tool"], _detail(d)["tool_outcome"], outcome) for _, outcome, _, _, _, d in found] == [
        ("list_events", "success", "success"), ("create_event", "denied", "failure"),
        ("create_event", "success", "success")]
    assert storage.client_info is not None
    alice = user_id(db, USERNAME)
    for _, _, actor, client_id, _, detail in found:
        assert (actor, client_id) == (alice, storage.client_info.client_id)
        assert _detail(detail)["reported_by"] == MCP_CLIENT_ID
        assert _detail(detail)["resource"] == stack.resource
    assert SECRET_ARGUMENT not in json.dumps(sql(db, "SELECT * FROM audit_events"), default=str)
    (last_used,), = sql(db, "SELECT last_used_at FROM consents WHERE client_id = :c", c=storage.client_info.client_id)
    assert last_used is not None
