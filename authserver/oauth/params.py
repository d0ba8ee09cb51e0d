"""Reading OAuth parameters: each may appear at most once (RFC 6749 §3.1, §3.2)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import parse_qsl

from fastapi import Request

from authserver.errors import AppError, InvalidRequest, InvalidTarget
from authserver.uris import canonical_resource_uri

FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
MAX_FORM_FIELDS = 100


class Params(dict[str, str]):
    """Single-valued parameters; ``repeated`` names those that came more than once.

    ``malformed`` is set when a name or value holds a NUL or other control character: no
    OAuth parameter has one, and PostgreSQL text cannot store NUL.
    """

    repeated: tuple[str, ...] = ()
    malformed: bool = False
    # The request's size as sent (the raw query string or form body), in bytes; 0 when unknown.
    size: int = 0

    def optional(self, name: str) -> str | None:
        value = self.get(name)
        return value if value not in (None, "") else None


def collect(items: Iterable[tuple[str, object]]) -> Params:
    params = Params()
    repeated: list[str] = []
    for key, value in items:
        if not isinstance(value, str):
            continue  # file uploads have no place in OAuth
        if has_control_characters(key) or has_control_characters(value):
            params.malformed = True
        if key in params:
            repeated.append(key)
        params[key] = value
    params.repeated = tuple(dict.fromkeys(repeated))
    return params


CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f]")


def has_control_characters(value: str) -> bool:
    return CONTROL_CHARACTERS.search(value) is not None


def has_control_or_format_characters(value: str) -> bool:
    """Any Unicode control (Cc, NUL included) or formatting character (Cf: bidirectional overrides,
    zero-width joiners), which can disguise a name shown to a person."""
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value)


async def read_form_items(request: Request, max_fields: int = 100) -> list[tuple[str, object]]:
    """The form's items; a body the parser refuses (too many fields, malformed) is ``invalid_request``."""
    try:
        form = await request.form(max_files=0, max_fields=max_fields)
    except Exception as exc:  # Starlette raises HTTPException or MultiPartException by case
        raise InvalidRequest("the form body could not be read", detail=str(exc)) from None
    return list(form.multi_items())


async def read_form(request: Request) -> Params:
    """The form body of a token-style endpoint; anything but urlencoded is refused.

    Parsed with ``urllib.parse`` rather than Starlette's multipart-capable parser: a token request
    is a few short fields, and this is a tenth of the work. The result is the same (bytes taken
    as Latin-1, percent-escapes as UTF-8, ``+`` as space, blank values kept). The body's size is
    bounded by ``middleware.BodyLimit``, which wraps every route, the hot ones included.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise InvalidRequest(f"the request body must be {FORM_TYPE}")
    body = await request.body()
    try:
        items = parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError as exc:
        raise InvalidRequest("the form body could not be read", detail=str(exc)) from None
    return collect(items)


async def read_json_bytes(request: Request, max_bytes: int) -> bytes:
    """The raw body of a small JSON endpoint: ``application/json`` only, at most ``max_bytes``
    (413 in the shape of ``middleware.BodyLimit``, whether or not Content-Length is sent)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != JSON_TYPE:
        raise InvalidRequest(f"the request body must be {JSON_TYPE}")
    too_large = InvalidRequest("request body too large", status_code=413)
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


def reject_repeated(params: Params) -> None:
    if params.malformed:
        raise InvalidRequest("a parameter contains control characters")
    if params.repeated:
        raise InvalidRequest(f"parameter {params.repeated[0]!r} is repeated")


def require(params: Params, name: str) -> str:
    value = params.optional(name)
    if value is None:
        raise InvalidRequest(f"missing parameter {name!r}")
    return value


def resource_param(given: str) -> str:
    """RFC 8707 ``resource`` in canonical form, or ``invalid_target``."""
    try:
        return canonical_resource_uri(given)
    except AppError:
        raise InvalidTarget("resource must be an absolute URI without a fragment") from None


def scope_tokens(value: str) -> list[str]:
    """RFC 6749 §3.3: the scope-tokens of a ``scope`` value, each once, in order.

    Only SP separates them (runs of SP are tolerated): ``str.split()`` would also split on
    no-break and ideographic spaces, turning one invalid token into several valid ones. A token
    outside the scope-token grammar is kept as it is; it names no registered scope, so the caller
    refuses it with ``invalid_scope``.
    """
    return list(dict.fromkeys(token for token in value.split(" ") if token))
