"""Tool-call reports: an MCP server tells us which tool it ran under a grant, so the person can see it.

``POST {issuer}/tool-calls`` with ``application/json`` ``{"token", "tool", "outcome", "at"}``,
authenticated with ``client_secret_basic`` as the resource server's own introspecting client
(confidential, ``can_introspect``); answered ``204``. Each report becomes one audit event,
``tool.called``, linked to the grant (actor = the token's subject, client = the token's client),
which the person's account page lists ("Calendar assistant used create_event on Calendar, 10:02").

Why the access token itself is sent, not just its ``jti``: the token is the proof. Its signature
shows we issued it, and its ``aud`` shows which resource it was for, so a resource server can only
report calls made under tokens issued *for a resource it serves* (its client's ``resources``),
never invent activity for another server's grants or for grants that do not exist. The resource
server already sends the same tokens to ``/introspect``; this asks for no more trust than that.

Why expired tokens are accepted for a while (``EXPIRED_GRACE``): the call ran while the token was
valid, and the report is sent afterwards, from a queue, with a retry; a token that expired during
that time still proves the call. Nothing else is relaxed: signature, ``alg``, ``typ``, issuer and
the ``iat``/``nbf`` checks are those of every access token, and ``at`` must lie within the token's
lifetime (``iat`` to ``exp``, with the clock skew allowed).

Why arguments and results are never accepted: they are the person's data (event titles, email
text), and an audit log that people and operators read must not become a second copy of it. The
body model forbids unknown fields, so a resource server that tries to send ``arguments`` is
refused outright (nothing is stored) instead of having them silently dropped.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from authserver.audit.log import FAILURE, SUCCESS, record
from authserver.clients.models import Client
from authserver.db import utcnow
from authserver.deps import ServicesDep
from authserver.errors import NO_STORE, InvalidClient, InvalidRequest, InvalidToken, UnauthorizedClient
from authserver.interaction import consents
from authserver.oauth.client_auth import BASIC_CHALLENGE, authenticate_client, basic_credentials
from authserver.oauth.params import Params, has_control_or_format_characters, read_json_bytes
from authserver.oauth.registry import ClientRegistry
from authserver.services import Services
from authserver.tokens.access import decode_access_token

PATH = "/tool-calls"
EVENT = "tool.called"
MAX_BODY_BYTES = 4 * 1024
EXPIRED_GRACE = 300  # seconds a token may have expired and still back a report
FUTURE_SKEW = 60  # seconds ``at`` may lie ahead of our clock


class ToolCallReport(BaseModel):
    """The whole body. Unknown fields (``arguments``, ``result``…) are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(min_length=1, max_length=MAX_BODY_BYTES)
    tool: str = Field(min_length=1, max_length=128)
    outcome: Literal["success", "error", "denied"]
    at: int | float | None = Field(default=None, allow_inf_nan=False)  # unix seconds; default: now

    @field_validator("tool")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        # Shown on the account page: no control or bidirectional-override characters.
        if has_control_or_format_characters(value):
            raise ValueError("must not contain control or formatting characters")
        return value


def router(registry: ClientRegistry) -> APIRouter:
    api = APIRouter()

    @api.post(PATH)
    async def report_tool_call(request: Request, services: ServicesDep) -> Response:
        body = await read_json_bytes(request, MAX_BODY_BYTES)
        ip = request.client.host if request.client else None

        def work() -> None:
            with services.db.session() as session:
                caller = authenticate_reporter(session, registry, request)
                record_tool_call(session, services, caller, parse_report(body), ip, now=time.time())

        await run_in_threadpool(work)
        return Response(status_code=204, headers=NO_STORE)

    return api


def authenticate_reporter(session: Session, registry: ClientRegistry, request: Request) -> Client:
    """The resource server's own client, exactly as at ``/introspect``: confidential, Basic, ``can_introspect``."""
    if basic_credentials(request) is None:
        raise InvalidClient("client authentication is required", headers=BASIC_CHALLENGE)
    caller = authenticate_client(session, registry, request, Params())
    if caller.is_public:
        raise InvalidClient("tool-call reports require a confidential client", headers=BASIC_CHALLENGE)
    if not caller.can_introspect:
        raise UnauthorizedClient("this client may not report tool calls", status_code=403,
                                 detail=f"{caller.client_id!r} lacks can_introspect")
    return caller


def parse_report(body: bytes) -> ToolCallReport:
    try:
        return ToolCallReport.model_validate_json(body)
    except ValidationError as exc:
        # Locations and types only: the input holds the token.
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidRequest(f"the report is malformed ({where}: {first['type']})",
                             detail=str([(e["loc"], e["type"]) for e in exc.errors()])) from None


def require_token_for_callers_resource(services: Services, caller: Client, token: str) -> dict[str, Any]:
    """Our signature, issuer and ``typ``, expired at most ``EXPIRED_GRACE`` ago, ``aud`` one of the caller's."""
    claims = decode_access_token(services.keys, token, issuer=services.settings.issuer, expired_for=EXPIRED_GRACE)
    if claims is None:
        raise InvalidToken("the token is not a valid access token of this server (or expired too long ago)",
                           status_code=400)
    audience = claims["aud"]
    if not isinstance(audience, str) or audience not in caller.resources:
        raise InvalidToken("the token was not issued for a resource this client serves", status_code=400,
                           detail=f"{caller.client_id!r} reported a token for {audience!r}")
    return claims


def call_time(at: float | None, claims: dict[str, Any], now: float) -> float:
    """``at``, or now; never more than ``FUTURE_SKEW`` ahead of us, never outside the token's lifetime."""
    if at is None:
        return now
    if at > now + FUTURE_SKEW:
        raise InvalidRequest(f"'at' is more than {FUTURE_SKEW} seconds in the future")
    if at < claims["iat"]:
        raise InvalidRequest("'at' is before the token was issued")
    if at > claims["exp"] + FUTURE_SKEW:
        raise InvalidRequest("'at' is after the token expired: no call can have been made with it then")
    return at


def record_tool_call(session: Session, services: Services, caller: Client, report: ToolCallReport,
                     ip: str | None, *, now: float) -> None:
    claims = require_token_for_callers_resource(services, caller, report.token)
    called_at = datetime.fromtimestamp(call_time(report.at, claims, now), UTC)
    record(session, EVENT, actor=claims["sub"], client_id=claims["client_id"], ip=ip,
           outcome=SUCCESS if report.outcome == "success" else FAILURE,
           tool=report.tool, tool_outcome=report.outcome, resource=claims["aud"], jti=claims["jti"],
           reported_by=caller.client_id, called_at=called_at.isoformat(timespec="seconds"))
    try:
        user_id = uuid.UUID(claims["sub"])
    except (ValueError, TypeError, AttributeError):
        return  # a client_credentials token: the subject is the client, there is no consent
    consents.mark_used(session, user_id, claims["client_id"], claims["aud"], utcnow())
