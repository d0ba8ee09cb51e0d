"""Connected apps as the person sees them: find one of their own, and disconnect it.

Every lookup is scoped to the signed-in person's user id, so a ``client_id`` and ``resource``
posted by someone else only ever name that someone's own grant, or nothing (404).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from authserver.errors import ErrorPage
from authserver.grants import service as grants
from authserver.grants.service import ConnectedApp
from authserver.users.models import User
from authserver.web.i18n import N_

NOT_CONNECTED = ErrorPage(N_("Not connected"),
                          N_("This app is not connected to your account, or it was disconnected already."),
                          status_code=404, detail="no such connected app for this person")


def connected(session: Session, user: User, now: datetime) -> list[ConnectedApp]:
    return grants.connected_apps(session, user.id, now)


def find(session: Session, user: User, client_id: str, resource: str, now: datetime) -> ConnectedApp:
    """The person's own connected app for (client, MCP server), else the 404 page."""
    for app in grants.connected_apps(session, user.id, now):
        if app.client_id == client_id and app.resource == resource:
            return app
    raise NOT_CONNECTED


def disconnect(session: Session, user: User, client_id: str, resource: str, now: datetime, *,
               ip: str | None) -> ConnectedApp:
    """End the grant (``grants.disconnect``); what was disconnected, for the confirmation message."""
    app = find(session, user, client_id, resource, now)
    grants.disconnect(session, user.id, client_id, resource, now, actor=str(user.id), ip=ip)
    return app
