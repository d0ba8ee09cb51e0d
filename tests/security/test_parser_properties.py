"""Properties of the parsers that decide what we accept: scopes, redirect URIs, resource URIs, PKCE.

Each property states a rule of the RFCs (or of ours, where we are stricter) for every input
hypothesis can think of, not only the examples we thought of: accepted values satisfy the
grammar, parsing is idempotent and round-trips, nothing but the documented error type escapes,
and junk is never accepted. ``@example`` rows pin the inputs that once broke a rule.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

from hypothesis import example, given, settings
from hypothesis import strategies as st

from authserver.catalog.repository import OFFLINE_ACCESS, SCOPE_NAME_RE, create_scope
from authserver.clients import registration
from authserver.errors import AppError, FieldError, InvalidClientMetadata, InvalidRedirectUriMetadata
from authserver.oauth.authorize import redirect_uri_matches
from authserver.oauth.params import scope_tokens
from authserver.oauth.pkce import challenge_problem, create_s256_code_challenge, verifier_matches
from authserver.uris import canonical_resource_uri, check_redirect_uri, is_loopback_uri
from authserver.users.repository import create_user

EXAMPLES = settings(max_examples=300, deadline=None)
FEW = settings(max_examples=100, deadline=None)

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
SCOPE_CHARS = "".join(chr(c) for c in (0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)))
# RFC 3986 characters that may appear in a URI at all (unreserved, reserved, "%").
URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")

# Characters that make URI parsers disagree with each other or with a person reading the URI.
TRICKY = "@\\#:[]%?/ \t\n\r\x00\x7f\x85\xa0\u2028\u202e\u200bé. ;=&"
tricky_text = st.text(alphabet=st.sampled_from(TRICKY) | st.characters(codec="ascii"), max_size=12)
hosts = st.sampled_from(["app.example.com", "APP.Example.COM", "127.0.0.1", "localhost", "LocalHost", "[::1]",
                         "127.0.0.2", "[2001:db8::1]", "10.0.0.1", "xn--bcher-kva.example", "", "app.example.com."])
schemes = st.sampled_from(["https", "http", "HTTPS", "Http", "ftp", "javascript", "", "https:"])
ports = st.one_of(st.none(), st.integers(min_value=0, max_value=70000).map(str), st.sampled_from(["", "08", "+1"]))


@st.composite
def uri_like(draw: st.DrawFn) -> str:
    """Strings shaped like URIs, with a tricky character wherever one can hide."""
    scheme = draw(schemes)
    userinfo = draw(st.one_of(st.none(), tricky_text))
    host = draw(hosts | tricky_text)
    port = draw(ports)
    path = draw(st.sampled_from(["", "/", "/callback", "/mcp", "/a/../b"]) | tricky_text.map(lambda t: "/" + t))
    query = draw(st.one_of(st.none(), tricky_text))
    fragment = draw(st.one_of(st.none(), tricky_text))
    uri = f"{scheme}://" + (f"{userinfo}@" if userinfo is not None else "") + host
    uri += (f":{port}" if port is not None else "") + path
    uri += (f"?{query}" if query is not None else "") + (f"#{fragment}" if fragment is not None else "")
    return uri


any_uri = uri_like() | st.text(max_size=40)


def _accepted_redirect(uri: str) -> bool:
    try:
        assert check_redirect_uri(uri) == uri, "an accepted redirect URI is stored as given (exact match later)"
    except AppError:
        return False
    return True


# ---- scopes -------------------------------------------------------------------------------------


@EXAMPLES
@given(st.text(max_size=60))
@example("read:calendar\u3000write:calendar")  # ideographic space is not SP: one (invalid) token
@example("read:calendar\xa0write:calendar")
@example("  read:calendar   read:calendar ")
def test_scope_tokens_are_split_on_sp_only_unique_and_in_order(value: str) -> None:
    tokens = scope_tokens(value)
    assert all(token and " " not in token for token in tokens)
    assert len(set(tokens)) == len(tokens)
    assert tokens == list(dict.fromkeys(t for t in value.split(" ") if t))
    assert scope_tokens(" ".join(tokens)) == tokens  # idempotent


@EXAMPLES
@given(st.lists(st.text(alphabet=SCOPE_CHARS, min_size=1, max_size=20), max_size=8))
def test_scope_grammar_tokens_round_trip_through_the_scope_parameter(tokens: list[str]) -> None:
    assert scope_tokens(" ".join(tokens)) == list(dict.fromkeys(tokens))
    assert all(SCOPE_TOKEN.fullmatch(t) for t in scope_tokens(" ".join(tokens)))


@EXAMPLES
@given(st.text(max_size=110))
@example("read:calendar\n")  # `$` matches before a final newline: this was accepted
@example("read calendar")
@example(OFFLINE_ACCESS)
def test_accepted_scope_names_are_scope_tokens(name: str) -> None:
    """A registered scope name is a scope-token (RFC 6749 §3.3), so it survives a scope parameter."""
    try:
        create_scope(None, name, "description")  # type: ignore[arg-type]  # validated before any storage
    except FieldError:
        assert not (SCOPE_NAME_RE.fullmatch(name) and name != OFFLINE_ACCESS)
        return
    except AttributeError:  # reached the session: the name was accepted
        pass
    assert SCOPE_TOKEN.fullmatch(name) and SCOPE_NAME_RE.fullmatch(name) and name != OFFLINE_ACCESS
    assert scope_tokens(name) == [name]


@FEW
@given(st.text(max_size=40))
@example("alice\n")  # `$` matches before a final newline: this was accepted
def test_accepted_usernames_have_no_control_or_space_characters(name: str) -> None:
    try:
        create_user(None, name, "long enough password")  # type: ignore[arg-type]  # validated first
    except FieldError:
        return
    except AttributeError:  # reached the session: the name was accepted
        pass
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}", name), name


# ---- redirect URIs ------------------------------------------------------------------------------


@EXAMPLES
@given(any_uri)
def test_check_redirect_uri_raises_only_app_error(uri: str) -> None:
    _accepted_redirect(uri)


@EXAMPLES
@given(any_uri)
@example("https://app.example.com/cb#")
@example("http://127.0.0.1:8080/cb#frag")
@example("http://127.0.0.1.example.com/cb")
@example("http://[::1]:99999/cb")
def test_accepted_redirect_uris_are_https_or_loopback_http_without_fragment(uri: str) -> None:
    if not _accepted_redirect(uri):
        return
    parts = urlsplit(uri)
    assert "#" not in uri and not parts.fragment
    assert not any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in uri)
    assert (parts.scheme == "https" and parts.hostname) or (parts.scheme == "http" and is_loopback_uri(uri))
    assert parts.port is None or 0 <= parts.port <= 65535  # a valid port (no ValueError)


@EXAMPLES
@given(any_uri)
@example("https://user@app.example.com/cb")
def test_accepted_redirect_uris_have_no_userinfo(uri: str) -> None:
    if _accepted_redirect(uri):
        assert "@" not in urlsplit(uri).netloc


@EXAMPLES
@given(any_uri)
@example("https://app.example.com\\@evil.example/cb")
def test_accepted_redirect_uris_have_no_backslash(uri: str) -> None:
    if _accepted_redirect(uri):
        assert "\\" not in uri


@EXAMPLES
@given(any_uri)
@example("https://app.example.com/cb\x80")
def test_accepted_redirect_uris_have_no_unicode_control_characters(uri: str) -> None:
    if _accepted_redirect(uri):
        assert not any(unicodedata.category(ch) == "Cc" for ch in uri)


LOOPBACK_REGISTERED = ["http://127.0.0.1/callback", "http://[::1]:1234/cb?x=1", "http://localhost/cb"]
REGISTERED = ["https://app.example.com/callback", *LOOPBACK_REGISTERED]


@EXAMPLES
@given(any_uri | st.sampled_from(REGISTERED))
@example("http://127.0.0.1:5000/callback")
@example("http://user@127.0.0.1:5000/callback")
@example("http://127.0.0.1:5000/callback#x")
@example("https://APP.example.com/callback")
@example("http://127.0.0.1:5000/callback/")
def test_redirect_uri_matching_is_exact_except_a_loopback_port(given_uri: str) -> None:
    """RFC 8252 §7.3 / OAuth 2.1 §2.3.1: exact string match; only a loopback redirect's port may vary."""
    if not redirect_uri_matches(REGISTERED, given_uri):
        assert given_uri not in REGISTERED
        return
    if given_uri in REGISTERED:
        return
    g = urlsplit(given_uri)
    assert is_loopback_uri(given_uri) and not g.username and not g.password and not g.fragment and "#" not in given_uri
    same_but_port = [r for r in LOOPBACK_REGISTERED
                     if (urlsplit(r).scheme, urlsplit(r).hostname, urlsplit(r).path, urlsplit(r).query)
                     == (g.scheme, g.hostname, g.path, g.query)]
    assert same_but_port, given_uri


@EXAMPLES
@given(st.sampled_from(LOOPBACK_REGISTERED), st.integers(min_value=1, max_value=65535))
def test_a_loopback_redirect_matches_on_any_port(registered: str, port: int) -> None:
    parts = urlsplit(registered)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    moved = parts._replace(netloc=f"{host}:{port}").geturl()
    assert redirect_uri_matches(REGISTERED, moved)
    assert not redirect_uri_matches(REGISTERED, moved + "x")
    assert not redirect_uri_matches(REGISTERED, parts._replace(netloc=f"user@{host}:{port}").geturl())


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
metadata_keys = st.sampled_from(["redirect_uris", "token_endpoint_auth_method", "grant_types", "response_types",
                                 "application_type", "client_name", "client_uri", "scope", "contacts", "client_id"])


@FEW
@given(st.dictionaries(metadata_keys, json_values | st.lists(any_uri, max_size=3), max_size=6)
       | st.builds(lambda uris: {"redirect_uris": uris}, st.lists(any_uri, min_size=1, max_size=3))
       | json_values)
@example({"redirect_uris": ["https://app.example.com/cb"], "client_name": "\ud800"})
def test_registration_metadata_parses_or_raises_an_oauth_error(body: object) -> None:
    """RFC 7591 §3.2.2: any body is a registration or invalid_(redirect_uri|client_metadata)."""
    try:
        parsed = registration.parse(body)
    except (InvalidClientMetadata, InvalidRedirectUriMetadata):
        return
    for uri in parsed.redirect_uris:
        assert _accepted_redirect(uri)
    assert parsed.application_type in ("web", "native")
    if parsed.application_type == "web":
        assert not any(is_loopback_uri(u) for u in parsed.redirect_uris)


# ---- resource URIs (RFC 8707) -------------------------------------------------------------------


def _canonical(uri: str) -> str | None:
    try:
        return canonical_resource_uri(uri)
    except AppError:
        return None


@EXAMPLES
@given(any_uri)
@example("https://calendar.example.com/m\tcp")  # urlsplit drops tabs: two strings, one resource
@example("https://calendar.example.com/a b")
@example("https://calendar.example.com/\\mcp")
@example("https://calendar.example.com/mcp\x85")
@example("https://[::1/mcp")
@example("https://evil@calendar.example.com/mcp")
@example("https://a:b@calendar.example.com/mcp")
def test_canonical_resource_uris_are_absolute_uris_without_fragment(uri: str) -> None:
    canonical = _canonical(uri)  # only AppError may escape
    if canonical is None:
        return
    parts = urlsplit(canonical)
    assert parts.scheme in ("https", "http") and parts.hostname and not parts.fragment and "#" not in canonical
    assert parts.scheme == "https" or is_loopback_uri(canonical)
    assert URI_CHARS.fullmatch(canonical) and "\\" not in canonical, canonical
    assert "@" not in urlsplit(uri.strip()).netloc, uri  # userinfo is refused, never dropped


@EXAMPLES
@given(any_uri)
@example("https://HOST:443/x")
@example("https://h:/x")
@example("http://[::1]/")
def test_canonicalising_a_resource_uri_is_idempotent(uri: str) -> None:
    canonical = _canonical(uri)
    if canonical is not None:
        assert canonical_resource_uri(canonical) == canonical


path_chars = st.text(alphabet="abcXYZ019-._~!$&'()*+,;=:@/%", max_size=10)


@st.composite
def resource_parts(draw: st.DrawFn) -> tuple[str, str, str | None, str, str | None]:
    scheme = draw(st.sampled_from(["https", "http"]))
    host = draw(st.sampled_from(["127.0.0.1", "localhost", "[::1]"] if scheme == "http"
                                else ["mcp.example.com", "mail.example.com", "[2001:db8::1]", "127.0.0.1"]))
    port = draw(st.one_of(st.none(), st.sampled_from(["443", "8443", "80", "1"])))
    path = draw(st.sampled_from(["", "/", "/mcp", "/MCP"]) | path_chars.map(lambda p: "/" + p))
    query = draw(st.one_of(st.none(), path_chars))
    return scheme, host, port, path, query


def _recase(text: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(text, flips + [False] * len(text), strict=False))


def _render(scheme: str, host: str, port: str | None, path: str, query: str | None) -> str:
    return f"{scheme}://{host}" + (f":{port}" if port else "") + path + (f"?{query}" if query is not None else "")


@EXAMPLES
@example(("http", "127.0.0.1", None, "/", ""), ("http", "127.0.0.1", None, "/", None), [], [])
@given(resource_parts(), resource_parts(), st.lists(st.booleans(), max_size=30), st.lists(st.booleans(), max_size=30))
def test_canonical_resource_uris_are_equal_iff_the_same_resource(
        a: tuple[str, str, str | None, str, str | None], b: tuple[str, str, str | None, str, str | None],
        flips_a: list[bool], flips_b: list[bool]) -> None:
    """Our rule: scheme and host are case-insensitive; port, path and query compare exactly, except that
    an empty query is no query (``?`` alone names nothing)."""
    for parts, flips in ((a, flips_a), (b, flips_b)):
        scheme, host, port, path, query = parts
        variant = _render(_recase(scheme, flips), _recase(host, flips[::-1]), port, path, query)
        assert canonical_resource_uri(variant) == canonical_resource_uri(_render(*parts))
    same = (a[0], a[1].lower(), a[2], a[3], a[4] or None) == (b[0], b[1].lower(), b[2], b[3], b[4] or None)
    assert (canonical_resource_uri(_render(*a)) == canonical_resource_uri(_render(*b))) == same


# ---- PKCE (RFC 7636 §4.1, §4.2) ----------------------------------------------------------------

VERIFIER_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


@EXAMPLES
@given(st.text(alphabet=VERIFIER_CHARS, min_size=43, max_size=128))
def test_any_grammatical_verifier_matches_its_own_s256_challenge(verifier: str) -> None:
    challenge = create_s256_code_challenge(verifier)
    assert challenge_problem(challenge, "S256") is None
    assert verifier_matches(verifier, challenge)


@EXAMPLES
@given(st.text(max_size=130))
@example("A" * 43 + "\n")  # `$` matches before a final newline: this was accepted
@example("A" * 42)
@example("A" * 129)
def test_verifiers_outside_the_grammar_never_match(verifier: str) -> None:
    grammatical = re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", verifier) is not None
    try:
        challenge = create_s256_code_challenge(verifier)
    except UnicodeEncodeError:
        assert not grammatical
        assert not verifier_matches(verifier, "A" * 43)
        return
    assert verifier_matches(verifier, challenge) == grammatical


@EXAMPLES
@given(st.text(max_size=50))
@example("A" * 43 + "\n")
def test_only_43_character_base64url_challenges_are_accepted(challenge: str) -> None:
    accepted = challenge_problem(challenge, "S256") is None
    assert accepted == (re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge) is not None)
    assert challenge_problem(challenge, "plain") is not None and challenge_problem(challenge, None) is not None
