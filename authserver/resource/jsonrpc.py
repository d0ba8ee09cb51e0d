"""Reading MCP's JSON-RPC traffic inside ASGI middleware, for middleware that must know which tools a
request calls (per-tool scopes, tool-call reports) before or after the MCP SDK handles it.

``read_body`` reads the request body up to a bound and ``replay`` hands it to the app unchanged
(with the unread rest of an over-long body still streaming behind it). ``tool_calls`` lists the
``tools/call`` requests of a POST body (one message or a batch); ``failed_request_ids`` scans a
response, JSON or an SSE event stream, for the ids answered with a JSON-RPC ``error`` or a tool
result flagged ``"isError": true``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from starlette.types import Message, Receive

MAX_BODY_BYTES = 4 * 1024 * 1024  # the MCP SDK's own default limit for one POST
RequestId = str | int | float


@dataclass(frozen=True)
class ToolCall:
    """One ``tools/call`` request: its JSON-RPC ``id`` (None when absent) and the tool's name ("" when not a string)."""

    id: RequestId | None
    name: str


@dataclass(frozen=True)
class Body:
    """A request body read up to a limit. ``complete`` is False when it was longer: ``data`` is then only
    the part read so far. ``disconnected``: the client went away before the end."""

    data: bytes
    complete: bool = True
    disconnected: bool = False


async def read_body(receive: Receive, max_bytes: int = MAX_BODY_BYTES) -> Body:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return Body(b"".join(chunks), complete=False, disconnected=True)
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = bool(message.get("more_body", False))
        if size > max_bytes and more:
            return Body(b"".join(chunks), complete=False)
        if not more:
            return Body(b"".join(chunks), complete=size <= max_bytes)


def replay(body: Body, receive: Receive) -> Receive:
    """A ``receive`` that yields what was read once, then defers to the real one (the rest, disconnects)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body.data, "more_body": not body.complete and not body.disconnected}
        return await receive()

    return replayed


def _messages(parsed: Any) -> list[Any]:
    return parsed if isinstance(parsed, list) else [parsed]


def _request_id(message: dict[str, Any]) -> RequestId | None:
    value = message.get("id")
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def tool_calls(body: bytes) -> list[ToolCall]:
    """The ``tools/call`` requests of a JSON-RPC POST body; [] when there are none or it is not JSON."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []  # the SDK answers with a JSON-RPC parse error
    calls = []
    for message in _messages(parsed):
        if isinstance(message, dict) and message.get("method") == "tools/call":
            params = message.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            calls.append(ToolCall(_request_id(message), name if isinstance(name, str) else ""))
    return calls


def called_tools(body: bytes) -> list[str]:
    """Names of the tools a JSON-RPC POST body calls (a single message or a batch); [] when none or not JSON."""
    return [call.name for call in tool_calls(body)]


def _sse_data(body: bytes) -> Iterator[str]:
    """The ``data`` of each complete event of a ``text/event-stream`` body (multi-line data joined by \\n)."""
    text = body.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    events = text.split("\n\n")
    if not text.endswith("\n\n"):
        events = events[:-1]  # the last event is cut off (or the stream goes on): not judged
    for event in events:
        data = [line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:")]
        if data:
            yield "\n".join(data)


def response_messages(content_type: str, body: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response body, JSON or SSE; what cannot be parsed is skipped."""
    media = content_type.split(";")[0].strip().lower()
    documents = list(_sse_data(body)) if media == "text/event-stream" else [body.decode("utf-8", errors="replace")]
    messages: list[dict[str, Any]] = []
    for document in documents:
        try:
            parsed = json.loads(document)
        except (ValueError, RecursionError):
            continue
        messages.extend(m for m in _messages(parsed) if isinstance(m, dict))
    return messages


def failed_request_ids(content_type: str, body: bytes) -> list[RequestId]:
    """Ids of the requests answered with a JSON-RPC ``error``, or with a result whose ``isError`` is true."""
    failed = []
    for message in response_messages(content_type, body):
        request_id = _request_id(message)
        result = message.get("result")
        if request_id is not None and ("error" in message or (isinstance(result, dict)
                                                              and result.get("isError") is True)):
            failed.append(request_id)
    return failed
