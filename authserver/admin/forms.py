"""What the console sections of catalog, users, keys and policy share beyond ``common``.

A validation error is answered with the form again (the message next to its field, the typed
values kept, status 400) from *inside* the unit of work, and the unit is then rolled back: the
page is rendered first (a rollback expires the signed-in person's rows), then ``Reply`` carries
it out of the transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session
from starlette.responses import Response

from authserver.db import Database
from authserver.errors import AppError, ErrorPage, FieldError, NotFound

NOT_FOUND = ErrorPage("Not found", "There is no such item; it may have been deleted.", status_code=404)


class Reply(Exception):
    """A response decided inside a unit of work whose changes must not be kept."""

    def __init__(self, response: Response) -> None:
        super().__init__("reply")
        self.response = response


def unit_of_work(db: Database, work: Callable[[Session], Response]) -> Response:
    """``work`` in one transaction; a ``Reply`` rolls it back and is the answer; NotFound is a 404 page."""
    try:
        with db.session() as session:
            return work(session)
    except Reply as reply:
        return reply.response
    except NotFound:
        raise NOT_FOUND from None


def field_errors(exc: AppError) -> dict[str, str]:
    """Field name → message; a rule not tied to one field is shown at the top of the form (``form``)."""
    return dict(exc.errors) if isinstance(exc, FieldError) else {"form": str(exc)}


def checked(value: str | None) -> bool:
    return value in ("on", "1", "true", "yes")
