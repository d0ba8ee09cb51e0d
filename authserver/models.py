"""Every table, imported in one place so Alembic and tests see the whole schema."""

from authserver.audit.models import AuditEvent
from authserver.catalog.models import Resource, Scope
from authserver.clients.models import Client
from authserver.db import Base
from authserver.interaction.models import AuthorizationRequest, Consent, LoginSession
from authserver.keys.models import SigningKey
from authserver.limits.models import LimitCounter
from authserver.mfa.models import RecoveryCode, SecondStep, TotpFactor
from authserver.policy.models import InitialAccessToken, ServerSetting
from authserver.replay import UsedJti
from authserver.tokens.models import AuthorizationCode, RefreshToken, RevokedAccessToken
from authserver.users.models import User

metadata = Base.metadata

__all__ = [
    "AuditEvent", "AuthorizationCode", "AuthorizationRequest", "Base", "Client", "Consent", "InitialAccessToken",
    "LimitCounter", "LoginSession", "RecoveryCode",
    "RefreshToken", "Resource", "RevokedAccessToken", "Scope", "SecondStep", "ServerSetting", "SigningKey",
    "TotpFactor", "UsedJti", "User",
    "metadata",
]
