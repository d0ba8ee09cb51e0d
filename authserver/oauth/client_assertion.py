"""``private_key_jwt`` client authentication (RFC 7523 §2.2 and §3, RFC 7521 §4.2, OIDC Core §9).

The client sends ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and
``client_assertion``, a JWT it signed with a key it registered (``jwks`` or ``jwks_uri``; a Client ID
Metadata Document's keys for a URL ``client_id``). ``ClientAssertions.prove`` checks it before any
database transaction opens (a ``jwks_uri`` may have to be fetched, and the ``jti`` is spent in a
transaction of its own) and marks the request as proven; ``client_auth.verify`` then accepts the
``private_key_jwt`` method only for a proven request, so an endpoint that forgot to prove fails closed.

The rules, each refused with ``invalid_client`` (RFC 6749 §5.2) before anything is spent:

* ``iss`` = ``sub`` = the client_id (and the ``client_id`` form parameter, when sent).
* ``aud`` names us as its **sole** audience: our issuer identifier or our token endpoint URL, as a
  string or a one-member array. draft-ietf-oauth-rfc7523bis (the audience-injection fix) wants the
  issuer only; RFC 7523 as published, and many client libraries (Authlib's ``PrivateKeyJWT`` among
  them), send the token endpoint URL, so it is still accepted (``ACCEPT_TOKEN_ENDPOINT_AUDIENCE``).
  An array with any other member is refused: a client signing for several audiences at once is
  what the injection attack exploits.
* ``exp`` is required and at most ``MAX_LIFETIME`` (5 minutes) after ``iat`` (or now, without
  ``iat``); ``iat`` and ``nbf`` may not lie in the future; ``LEEWAY`` seconds of clock skew allowed.
* ``jti`` is required and single use across every node until ``exp`` (``replay.claim``, kind
  ``client-assertion``, issuer = client_id). It is spent only when everything else holds.
* ``alg`` is one of ``ALGORITHMS`` (asymmetric only: never ``none`` or HS*), the client's registered
  ``token_endpoint_auth_signing_alg`` when it has one; the key is the one ``kid`` names (without a
  ``kid``, the client's only key), of a type that algorithm uses. An unknown ``kid`` re-fetches a
  ``jwks_uri`` once (bounded: see ``clients.jwks``).
* ``typ``, when present, is ``JWT`` or ``client-authentication+jwt``: an access token or DPoP proof
  is no client assertion.
* A client registered with another method is refused, and so is a request presenting a secret too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jwt
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from authserver import replay
from authserver.clients.jwks import ALGORITHMS, JwksFetcher, select_key
from authserver.db import Database, utcnow
from authserver.errors import InvalidClient, InvalidRequest
from authserver.net import Network, in_networks, parse_address
from authserver.oauth.params import Params

if TYPE_CHECKING:
    from authserver.clients.cache import ClientCache
    from authserver.oauth.registry import ClientRegistry

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
METHOD = "private_key_jwt"
REPLAY_KIND = "client-assertion"
MAX_LIFETIME = 300  # seconds an assertion may live (exp - iat)
LEEWAY = 30  # seconds of clock skew allowed on exp, iat and nbf
MAX_ASSERTION_LENGTH = 8 * 1024
ACCEPT_TOKEN_ENDPOINT_AUDIENCE = True
TYPES = frozenset({"jwt", "client-authentication+jwt"})
PROOF = "authserver.client_assertion"  # request scope key: the client_id an assertion proved


def refused(detail: str, **audit: Any) -> InvalidClient:
    """One public description for every rule: which one broke goes to the log (and ``audit``) only."""
    return InvalidClient("client authentication failed", detail=detail, audit=audit or None)


def presented(params: Params) -> bool:
    return params.get("client_assertion") is not None or params.get("client_assertion_type") is not None


def unverified_client_id(params: Params) -> str:
    """The client an assertion speaks for: its ``sub`` (= ``iss``), checked against ``client_id``."""
    assertion_type, assertion = params.get("client_assertion_type"), params.get("client_assertion")
    if not assertion_type or not assertion:
        raise InvalidRequest("client_assertion and client_assertion_type go together")
    if assertion_type != JWT_BEARER:
        raise InvalidClient("unsupported client_assertion_type", detail=f"type {assertion_type[:100]!r}")
    if len(assertion) > MAX_ASSERTION_LENGTH:
        raise refused("assertion too long")
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise refused("assertion is not a JWT") from None
    sub, iss = claims.get("sub"), claims.get("iss")
    if not isinstance(sub, str) or not sub or sub != iss:
        raise refused(f"assertion iss {str(iss)[:100]!r} differs from sub {str(sub)[:100]!r}")
    body_id = params.get("client_id")
    if body_id is not None and body_id != sub:
        raise refused(f"client_id {body_id[:100]!r} differs from the assertion's sub {sub[:100]!r}")
    return sub


def proven_client(conn: HTTPConnection) -> str | None:
    value = conn.scope.get(PROOF)
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class KeySource:
    """Where a client's keys are: inline, or at a URI; and the one algorithm it registered, if any."""

    jwks: dict[str, Any] | None
    jwks_uri: str | None
    alg: str | None
    networks: tuple[Network, ...] = ()


def allowed_from(networks: Sequence[Network], ip: str | None) -> bool:
    return not networks or in_networks(parse_address(ip), tuple(networks))


class ClientAssertions:
    def __init__(self, db: Database, issuer: str, clients: ClientCache, *, allow_loopback_http: bool = False,
                 clock: Callable[[], float] = time.time, fetcher: JwksFetcher | None = None) -> None:
        self._db = db
        self._audiences = (issuer, f"{issuer}/token") if ACCEPT_TOKEN_ENDPOINT_AUDIENCE else (issuer,)
        self._clients = clients
        self._clock = clock
        self.fetcher = fetcher or JwksFetcher(allow_loopback_http=allow_loopback_http)

    async def prove(self, conn: HTTPConnection, params: Params, registry: ClientRegistry) -> None:
        """Check the request's client assertion, if it has one, and mark the request proven."""
        if not presented(params):
            return
        if conn.headers.get("authorization") or params.get("client_secret"):
            raise InvalidRequest("use one client authentication method, not several")
        client_id = unverified_client_id(params)
        ip = conn.client.host if conn.client else None
        source = await self._key_source(client_id, registry, ip)
        assertion = params.get("client_assertion") or ""
        key, alg = await self._key(assertion, source, client_id)
        claims = self._claims(assertion, key, alg, client_id)
        expires = datetime.fromtimestamp(float(claims["exp"]) + LEEWAY, UTC)
        if not await run_in_threadpool(replay.claim, self._db, REPLAY_KIND, client_id, claims["jti"], expires):
            raise refused(f"assertion jti of {client_id!r} replayed", event="client_auth.refused",
                          client_id=client_id, ip=ip, reason="client assertion replayed")
        conn.scope[PROOF] = client_id

    async def _key_source(self, client_id: str, registry: ClientRegistry, ip: str | None) -> KeySource:
        if registry.is_document_url(client_id):
            document = registry.document(client_id)
            if document is None or document.token_endpoint_auth_method != METHOD:
                raise refused(f"metadata document {client_id!r} does not use {METHOD}")
            return KeySource(document.jwks, document.jwks_uri, None)
        view = await self._clients.get(client_id) if len(client_id) <= 2048 else None
        if view is None or view.disabled or (view.expires_at is not None and view.expires_at <= utcnow()):
            raise refused(f"unknown client {client_id!r}")
        if not allowed_from(view.allowed_networks, ip):
            # Checked before the signature: from outside, a client learns nothing about its keys.
            raise refused(f"{client_id!r} may not authenticate from {ip}", event="client_auth.refused",
                          client_id=client_id, ip=ip, reason="address not allowed")
        if view.token_endpoint_auth_method != METHOD:
            raise refused(f"{client_id!r} registered {view.token_endpoint_auth_method}, used {METHOD}")
        return KeySource(view.jwks, view.jwks_uri, view.signing_alg)

    async def _key(self, assertion: str, source: KeySource, client_id: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise refused("assertion header unreadable") from None
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if alg not in ALGORITHMS or (source.alg is not None and alg != source.alg):
            raise refused(f"assertion alg {str(alg)[:20]!r} not accepted for {client_id!r}")
        if typ is not None and (not isinstance(typ, str) or typ.lower().removeprefix("application/") not in TYPES):
            raise refused(f"assertion typ {str(typ)[:40]!r} is no client assertion")
        if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
            raise refused("assertion kid malformed")
        jwks = source.jwks
        if jwks is None and source.jwks_uri is not None:
            jwks = self.fetcher.cached(source.jwks_uri, kid)
            if jwks is None:
                jwks = await run_in_threadpool(self.fetcher.get, source.jwks_uri, kid)
        key = select_key(jwks, kid, alg) if jwks is not None else None
        if key is None:
            raise refused(f"no key of {client_id!r} for kid {str(kid)[:60]!r} and alg {alg}")
        return key, alg

    def _claims(self, assertion: str, key: Any, alg: str, client_id: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(assertion, key, algorithms=[alg], options={
                "verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False,
                "verify_iss": False})
        except jwt.PyJWTError as exc:
            raise refused(f"assertion signature of {client_id!r} does not verify: {exc}") from None
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise refused("assertion iss/sub differ from the client")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if len(audiences) != 1 or audiences[0] not in self._audiences:
            raise refused(f"assertion aud {str(audience)[:200]!r} is not us alone")
        now = self._clock()
        exp: Any = claims.get("exp")
        iat, nbf = claims.get("iat"), claims.get("nbf")
        if not _number(exp) or (iat is not None and not _number(iat)) or (nbf is not None and not _number(nbf)):
            raise refused("assertion exp missing, or exp/iat/nbf not numbers")
        if exp <= now - LEEWAY:
            raise refused("assertion expired")
        if (iat is not None and iat > now + LEEWAY) or (nbf is not None and nbf > now + LEEWAY):
            raise refused("assertion iat/nbf in the future")
        start = iat if iat is not None else now
        if exp - start > MAX_LIFETIME or exp - now > MAX_LIFETIME + LEEWAY:
            raise refused(f"assertion lives longer than {MAX_LIFETIME} s")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= replay.MAX_JTI_LENGTH:
            raise refused("assertion jti missing or malformed")
        return claims


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
