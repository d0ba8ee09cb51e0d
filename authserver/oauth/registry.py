"""Where a ``client_id`` is resolved to a client.

Pre-registered and dynamically registered clients live in the clients table; a URL
``client_id`` (Client ID Metadata Document) is resolved here too once supported, so
every endpoint asks one place.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from authserver.clients import repository as clients
from authserver.clients.models import Client
from authserver.db import utcnow


class ClientRegistry:
    def find(self, session: Session, client_id: str) -> Client | None:
        if len(client_id) > 2048:
            return None
        client = clients.get(session, client_id)
        if client is not None and client.expires_at is not None and client.expires_at <= utcnow():
            return None
        return client
