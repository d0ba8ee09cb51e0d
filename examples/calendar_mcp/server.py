"""A calendar MCP server (official ``mcp`` SDK, streamable HTTP) protected by authserver.

Two tools over an in-memory calendar per person (started with a few sample events when run as
below): ``list_events`` needs ``read:calendar`` (as
does the server as a whole), ``create_event`` needs ``write:calendar``. A client first gets
401 naming the metadata document and ``read:calendar``; a ``create_event`` call with a token
lacking ``write:calendar`` gets 403 ``insufficient_scope`` with ``scope="read:calendar
write:calendar"``, and the client re-authorizes for it (step-up).

Run (see ``make demo``, which also seeds the authorization server)::

    python -m examples.calendar_mcp --issuer http://127.0.0.1:8000 --resource http://127.0.0.1:8001/mcp

Settings come from the command line, else ``CALENDAR_MCP_ISSUER`` (else ``AUTHSERVER_ISSUER``),
``CALENDAR_MCP_RESOURCE``, ``CALENDAR_MCP_HOST`` and ``CALENDAR_MCP_PORT`` (default: the
resource URL's port).

Tool-call reports (opt-in, on in ``make demo``): given this server's own client
(``--report-client-id``/``--report-client-secret``, else ``CALENDAR_MCP_CLIENT_ID`` and
``CALENDAR_MCP_CLIENT_SECRET``; ``seed.py`` creates it), each tool call's name, outcome and time
are reported to authserver with the token it was made under, never its arguments or results (see
``authserver.resource.reporting``). The person then sees them on their account page.
"""

from __future__ import annotations

import argparse
import itertools
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlsplit

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from authserver.resource import (
    BearerAuthMiddleware,
    BearerVerifier,
    ToolCallReporter,
    ToolCallReportMiddleware,
    protected_resource_routes,
)
from examples.calendar_mcp.tool_scopes import ToolScopeMiddleware

DEFAULT_ISSUER = "http://127.0.0.1:8000"
DEFAULT_RESOURCE = "http://127.0.0.1:8001/mcp"
READ, WRITE = "read:calendar", "write:calendar"


@dataclass
class Event:
    id: int
    title: str
    start: str
    end: str | None = None


def sample_events(today: date) -> list[tuple[str, str, str]]:
    """What a demo calendar starts with, in the coming days: (title, start, end), ISO 8601 UTC."""
    def at(days: int, hour: int, minute: int = 0) -> str:
        return datetime.combine(today + timedelta(days=days), time(hour, minute), UTC).isoformat()

    return [("Team stand-up", at(1, 9, 30), at(1, 9, 45)),
            ("Lunch with Sam", at(1, 12, 30), at(1, 13, 30)),
            ("Dentist", at(3, 16), at(3, 16, 30)),
            ("Quarterly planning", at(7, 10), at(7, 12))]


class Calendar:
    """Events per person (the token's subject), in memory: restarting the server forgets them.

    With ``samples`` (the demo's, see ``sample_events``) each person's calendar starts with
    them, so ``list_events`` has something to show before anything was created.
    """

    def __init__(self, samples: Sequence[tuple[str, str, str]] = ()) -> None:
        self.events: dict[str, list[Event]] = {}
        self.ids = itertools.count(1)
        self.samples = list(samples)

    def _of(self, owner: str) -> list[Event]:
        if owner not in self.events:
            self.events[owner] = [Event(next(self.ids), *sample) for sample in self.samples]
        return self.events[owner]

    def list(self, owner: str) -> list[Event]:
        return sorted(self._of(owner), key=lambda e: e.start)

    def add(self, owner: str, title: str, start: str, end: str | None) -> Event:
        event = Event(next(self.ids), title, start, end)
        self._of(owner).append(event)
        return event


def _owner() -> str:
    token = get_access_token()  # set from the verified bearer token by ToolScopeMiddleware
    if token is None or not token.subject:
        raise PermissionError("no signed-in person")  # unreachable behind the middleware
    return token.subject


def build_server(calendar: Calendar) -> MCPServer:
    server = MCPServer("Calendar", instructions="A demo calendar protected by authserver.")

    @server.tool(description=f"List the events in your calendar (needs {READ}).")
    def list_events() -> list[dict[str, object]]:
        return [asdict(e) for e in calendar.list(_owner())]

    @server.tool(description=f"Add an event to your calendar (needs {WRITE}). Times are ISO 8601.")
    def create_event(title: str, start: str, end: str | None = None) -> dict[str, object]:
        return asdict(calendar.add(_owner(), title, start, end))

    return server


def create_app(issuer: str, resource: str, *, calendar: Calendar | None = None,
               reporter: ToolCallReporter | None = None) -> ASGIApp:
    """The protected ASGI app: MCP at the resource URL's path, its RFC 9728 metadata beside it.

    With a ``reporter``, every tool call is reported to authserver (outside the per-tool scope
    gate, so a step-up refusal is reported as ``denied``).
    """
    server = build_server(calendar or Calendar())
    url = urlsplit(resource)
    # -- "Protect your MCP server" in the README is the next five lines --
    verifier = BearerVerifier(issuer=issuer, resource=resource)
    app = server.streamable_http_app(streamable_http_path=url.path or "/", host=url.hostname or "")
    app.router.routes.extend(protected_resource_routes(resource, issuer, scopes_supported=[READ, WRITE]))
    gate: ASGIApp = ToolScopeMiddleware(app, {"list_events": [READ], "create_event": [WRITE]}, resource=resource)
    if reporter is not None:
        gate = ToolCallReportMiddleware(gate, reporter)
    return BearerAuthMiddleware(gate, verifier, required_scopes=[READ])


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m examples.calendar_mcp", description=__doc__.split("\n")[0])
    parser.add_argument("--issuer", default=env("CALENDAR_MCP_ISSUER") or env("AUTHSERVER_ISSUER") or DEFAULT_ISSUER,
                        help="the authorization server's issuer URL")
    parser.add_argument("--resource", default=env("CALENDAR_MCP_RESOURCE", DEFAULT_RESOURCE),
                        help="this server's MCP endpoint URL, as registered in authserver (the tokens' audience)")
    parser.add_argument("--host", default=env("CALENDAR_MCP_HOST", "127.0.0.1"), help="listen address")
    parser.add_argument("--port", type=int, default=env("CALENDAR_MCP_PORT"),
                        help="listen port (default: the resource URL's port)")
    parser.add_argument("--report-client-id", default=env("CALENDAR_MCP_CLIENT_ID"),
                        help="this server's confidential client at authserver, to report tool calls with")
    parser.add_argument("--report-client-secret", default=env("CALENDAR_MCP_CLIENT_SECRET"),
                        help="its secret (prefer the environment variable: arguments show up in ps)")
    args = parser.parse_args(argv)
    port = args.port or urlsplit(args.resource).port or 8001
    reporter = None
    if args.report_client_id and args.report_client_secret:
        reporter = ToolCallReporter(args.issuer, args.report_client_id, args.report_client_secret)
    elif args.report_client_id or args.report_client_secret:
        parser.error("tool-call reports need both --report-client-id and --report-client-secret")
    calendar = Calendar(sample_events(datetime.now(UTC).date()))
    app = create_app(args.issuer, args.resource, calendar=calendar, reporter=reporter)
    uvicorn.run(app, host=args.host, port=port, server_header=False)


if __name__ == "__main__":
    main()
