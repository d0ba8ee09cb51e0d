"""Validating an authorization request (OAuth 2.1 §4.1.1, RFC 7636, RFC 8707, RFC 8252 §7.3).

The order matters (RFC 6749 §4.1.2.1): until the client and its redirect URI are
known to be right, every problem is shown as a page and nothing is redirected.
After that, problems go back to the client's redirect URI with ``state`` and ``iss``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from authserver.catalog import repository as catalog
from authserver.catalog.models import Resource
from authserver.catalog.repository import OFFLINE_ACCESS
from authserver.clients.models import Client
from authserver.errors import AppError, AuthorizationError, ErrorPage
from authserver.oauth.params import Params, scope_tokens
from authserver.oauth.pkce import challenge_problem
from authserver.oauth.registry import ClientLookupError, ClientRegistry
from authserver.settings import Settings
from authserver.uris import canonical_resource_uri, is_loopback_uri
from authserver.web.i18n import N_

KNOWN_PROMPTS = frozenset({"none", "login", "consent", "select_account"})
# An RFC 7638 SHA-256 thumbprint, base64url without padding.
JKT = re.compile(r"[A-Za-z0-9_-]{43}")

# Size limits of an authorization request. Each request is stored (interaction.flow) before anyone
# has signed in, so an unbounded one is free storage for anonymous callers. Real values are far
# smaller: state and nonce are opaque values clients make from 16-64 random bytes, scope is a few
# names, URIs stay well under 2 KB (the columns' size).
MAX_QUERY_BYTES = 8 * 1024
# Beyond this the request is not even parsed for a redirect: an error page answers (URI Too Long).
MAX_UNPARSED_BYTES = 32 * 1024
MAX_PARAMETERS = 50
MAX_PARAMETER_BYTES = {
    "client_id": 2048, "redirect_uri": 2048, "resource": 2048, "state": 512, "nonce": 512, "scope": 1024,
    "code_challenge": 128, "code_challenge_method": 16, "response_type": 32, "response_mode": 32, "prompt": 64,
}
# Any other parameter (unknown ones are ignored, RFC 6749 §3.1, but still bounded).
MAX_OTHER_PARAMETER_BYTES = 512


def parameter_too_long(name: str, value: str) -> bool:
    return len(value.encode("utf-8", "surrogatepass")) > MAX_PARAMETER_BYTES.get(name, MAX_OTHER_PARAMETER_BYTES)


def size_problem(params: Params) -> str | None:
    """Why the request is too large to accept, or None (checked once client and redirect URI are known)."""
    if params.size > MAX_QUERY_BYTES:
        return f"the request is larger than {MAX_QUERY_BYTES} bytes"
    if len(params) > MAX_PARAMETERS:
        return f"the request has more than {MAX_PARAMETERS} parameters"
    for name, value in params.items():
        if parameter_too_long(name, value) or len(name) > 64:
            limit = MAX_PARAMETER_BYTES.get(name, MAX_OTHER_PARAMETER_BYTES)
            return f"parameter {name[:64]!r} is longer than {limit} bytes"
    return None


@dataclass(frozen=True)
class AuthorizationParams:
    client: Client
    redirect_uri: str
    redirect_uri_given: bool
    state: str | None
    scopes: list[str]
    resource: Resource
    code_challenge: str
    prompt: frozenset[str]
    dpop_jkt: str | None = None  # RFC 9449 §10
    # OIDC Core §3.1.2.1: a sign-in older than this many seconds is not reused (0: always sign in).
    max_age: int | None = None

    def needs_fresh_sign_in(self, auth_time: datetime, now: datetime) -> bool:
        """prompt=login, or a sign-in older than max_age: the person signs in again."""
        return "login" in self.prompt or (
            self.max_age is not None and (self.max_age == 0 or now - auth_time > timedelta(seconds=self.max_age)))


MAX_AGE_LIMIT = 10 ** 9


def redirect_uri_matches(registered: list[str], given: str) -> bool:
    """Exact string match; a loopback redirect may differ only in its port (RFC 8252 §7.3)."""
    if given in registered:
        return True
    if not is_loopback_uri(given):
        return False
    try:
        g = urlsplit(given)
        g.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    if g.username or g.password or g.fragment:
        return False
    for uri in registered:
        r = urlsplit(uri)
        if is_loopback_uri(uri) and (r.scheme, r.hostname, r.path, r.query) == (g.scheme, g.hostname, g.path, g.query):
            return True
    return False


def check_client_and_redirect(session: Session, registry: ClientRegistry, params: Params) -> tuple[Client, str, bool]:
    """The client and the redirect URI to answer on; any doubt is an error page, never a redirect."""
    if params.malformed:
        raise ErrorPage(N_("Invalid request"), N_("The request contains characters no valid request has."))
    for name in ("client_id", "redirect_uri"):
        if name in params.repeated:
            raise ErrorPage(N_("Invalid request"), N_("The parameter %(name)s was sent more than once."),
                            params={"name": name})
    client_id = params.optional("client_id")
    if client_id is None:
        raise ErrorPage(N_("Invalid request"), N_("The request names no application (client_id is missing)."))
    for name in ("client_id", "redirect_uri"):
        if parameter_too_long(name, params.get(name, "")):
            # Before the client is known nothing is redirected (RFC 6749 §4.1.2.1).
            raise ErrorPage(N_("Invalid request"), N_("The parameter %(name)s is too long."), params={"name": name},
                            detail=f"{name} longer than {MAX_PARAMETER_BYTES[name]} bytes")
    try:
        client = registry.find(session, client_id)
    except ClientLookupError as exc:
        raise ErrorPage(N_("Application not accepted"),
                        N_("The application's published details were refused: %(reason)s"),
                        params={"reason": exc.public}, client_id=client_id,
                        detail=f"client metadata document {client_id!r}: {exc.public}") from None
    if client is None or client.disabled:
        raise ErrorPage(N_("Unknown application"), N_("The application that sent you here is not registered."),
                        client_id=client_id, detail=f"unknown or disabled client_id {client_id!r}")
    given = params.optional("redirect_uri")
    if given is None:
        # OAuth 2.1 §4.1.1: optional only when exactly one redirect URI is registered.
        if len(client.redirect_uris) != 1:
            raise ErrorPage(N_("Invalid request"), N_("The request does not say where to return (redirect_uri)."),
                            client_id=client_id)
        return client, client.redirect_uris[0], False
    if not redirect_uri_matches(client.redirect_uris, given):
        raise ErrorPage(N_("Invalid redirect"),
                        N_("The application asked to return to an address it has not registered."),
                        client_id=client_id, redirect_uri=given,
                        detail=f"redirect_uri {given!r} not registered for {client_id!r}")
    return client, given, True


def validate(session: Session, settings: Settings, registry: ClientRegistry, params: Params) -> AuthorizationParams:
    client, redirect_uri, given = check_client_and_redirect(session, registry, params)
    state = params.get("state")
    too_large = size_problem(params)
    if too_large and state is not None and parameter_too_long("state", state):
        state = None  # not echoed: the answer would carry what we refused to take

    def fail(error: str, description: str) -> AuthorizationError:
        return AuthorizationError(error, description, redirect_uri=redirect_uri, state=state, issuer=settings.issuer)

    if too_large:
        raise fail("invalid_request", too_large)
    if "resource" in params.repeated:
        raise fail("invalid_target", "only one resource may be requested at a time")
    if params.repeated:
        raise fail("invalid_request", f"parameter {params.repeated[0]!r} is repeated")
    if params.optional("request") or params.optional("request_uri"):
        raise fail("request_not_supported", "request objects are not supported")
    if params.optional("response_type") != "code":
        raise fail("unsupported_response_type", "response_type must be code")
    if params.optional("response_mode") not in (None, "query"):
        raise fail("invalid_request", "only response_mode=query is supported")
    if "authorization_code" not in client.grant_types:
        raise fail("unauthorized_client", "this client may not use the authorization code grant")
    problem = challenge_problem(params.optional("code_challenge"), params.optional("code_challenge_method"))
    if problem:
        raise fail("invalid_request", problem)

    dpop_jkt = params.optional("dpop_jkt")
    if dpop_jkt is not None and JKT.fullmatch(dpop_jkt) is None:
        raise fail("invalid_request", "dpop_jkt must be a base64url SHA-256 JWK thumbprint (RFC 9449 §10)")

    prompt = frozenset((params.optional("prompt") or "").split())
    if "none" in prompt and len(prompt) > 1:
        raise fail("invalid_request", "prompt=none cannot be combined with other values")
    max_age = params.optional("max_age")
    if max_age is not None and not (max_age.isascii() and max_age.isdigit() and int(max_age) <= MAX_AGE_LIMIT):
        raise fail("invalid_request", "max_age must be a number of seconds")

    try:
        resource = resolve_resource(session, client, params.optional("resource"))
        scopes = resolve_scopes(session, client, resource, params.get("scope"))
    except _Rejected as exc:
        raise fail(exc.error, exc.description) from None

    return AuthorizationParams(
        client=client, redirect_uri=redirect_uri, redirect_uri_given=given, state=state, scopes=scopes,
        resource=resource, code_challenge=params["code_challenge"], prompt=prompt & KNOWN_PROMPTS,
        dpop_jkt=dpop_jkt, max_age=int(max_age) if max_age is not None else None,
    )


class _Rejected(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def resolve_resource(session: Session, client: Client, requested: str | None) -> Resource:
    """RFC 8707: the named resource, or the client's single one; unknown or not allowed → invalid_target."""
    if requested is None:
        if client.self_registered or len(client.resources) != 1:
            raise _Rejected("invalid_target", "name the resource (MCP server) with the resource parameter")
        requested = client.resources[0]
    try:
        uri = canonical_resource_uri(requested)
    except AppError:
        raise _Rejected("invalid_target", "resource must be an absolute URI without a fragment") from None
    resource = catalog.get_resource(session, uri)
    if resource is None or not client.may_use_resource(uri):
        raise _Rejected("invalid_target", "this client may not request that resource")
    return resource


def resolve_scopes(session: Session, client: Client, resource: Resource, requested: str | None) -> list[str]:
    """Every requested scope must be registered and allowed for both the client and the resource.

    Without ``scope`` the client's default scopes apply (those the resource accepts).
    ``offline_access`` only asks for a refresh token; it is kept when the client may refresh.
    """
    if requested is None or not requested.strip():
        names = default_scopes(session, client, resource)
        if not names:
            raise _Rejected("invalid_scope", "no scope requested and the client has no default scope here")
        return names
    names = scope_tokens(requested)
    wants_offline = OFFLINE_ACCESS in names
    names = [n for n in names if n != OFFLINE_ACCESS]
    allowed_here = client.scopes_at(resource.scopes)
    registered = catalog.get_scopes(session, names)
    for name in names:
        if name not in registered or name not in allowed_here:
            raise _Rejected("invalid_scope", f"scope {name!r} is not available to this client for this resource")
    if not names:
        names = default_scopes(session, client, resource)
    if wants_offline and "refresh_token" in client.grant_types:
        names.append(OFFLINE_ACCESS)
    return names


def default_scopes(session: Session, client: Client, resource: Resource) -> list[str]:
    """What a request without ``scope`` gets: least privilege, read-only first."""
    if client.self_registered:
        registered = catalog.get_scopes(session, resource.scopes)
        return [s for s in resource.scopes if s in registered and not registered[s].write]
    return [s for s in client.default_scopes if s in resource.scopes]
