"""Signing keys: rotation keeps old tokens verifiable, keys are encrypted at rest, forgeries fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from sqlalchemy import func, select, text, update
from starlette.testclient import TestClient

from authserver.db import Database, utcnow
from authserver.keys.crypto import KeyEncryptor
from authserver.keys.models import SigningKey
from authserver.keys.ring import KeyRing, published_keys
from authserver.settings import Settings
from authserver.tokens.access import decode_access_token, issue_access_token
from tests.conftest import ISSUER, TEST_SECRET

RESOURCE = "https://mcp.example.com/mcp"


@pytest.fixture
def keys(app: FastAPI) -> KeyRing:
    ring: KeyRing = app.state.services.keys
    return ring


def _issue(keys: KeyRing, *, now: int | None = None, ttl: int = 300) -> str:
    return issue_access_token(keys, issuer=ISSUER, subject="alice", audience=RESOURCE, client_id="client-1",
                              scopes=["read:calendar"], ttl=ttl, now=int(time.time()) if now is None else now,
                              auth_time=int(time.time())).token


def _served_jwks(client: TestClient) -> dict[str, Any]:
    response = client.get("/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/jwk-set+json")
    jwks: dict[str, Any] = response.json()
    for key in jwks["keys"]:
        assert "d" not in key  # public halves only
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    return jwks


def _verify_with_jwks(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """What a resource server does: pick the key by kid from the fetched JWKS, verify the JWT."""
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(token, jwt.PyJWK(jwk), algorithms=["ES256"], audience=RESOURCE,
                                        issuer=ISSUER)
    return claims


# ---- rotation -------------------------------------------------------------------------------

def test_token_signed_before_rotation_verifies_with_the_jwks_served_after(client: TestClient,
                                                                         keys: KeyRing) -> None:
    old_kid = keys.snapshot().signing.kid
    before = _served_jwks(client)
    assert [k["kid"] for k in before["keys"]] == [old_kid]
    old_token = _issue(keys)
    assert jwt.get_unverified_header(old_token) == {"alg": "ES256", "typ": "at+jwt", "kid": old_kid}

    new_kid = keys.rotate()
    assert new_kid != old_kid
    after = _served_jwks(client)
    assert {k["kid"] for k in after["keys"]} == {old_kid, new_kid}

    claims = _verify_with_jwks(old_token, after)
    assert (claims["sub"], claims["aud"], claims["client_id"], claims["scope"]) == ("alice", RESOURCE, "client-1",
                                                                                    "read:calendar")
    new_token = _issue(keys)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert _verify_with_jwks(new_token, after)["sub"] == "alice"
    assert decode_access_token(keys, old_token, issuer=ISSUER) is not None
    assert decode_access_token(keys, new_token, issuer=ISSUER) is not None

    # The two keys really differ: the old token does not verify under the new key.
    (new_jwk,) = [k for k in after["keys"] if k["kid"] == new_kid]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(old_token, jwt.PyJWK(new_jwk), algorithms=["ES256"], audience=RESOURCE)


def test_retired_key_stays_published_for_the_retention_then_drops_out(client: TestClient, keys: KeyRing,
                                                                       db: Database, settings: Settings) -> None:
    old_kid = keys.snapshot().signing.kid
    old_token = _issue(keys)
    new_kid = keys.rotate()
    with db.session() as s:
        old, new = s.get(SigningKey, old_kid), s.get(SigningKey, new_kid)
        assert old is not None and new is not None
        assert new.retired_at is None and new.publish_until is None
        assert old.retired_at is not None and old.publish_until is not None
        assert old.publish_until - old.retired_at == timedelta(seconds=settings.key_retention)
        published_then = [k.kid for k in published_keys(s, now=old.publish_until - timedelta(seconds=1))]
        published_later = [k.kid for k in published_keys(s, now=old.publish_until + timedelta(seconds=1))]
    assert sorted(published_then) == sorted([old_kid, new_kid])
    assert published_later == [new_kid]

    with db.session() as s:  # the retention runs out
        s.execute(update(SigningKey).where(SigningKey.kid == old_kid)
                  .values(publish_until=utcnow() - timedelta(seconds=1)))
    keys.reload()
    assert [k["kid"] for k in _served_jwks(client)["keys"]] == [new_kid]
    assert decode_access_token(keys, old_token, issuer=ISSUER) is None
    assert decode_access_token(keys, _issue(keys), issuer=ISSUER) is not None


def test_rotation_by_another_process_is_picked_up(db: Database, keys: KeyRing, settings: Settings) -> None:
    """Another node, or `authserver keys rotate`, rotates; this node sees it after its refresh interval."""
    node = KeyRing(db, KeyEncryptor(TEST_SECRET), settings.key_retention, refresh_interval=0)
    first = node.snapshot().signing.kid
    assert first == keys.snapshot().signing.kid
    new_kid = keys.rotate()
    time.sleep(0.01)
    snap = node.snapshot()
    assert snap.signing.kid == new_kid
    assert set(snap.public_keys) == {first, new_kid}
    token = _issue(node)
    assert decode_access_token(keys, token, issuer=ISSUER) is not None


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _count_reads(ring: KeyRing, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record every time ``ring`` reads the keys table."""
    reads: list[float] = []
    real = ring._load

    def counted() -> Any:
        reads.append(time.monotonic())
        return real()

    monkeypatch.setattr(ring, "_load", counted)
    return reads


def test_the_ring_rereads_the_keys_every_five_seconds(db: Database, keys: KeyRing, settings: Settings,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The staleness bound of a process's keys: a rotation elsewhere is signed with here within 5 s."""
    clock = _Clock()
    node = KeyRing(db, KeyEncryptor(TEST_SECRET), settings.key_retention, clock=clock)
    first = node.snapshot().signing.kid
    reads = _count_reads(node, monkeypatch)
    new_kid = keys.rotate()  # another node
    clock.now += 4.9
    assert node.snapshot().signing.kid == first and reads == []
    clock.now += 0.2
    assert node.snapshot().signing.kid == new_kid and len(reads) == 1


def test_a_token_with_a_kid_rotated_in_elsewhere_verifies_at_once(db: Database, keys: KeyRing, settings: Settings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that has not re-read yet meets a token signed with the key another node just made."""
    clock = _Clock()
    node = KeyRing(db, KeyEncryptor(TEST_SECRET), settings.key_retention, clock=clock)
    old_kid = node.snapshot().signing.kid
    reads = _count_reads(node, monkeypatch)
    keys.rotate()  # another node, which signs with its new key
    token = _issue(keys)
    assert node.snapshot().signing.kid == old_kid  # within the period: this node's copy is stale
    assert decode_access_token(node, token, issuer=ISSUER) is not None
    assert len(reads) == 1
    assert decode_access_token(node, token, issuer=ISSUER) is not None  # now known: no more reads
    assert len(reads) == 1


def test_made_up_kids_cost_at_most_one_read_a_second(db: Database, keys: KeyRing, settings: Settings,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    node = KeyRing(db, KeyEncryptor(TEST_SECRET), settings.key_retention, clock=clock)
    node.snapshot()
    reads = _count_reads(node, monkeypatch)
    for n in range(50):
        assert node.public_key(f"made-up-{n}") is None
    assert len(reads) == 1
    clock.now += 0.5
    keys.rotate()
    fresh = _issue(keys)
    assert decode_access_token(node, fresh, issuer=ISSUER) is None  # rate-limited: not yet
    assert len(reads) == 1
    clock.now += 0.6
    assert decode_access_token(node, fresh, issuer=ISSUER) is not None  # the next second may re-read
    assert len(reads) == 2
    assert node.public_key("") is None and len(reads) == 2  # no kid at all never re-reads


def test_ensure_key_creates_one_key_only(db: Database, keys: KeyRing) -> None:
    keys.ensure_key()
    keys.ensure_key()
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(SigningKey)) == 1


# ---- encryption at rest ---------------------------------------------------------------------

def test_private_key_is_never_stored_in_clear(db: Database, keys: KeyRing) -> None:
    keys.ensure_key()
    keys.rotate()
    private = keys.snapshot().signing.private_key
    d = private.private_numbers().private_value.to_bytes(32, "big")
    d_b64 = base64.urlsafe_b64encode(d).rstrip(b"=")
    with db.session() as s:
        rows = s.execute(text("SELECT kid, private_key_encrypted, public_jwk FROM signing_keys")).all()
    assert len(rows) == 2
    for kid, blob, public in rows:
        raw = bytes(blob)
        assert len(raw) > 100
        assert b"PRIVATE KEY" not in raw and b"BEGIN" not in raw
        assert d not in raw and d_b64 not in raw
        public_text = public if isinstance(public, str) else json.dumps(public)
        assert '"d"' not in public_text and d_b64.decode() not in public_text
        # It is the key, encrypted: the right secret recovers a PEM whose public half is the published one.
        pem = KeyEncryptor(TEST_SECRET).decrypt(raw, kid.encode())
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
        loaded = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        jwk = json.loads(public) if isinstance(public, str) else public
        assert loaded.public_key().public_numbers().x == int.from_bytes(
            base64.urlsafe_b64decode(jwk["x"] + "=="), "big")


def test_wrong_secret_key_cannot_decrypt(db: Database, keys: KeyRing, settings: Settings) -> None:
    keys.snapshot()
    with db.session() as s:
        kid, blob = s.execute(text("SELECT kid, private_key_encrypted FROM signing_keys")).one()
    with pytest.raises(InvalidTag):
        KeyEncryptor("some-other-secret-0123456789-abcdefghijklmnop").decrypt(bytes(blob), kid.encode())
    with pytest.raises(InvalidTag):  # the ciphertext is bound to its kid
        KeyEncryptor(TEST_SECRET).decrypt(bytes(blob), b"another-kid")
    stranger = KeyRing(db, KeyEncryptor("some-other-secret-0123456789-abcdefghijklmnop"), settings.key_retention)
    with pytest.raises(InvalidTag):
        stranger.snapshot()
    with db.session() as s:  # and it did not quietly make itself a key it could use
        assert s.scalar(select(func.count()).select_from(SigningKey)) == 1
    # A restart with the right secret signs with the same key.
    restarted = KeyRing(db, KeyEncryptor(TEST_SECRET), settings.key_retention)
    assert restarted.snapshot().signing.kid == kid
    assert decode_access_token(keys, _issue(restarted), issuer=ISSUER) is not None


# ---- forged and invalid tokens --------------------------------------------------------------

def _b64json(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _claims(now: int | None = None) -> dict[str, Any]:
    now = int(time.time()) if now is None else now
    return {"iss": ISSUER, "sub": "alice", "aud": RESOURCE, "client_id": "client-1", "scope": "read:calendar",
            "iat": now, "nbf": now, "exp": now + 300, "jti": "jti-1"}


def _hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{_b64json(header)}.{_b64json(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_valid_token_decodes(keys: KeyRing) -> None:
    claims = decode_access_token(keys, _issue(keys), issuer=ISSUER)
    assert claims is not None
    assert {"iss", "sub", "aud", "client_id", "scope", "exp", "iat", "jti", "auth_time"} <= set(claims)
    # Our own key, our header, hand-made claims: accepted (so the rejections below are about what they change).
    signing = keys.snapshot().signing
    hand_made = _claims()
    token = jwt.encode(hand_made, signing.private_key, algorithm="ES256",
                       headers={"typ": "at+jwt", "kid": signing.kid})
    assert decode_access_token(keys, token, issuer=ISSUER) == hand_made


def test_alg_none_is_refused(keys: KeyRing) -> None:
    kid = keys.snapshot().signing.kid
    token = jwt.encode(_claims(), None, algorithm="none", headers={"typ": "at+jwt", "kid": kid})
    assert decode_access_token(keys, token, issuer=ISSUER) is None
    unsigned = f"{_b64json({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{_b64json(_claims())}."
    assert decode_access_token(keys, unsigned, issuer=ISSUER) is None


def test_hs256_signed_with_the_public_key_is_refused(client: TestClient, keys: KeyRing) -> None:
    (jwk,) = _served_jwks(client)["keys"]
    public_pem = keys.snapshot().public_keys[jwk["kid"]].public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": jwk["kid"]}
    for secret in (public_pem, json.dumps(jwk).encode(), jwk["x"].encode()):
        assert decode_access_token(keys, _hs256(header, _claims(), secret), issuer=ISSUER) is None


def test_unknown_kid_and_foreign_key_are_refused(keys: KeyRing) -> None:
    foreign = ec.generate_private_key(ec.SECP256R1())
    unknown = jwt.encode(_claims(), foreign, algorithm="ES256", headers={"typ": "at+jwt", "kid": "unknown"})
    assert decode_access_token(keys, unknown, issuer=ISSUER) is None
    no_kid = jwt.encode(_claims(), foreign, algorithm="ES256", headers={"typ": "at+jwt"})
    assert decode_access_token(keys, no_kid, issuer=ISSUER) is None
    our_kid = jwt.encode(_claims(), foreign, algorithm="ES256",
                         headers={"typ": "at+jwt", "kid": keys.snapshot().signing.kid})
    assert decode_access_token(keys, our_kid, issuer=ISSUER) is None


def test_tampered_payload_is_refused(keys: KeyRing) -> None:
    token = _issue(keys)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    for change in ({"scope": "read:calendar write:calendar"}, {"sub": "root"}, {"aud": "https://other.example"},
                   {"exp": claims["exp"] + 86400}):
        forged = f"{header}.{_b64json(claims | change)}.{signature}"
        assert decode_access_token(keys, forged, issuer=ISSUER) is None
    assert decode_access_token(keys, f"{header}.{payload}.{signature[:-4]}AAAA", issuer=ISSUER) is None


@pytest.mark.parametrize("headers", [{"typ": "JWT"}, {"typ": "at+JWT+x"}, {}])
def test_wrong_typ_is_refused(keys: KeyRing, headers: dict[str, str]) -> None:
    signing = keys.snapshot().signing
    token = jwt.encode(_claims(), signing.private_key, algorithm="ES256", headers={"kid": signing.kid, **headers})
    if "typ" not in headers:  # pyjwt adds typ JWT by default; drop it entirely
        token = jwt.encode(_claims(), signing.private_key, algorithm="ES256",
                           headers={"kid": signing.kid, "typ": None})
        assert "typ" not in jwt.get_unverified_header(token)
    assert decode_access_token(keys, token, issuer=ISSUER) is None


def test_expired_token_is_refused(keys: KeyRing) -> None:
    expired = _issue(keys, now=int(time.time()) - 3600, ttl=60)
    assert decode_access_token(keys, expired, issuer=ISSUER) is None
    just_expired = _issue(keys, now=int(time.time()) - 65, ttl=60)
    assert decode_access_token(keys, just_expired, issuer=ISSUER) is None
    assert decode_access_token(keys, just_expired, issuer=ISSUER, leeway=30) is not None


def test_expired_for_accepts_a_recently_expired_token_and_relaxes_nothing_else(keys: KeyRing) -> None:
    recently = _issue(keys, now=int(time.time()) - 400, ttl=300)  # expired 100 s ago
    assert decode_access_token(keys, recently, issuer=ISSUER) is None
    assert decode_access_token(keys, recently, issuer=ISSUER, expired_for=300) is not None
    long_ago = _issue(keys, now=int(time.time()) - 700, ttl=300)  # expired 400 s ago
    assert decode_access_token(keys, long_ago, issuer=ISSUER, expired_for=300) is None
    signing = keys.snapshot().signing
    future = jwt.encode({**_claims(), "nbf": int(time.time()) + 200}, signing.private_key, algorithm="ES256",
                        headers={"typ": "at+jwt", "kid": signing.kid})
    assert decode_access_token(keys, future, issuer=ISSUER, expired_for=300) is None
    assert decode_access_token(keys, _issue(keys), issuer="https://other.example.com", expired_for=300) is None


def test_token_for_another_issuer_or_missing_claims_is_refused(keys: KeyRing) -> None:
    assert decode_access_token(keys, _issue(keys), issuer="https://other.example.com") is None
    signing = keys.snapshot().signing
    for missing in ("jti", "client_id", "exp", "sub"):
        claims = {k: v for k, v in _claims().items() if k != missing}
        token = jwt.encode(claims, signing.private_key, algorithm="ES256",
                           headers={"typ": "at+jwt", "kid": signing.kid})
        assert decode_access_token(keys, token, issuer=ISSUER) is None, missing


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "....", "eyJ9.eyJ9.eyJ9"])
def test_garbage_is_refused(keys: KeyRing, token: str) -> None:
    assert decode_access_token(keys, token, issuer=ISSUER) is None
