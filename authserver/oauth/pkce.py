"""RFC 7636 PKCE, S256 only (OAuth 2.1 §4.1.1: ``plain`` is not allowed here)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

# RFC 7636 §4.1: 43-128 characters from the unreserved set. S256 output is exactly 43.
# Matched with fullmatch: a pattern's `$` would also accept a final newline.
VERIFIER_RE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
CHALLENGE_RE = re.compile(r"[A-Za-z0-9\-_]{43}")


def challenge_problem(challenge: str | None, method: str | None) -> str | None:
    """Why an authorization request's PKCE parameters are unacceptable, or None."""
    if not challenge:
        return "code_challenge is required (PKCE)"
    if method != "S256":
        # A missing method means `plain` (RFC 7636 §4.3).
        return "code_challenge_method must be S256"
    if not CHALLENGE_RE.fullmatch(challenge):
        return "code_challenge is not a valid S256 challenge"
    return None


def create_s256_code_challenge(verifier: str) -> str:
    """BASE64URL(SHA256(ASCII(verifier))) without padding (RFC 7636 §4.2), as authlib's; written
    out so the server does not load authlib (43 modules) for one line."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verifier_matches(verifier: str | None, challenge: str) -> bool:
    if not verifier or not VERIFIER_RE.fullmatch(verifier):
        return False
    return hmac.compare_digest(create_s256_code_challenge(verifier), challenge)
