"""Every table, imported in one place so Alembic and tests see the whole schema."""

from authserver.audit.models import AuditEvent
from authserver.catalog.models import Resource, Scope
from authserver.clients.models import Client
from authserver.db import Base
from authserver.keys.models import SigningKey
from authserver.users.models import User

metadata = Base.metadata

__all__ = ["AuditEvent", "Base", "Client", "Resource", "Scope", "SigningKey", "User", "metadata"]
