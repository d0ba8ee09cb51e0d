"""RFC 7591 dynamic client registration and RFC 7592 management: the metadata schema and its rules.

Known metadata is validated strictly (types, lengths, URI rules); metadata we do not
understand is dropped, never stored or echoed (RFC 7591 §2 requires ignoring it).
The ``scope`` a client registers is informational, not a ceiling: MCP clients register
with one scope and step up later, so a self-registered client is bounded by each
resource's allowed scopes and the person's consent instead.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.orm import Session

from authserver.clients.jwks import JwksError, check_jwks_uri, check_public_jwks
from authserver.clients.models import Client
from authserver.errors import AppError, InvalidClientMetadata, InvalidRedirectUriMetadata
from authserver.secrets import hash_secret, new_client_id, new_secret
from authserver.uris import check_redirect_uri, is_loopback_uri

SELF_REGISTERED_GRANTS = frozenset({"authorization_code", "refresh_token"})
INFORMATIONAL = ("client_uri", "logo_uri", "tos_uri", "policy_uri", "contacts", "scope", "software_id",
                 "software_version")


class RegistrationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    redirect_uris: list[str] = Field(min_length=1, max_length=10)
    token_endpoint_auth_method: Literal["none", "client_secret_basic", "client_secret_post",
                                        "private_key_jwt"] = "client_secret_basic"
    # private_key_jwt (RFC 7591 §2): public keys inline or by https URL, never both.
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = Field(default=None, max_length=2048)
    token_endpoint_auth_signing_alg: Literal["ES256", "EdDSA", "PS256", "RS256"] | None = None
    grant_types: list[str] = Field(default_factory=lambda: ["authorization_code"], max_length=5)
    response_types: list[str] = Field(default_factory=lambda: ["code"], max_length=5)
    application_type: Literal["web", "native"] | None = None
    client_name: str | None = Field(default=None, max_length=200)
    client_uri: str | None = Field(default=None, max_length=2048)
    logo_uri: str | None = Field(default=None, max_length=2048)
    tos_uri: str | None = Field(default=None, max_length=2048)
    policy_uri: str | None = Field(default=None, max_length=2048)
    contacts: list[str] | None = Field(default=None, max_length=10)
    scope: str | None = Field(default=None, max_length=2000)
    software_id: str | None = Field(default=None, max_length=200)
    software_version: str | None = Field(default=None, max_length=100)
    # RFC 9449 §5.2: the client always sends DPoP proofs; token requests without one are refused.
    dpop_bound_access_tokens: bool = False
    # RFC 7592 update requests repeat these; they are checked, never taken from the client.
    client_id: str | None = Field(default=None, max_length=2048)
    client_secret: str | None = Field(default=None, max_length=200)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        # Shown on the consent page and stored as text: no NUL (PostgreSQL refuses it), no
        # control or bidirectional-override characters (they can disguise a client's name), no lone
        # surrogates (Cs: no text at all; PostgreSQL refuses them, SQLite would store them).
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in text):
                raise ValueError("must not contain control or formatting characters")
        return value

    @field_validator("client_uri", "logo_uri", "tos_uri", "policy_uri")
    @classmethod
    def _https_only(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https URL")
        # Shown as a link: no userinfo (``https://trusted@evil/``) and no backslash (read as ``/``).
        if value is not None and ("@" in value.split("/", 3)[2] or "\\" in value):
            raise ValueError("must be an https URL without userinfo or backslashes")
        return value


def parse(body: Any, *, allow_loopback_http: bool = False) -> RegistrationRequest:
    """``allow_loopback_http``: accept an http ``jwks_uri`` on a loopback host (AUTHSERVER_CIMD_ALLOW_LOOPBACK_HTTP)."""
    if not isinstance(body, dict):
        raise InvalidClientMetadata("the registration request must be a JSON object")
    try:
        request = RegistrationRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        if first["loc"] and first["loc"][0] == "redirect_uris":
            raise InvalidRedirectUriMetadata(f"redirect_uris: {first['msg']}") from None
        raise InvalidClientMetadata(f"{field}: {first['msg']}") from None
    for uri in request.redirect_uris:
        try:
            check_redirect_uri(uri)
        except AppError as exc:
            raise InvalidRedirectUriMetadata(str(exc)) from None
    loopback = all(is_loopback_uri(u) for u in request.redirect_uris)
    if request.application_type == "web" and any(is_loopback_uri(u) for u in request.redirect_uris):
        raise InvalidRedirectUriMetadata("a web application cannot use a loopback redirect URI; "
                                         "register application_type native")
    if request.application_type is None:
        request.application_type = "native" if loopback else "web"
    if set(request.response_types) != {"code"}:
        raise InvalidClientMetadata("response_types must be [\"code\"]")
    unsupported = set(request.grant_types) - SELF_REGISTERED_GRANTS
    if unsupported or "authorization_code" not in request.grant_types:
        raise InvalidClientMetadata("grant_types must be authorization_code, optionally with refresh_token")
    check_keys(request, allow_loopback_http=allow_loopback_http)
    return request


def check_keys(request: RegistrationRequest, *, allow_loopback_http: bool) -> None:
    """private_key_jwt needs exactly one of jwks (public keys only, bounded) and jwks_uri; other
    methods need neither (we would never use them)."""
    has_keys = request.jwks is not None or request.jwks_uri is not None
    if request.token_endpoint_auth_method != "private_key_jwt":
        if has_keys or request.token_endpoint_auth_signing_alg is not None:
            raise InvalidClientMetadata("jwks, jwks_uri and token_endpoint_auth_signing_alg are only used with "
                                        "token_endpoint_auth_method private_key_jwt")
        return
    if request.jwks is not None and request.jwks_uri is not None:
        raise InvalidClientMetadata("use jwks or jwks_uri, not both (RFC 7591 §2)")
    try:
        if request.jwks is not None:
            check_public_jwks(request.jwks)
        elif request.jwks_uri is not None:
            check_jwks_uri(request.jwks_uri, allow_loopback_http=allow_loopback_http)
        else:
            raise InvalidClientMetadata("private_key_jwt needs jwks or jwks_uri")
    except JwksError as exc:
        raise InvalidClientMetadata(str(exc)) from None


def apply(client: Client, request: RegistrationRequest) -> None:
    client.name = (request.client_name or "").strip() or "Unnamed application"
    client.redirect_uris = list(dict.fromkeys(request.redirect_uris))
    client.grant_types = list(dict.fromkeys(request.grant_types))
    client.application_type = request.application_type or "web"
    client.dpop_bound_access_tokens = request.dpop_bound_access_tokens
    client.extra_metadata = {k: getattr(request, k) for k in INFORMATIONAL if getattr(request, k) is not None}
    # An RFC 7592 update may rotate keys; the method itself never changes.
    client.jwks, client.jwks_uri = request.jwks, request.jwks_uri
    client.token_endpoint_auth_signing_alg = request.token_endpoint_auth_signing_alg


def register(session: Session, request: RegistrationRequest, *, ttl: int,
             now: datetime) -> tuple[Client, dict[str, str]]:
    """Create the client; returns it with the one-time secrets to show (client_secret, registration token)."""
    secrets: dict[str, str] = {"registration_access_token": new_secret(32)}
    client = Client(client_id=new_client_id(), kind="dynamic", verified=False,
                    token_endpoint_auth_method=request.token_endpoint_auth_method, scopes=[], resources=[],
                    default_scopes=[], created_at=now, expires_at=now + timedelta(seconds=ttl),
                    registration_token_hash=hash_secret(secrets["registration_access_token"]))
    if request.token_endpoint_auth_method.startswith("client_secret"):
        secrets["client_secret"] = new_secret(32)
        client.secret_hash = hash_secret(secrets["client_secret"])
    apply(client, request)
    session.add(client)
    session.flush()
    return client, secrets


def describe(client: Client, registration_client_uri: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_id": client.client_id,
        "client_id_issued_at": int(client.created_at.timestamp()),
        "client_name": client.name,
        "redirect_uris": client.redirect_uris,
        "grant_types": client.grant_types,
        "response_types": ["code"],
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "application_type": client.application_type,
        "dpop_bound_access_tokens": client.dpop_bound_access_tokens,
        "registration_client_uri": registration_client_uri,
        **client.extra_metadata,
    }
    if client.secret_hash is not None:
        body["client_secret_expires_at"] = 0
    for member, value in (("jwks", client.jwks), ("jwks_uri", client.jwks_uri),
                          ("token_endpoint_auth_signing_alg", client.token_endpoint_auth_signing_alg)):
        if value is not None:
            body[member] = value
    return body
