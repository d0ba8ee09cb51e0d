"""Reading OAuth parameters: each may appear at most once (RFC 6749 §3.1, §3.2)."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import Request

from authserver.errors import InvalidRequest

FORM_TYPE = "application/x-www-form-urlencoded"


class Params(dict[str, str]):
    """Single-valued parameters; ``repeated`` names those that came more than once."""

    repeated: tuple[str, ...] = ()

    def optional(self, name: str) -> str | None:
        value = self.get(name)
        return value if value not in (None, "") else None


def collect(items: Iterable[tuple[str, object]]) -> Params:
    params = Params()
    repeated: list[str] = []
    for key, value in items:
        if not isinstance(value, str):
            continue  # file uploads have no place in OAuth
        if key in params:
            repeated.append(key)
        params[key] = value
    params.repeated = tuple(dict.fromkeys(repeated))
    return params


async def read_form(request: Request) -> Params:
    """The form body of a token-style endpoint; anything but urlencoded is refused."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise InvalidRequest(f"the request body must be {FORM_TYPE}")
    form = await request.form(max_files=0, max_fields=100)
    return collect(form.multi_items())


def reject_repeated(params: Params) -> None:
    if params.repeated:
        raise InvalidRequest(f"parameter {params.repeated[0]!r} is repeated")


def require(params: Params, name: str) -> str:
    value = params.optional(name)
    if value is None:
        raise InvalidRequest(f"missing parameter {name!r}")
    return value
