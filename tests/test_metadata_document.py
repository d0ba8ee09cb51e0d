"""Client ID Metadata Document fetching against a real HTTP(S) server on 127.0.0.1.

Every outbound connection these tests cause is checked by ``no_outside_traffic``: anything not
aimed at a loopback address is refused before a packet leaves, so a broken SSRF guard fails a
test instead of reaching 10.0.0.5 or a cloud metadata endpoint.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authserver.clients.metadata_document import (
    ClientMetadata,
    MetadataDocumentError,
    MetadataFetcher,
    is_metadata_document_url,
)

JSON = "application/json"


@dataclass
class Route:
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": JSON})
    body: bytes = b""
    delay: float = 0.0
    chunks: list[bytes] | None = None  # sent chunked, without Content-Length
    chunk_delay: float = 0.0


class DocumentServer:
    """A tiny HTTP/1.1 server whose routes tests set; counts hits per path."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with server.lock:
                    server.hits[self.path] = server.hits.get(self.path, 0) + 1
                route = server.routes.get(self.path, Route(status=404, body=b"{}"))
                time.sleep(route.delay)
                try:
                    self.send_response(route.status)
                    for name, value in route.headers.items():
                        self.send_header(name, value)
                    self.send_header("Connection", "close")
                    if route.chunks is None:
                        if "Content-Length" not in route.headers:
                            self.send_header("Content-Length", str(len(route.body)))
                        self.end_headers()
                        self.wfile.write(route.body)
                        return
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in route.chunks:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                        time.sleep(route.chunk_delay)
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the client gave up on us, as it should

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def serve(self, path: str, document: dict[str, Any] | None = None, **route: Any) -> str:
        """Serve ``document`` (with client_id defaulting to its own URL) at ``path``; return the URL."""
        url = self.url(path)
        if document is not None:
            route.setdefault("body", json.dumps({"client_id": url, **document}).encode())
        self.routes[path] = Route(**route)
        return url

    def hit_count(self, path: str) -> int:
        with self.lock:
            return self.hits.get(path, 0)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[DocumentServer]:
    srv = DocumentServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def connections(loopback_connections: list[str]) -> list[str]:
    """Every test here runs with outgoing connections limited to loopback (see conftest)."""
    return loopback_connections


def good_document(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "client_name": "Example MCP Client",
        "redirect_uris": ["http://127.0.0.1:33418/callback", "https://app.example.com/cb"],
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def fetcher(**kwargs: Any) -> MetadataFetcher:
    kwargs.setdefault("allow_loopback_http", True)
    return MetadataFetcher(**kwargs)


def refused(f: MetadataFetcher, url: str, match: str) -> MetadataDocumentError:
    with pytest.raises(MetadataDocumentError, match=match) as info:
        f.fetch(url)
    assert info.value.public == str(info.value)
    return info.value


# -- URL shape ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("client_id", "expected"), [
    ("https://app.example.com/client.json", True),
    ("https://app.example.com:8443/oauth/client", True),
    ("https://app.example.com/client?version=2", True),
    ("https://[2001:db8::1]/client", True),
    ("https://app.example.com", False),             # no path
    ("https://app.example.com/", False),            # root path
    ("http://app.example.com/client.json", False),  # not https
    ("http://127.0.0.1/client.json", False),        # http even on loopback, without the switch
    ("ftp://app.example.com/client.json", False),
    ("https:///client.json", False),                # no host
    ("https://app.example.com/client.json#frag", False),
    ("https://app.example.com/client.json#", False),
    ("https://user:pw@app.example.com/client.json", False),
    ("https://user@app.example.com/client.json", False),
    ("https://app.example.com/a/../client.json", False),
    ("https://app.example.com/./client.json", False),
    ("https://app.example.com/a/%2e%2E/client.json", False),
    ("https://app.example.com/a/..", False),
    ("https://app.example.com/a..b/c.json", True),  # dots inside a segment are fine
    ("https://app.example.com/client json", False),
    ("https://app.example.com/cl\u00efent", False),
    ("https://app.example.com\\@evil.example/x", False),
    ("https://app.example.com:99999/client", False),
    ("https://app.example.com/" + "a" * 2024, True),  # exactly 2048
    ("https://app.example.com/" + "a" * 2025, False),
    ("https://app.example.com/" + "a" * 2100, False),
    ("", False),
    ("client-123", False),
])
def test_is_metadata_document_url(client_id: str, expected: bool) -> None:
    assert is_metadata_document_url(client_id) is expected


def test_is_metadata_document_url_loopback_switch() -> None:
    assert is_metadata_document_url("http://127.0.0.1:9/c.json", allow_loopback_http=True)
    assert is_metadata_document_url("http://localhost:9/c.json", allow_loopback_http=True)
    assert not is_metadata_document_url("http://example.com/c.json", allow_loopback_http=True)


# -- accepted documents and caching -------------------------------------------------------------

def test_valid_document_is_accepted_and_cached(server: DocumentServer) -> None:
    url = server.serve("/client.json", good_document(scope="read:calendar", client_uri="https://app.example.com",
                                                     logo_uri="https://app.example.com/logo.png"),
                       headers={"Content-Type": "application/json; charset=utf-8"})
    f = fetcher()
    before = time.time()
    meta = f.fetch(url)
    assert isinstance(meta, ClientMetadata)
    assert meta.client_id == url
    assert meta.client_name == "Example MCP Client"
    assert meta.redirect_uris == ("http://127.0.0.1:33418/callback", "https://app.example.com/cb")
    assert meta.token_endpoint_auth_method == "none"
    assert meta.grant_types == ("authorization_code",)
    assert meta.scope == "read:calendar"
    assert meta.client_uri == "https://app.example.com"
    assert meta.logo_uri == "https://app.example.com/logo.png"
    assert meta.jwks_uri is None
    assert before + 3600 - 1 <= meta.expires_at <= time.time() + 3600  # default_ttl without Cache-Control
    assert f.fetch(url) is meta
    assert server.hit_count("/client.json") == 1


def test_private_key_jwt_and_refresh_token(server: DocumentServer) -> None:
    url = server.serve("/pkjwt", good_document(token_endpoint_auth_method="private_key_jwt",
                                               jwks_uri="https://app.example.com/jwks.json",
                                               grant_types=["authorization_code", "refresh_token"],
                                               response_types=["code"]))
    meta = fetcher().fetch(url)
    assert meta.token_endpoint_auth_method == "private_key_jwt"
    assert meta.jwks_uri == "https://app.example.com/jwks.json"
    assert meta.grant_types == ("authorization_code", "refresh_token")

    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
    url = server.serve("/inline", good_document(token_endpoint_auth_method="private_key_jwt",
                                                jwks={"keys": [public]}))
    assert fetcher().fetch(url).jwks == {"keys": [public]}

    # Not a key at all, or a private one: refused.
    for keys in ([{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}], [{**public, "d": "c2VjcmV0"}]):
        url = server.serve("/bad-keys", good_document(token_endpoint_auth_method="private_key_jwt",
                                                      jwks={"keys": keys}))
        refused(fetcher(), url, "jwks")


def test_max_age_is_respected(server: DocumentServer) -> None:
    url = server.serve("/short", good_document(),
                       headers={"Content-Type": JSON, "Cache-Control": "public, max-age=1"})
    f = fetcher(min_ttl=1, max_ttl=10, default_ttl=5)
    first = f.fetch(url)
    assert first.expires_at <= time.time() + 1
    f.fetch(url)
    assert server.hit_count("/short") == 1
    time.sleep(1.1)
    assert f.fetch(url) is not first
    assert server.hit_count("/short") == 2


@pytest.mark.parametrize(("cache_control", "ttl"), [
    ("max-age=100000", 10),   # clamped to max_ttl
    ("max-age=0", 2),         # clamped to min_ttl
    ("no-store", 2),          # min_ttl, not zero: no fetch storms
    ("no-cache, max-age=9", 2),
    ('max-age="7"', 7),
    ("max-age=bogus", 5),     # default_ttl
    (None, 5),
])
def test_cache_lifetime_follows_cache_control(server: DocumentServer, cache_control: str | None, ttl: int) -> None:
    headers = {"Content-Type": JSON} | ({"Cache-Control": cache_control} if cache_control else {})
    url = server.serve("/ttl", good_document(), headers=headers)
    start = time.time()
    meta = fetcher(min_ttl=2, max_ttl=10, default_ttl=5).fetch(url)
    assert start + ttl - 0.5 <= meta.expires_at <= time.time() + ttl


def test_concurrent_fetches_share_one_request(server: DocumentServer) -> None:
    url = server.serve("/slowish", good_document(), delay=0.3)
    f = fetcher()
    results: list[ClientMetadata] = []
    threads = [threading.Thread(target=lambda: results.append(f.fetch(url))) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 5 and len({id(r) for r in results}) == 1
    assert server.hit_count("/slowish") == 1


# -- refused documents --------------------------------------------------------------------------

def test_client_id_mismatch_is_refused(server: DocumentServer) -> None:
    url = server.serve("/other", good_document(client_id="https://evil.example/client.json"))
    refused(fetcher(), url, "client_id does not match")
    # Not even a trailing-slash or case difference: the comparison is exact.
    url = server.serve("/exact", body=json.dumps({**good_document(), "client_id": server.url("/EXACT")}).encode())
    refused(fetcher(), url, "client_id does not match")


@pytest.mark.parametrize(("document", "match"), [
    (good_document(client_name=None), "client_name"),
    (good_document(client_name="   "), "client_name"),
    (good_document(client_name=42), "client_name"),
    (good_document(client_name="x" * 201), "longer than 200"),
    (good_document(client_name="Nice\nApp"), "control characters"),
    (good_document(redirect_uris=None), "redirect_uris"),
    (good_document(redirect_uris=[]), "redirect_uris"),
    (good_document(redirect_uris="https://app.example.com/cb"), "redirect_uris"),
    (good_document(redirect_uris=[7]), "redirect_uris must be strings"),
    (good_document(redirect_uris=["http://app.example.com/cb"]), "must be https"),
    (good_document(redirect_uris=["https://app.example.com/cb#x"]), "fragment"),
    (good_document(redirect_uris=["javascript:alert(1)"]), "must be https"),
    (good_document(token_endpoint_auth_method="client_secret_basic"), "shared secret"),
    (good_document(token_endpoint_auth_method="client_secret_post"), "shared secret"),
    (good_document(token_endpoint_auth_method="tls_client_auth"), "not supported"),
    (good_document(client_secret="s3cret"), "must not contain client_secret"),
    (good_document(client_secret_expires_at=0), "must not contain client_secret_expires_at"),
    (good_document(grant_types=["client_credentials"]), "client_credentials"),
    (good_document(grant_types=["authorization_code", "implicit"]), "implicit"),
    (good_document(grant_types=["refresh_token"]), "must include authorization_code"),
    (good_document(grant_types=[]), "grant_types"),
    (good_document(response_types=["token"]), "response_types"),
    (good_document(response_types=["code", "token"]), "response_types"),
    (good_document(token_endpoint_auth_method="private_key_jwt"), "jwks_uri or jwks"),
    (good_document(token_endpoint_auth_method="private_key_jwt", jwks_uri="https://a.example/j",
                   jwks={"keys": []}), "both"),
    (good_document(jwks_uri="http://a.example/jwks"), "jwks_uri must be an https URL"),
    (good_document(logo_uri="javascript:alert(1)"), "logo_uri must be an https URL"),
    (good_document(client_uri=["https://a.example"]), "client_uri must be a string"),
    (good_document(scope=["read"]), "scope must be a string"),
])
def test_invalid_documents_are_refused(server: DocumentServer, document: dict[str, Any], match: str) -> None:
    refused(fetcher(), server.serve("/bad", document), match)


@pytest.mark.parametrize(("body", "match"), [
    (b"[]", "JSON object"),
    (b"not json", "not valid JSON"),
    (b'{"client_id": "a", "client_id": "b"}', "not valid JSON"),  # duplicate members
    (b'{"x": NaN}', "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
])
def test_malformed_json_is_refused(server: DocumentServer, body: bytes, match: str) -> None:
    refused(fetcher(), server.serve("/malformed", body=body), match)


# -- transport limits ---------------------------------------------------------------------------

def test_oversized_body_with_content_length(server: DocumentServer) -> None:
    url = server.serve("/big", good_document(padding="x" * 6000))
    refused(fetcher(), url, "larger than 5120 bytes")


def test_oversized_body_streamed_without_content_length(server: DocumentServer) -> None:
    body = json.dumps({"client_id": server.url("/chunked"), **good_document(padding="x" * 20000)}).encode()
    server.serve("/chunked", chunks=[body[i:i + 1000] for i in range(0, len(body), 1000)])
    refused(fetcher(), server.url("/chunked"), "larger than 5120 bytes")


def test_lying_content_length_is_not_trusted(server: DocumentServer) -> None:
    body = json.dumps({"client_id": server.url("/liar"), **good_document(padding="x" * 6000)}).encode()
    # Claims 100 bytes but sends more: h11 stops at the declared length, so the doc is truncated
    # and refused rather than read beyond the limit.
    server.serve("/liar", body=body, headers={"Content-Type": JSON, "Content-Length": "100"})
    refused(fetcher(), server.url("/liar"), "not valid JSON")


def test_small_chunked_document_is_accepted(server: DocumentServer) -> None:
    body = json.dumps({"client_id": server.url("/small-chunks"), **good_document()}).encode()
    server.serve("/small-chunks", chunks=[body[:20], body[20:]])
    assert fetcher().fetch(server.url("/small-chunks")).client_name == "Example MCP Client"


def test_slow_server_times_out(server: DocumentServer) -> None:
    url = server.serve("/slow", good_document(), delay=2.0)
    start = time.monotonic()
    refused(fetcher(timeout=0.5), url, "timed out")
    assert time.monotonic() - start < 1.5


def test_slow_drip_body_hits_the_total_deadline(server: DocumentServer) -> None:
    # Each byte arrives well within a per-read timeout; only a total deadline stops this.
    server.serve("/drip", chunks=[b" "] * 40, chunk_delay=0.1)
    start = time.monotonic()
    refused(fetcher(timeout=0.5), server.url("/drip"), "timed out")
    assert time.monotonic() - start < 1.2


def test_redirect_is_not_followed(server: DocumentServer) -> None:
    target = server.serve("/target", good_document())
    url = server.serve("/redirect", status=302, headers={"Location": target, "Content-Type": JSON})
    refused(fetcher(), url, "redirects are not followed")
    assert server.hit_count("/target") == 0


@pytest.mark.parametrize("status", [404, 500, 204])
def test_non_200_is_refused(server: DocumentServer, status: int) -> None:
    refused(fetcher(), server.serve("/status", good_document(), status=status), f"HTTP {status}")


@pytest.mark.parametrize("content_type", ["text/html", "text/plain", "application/jsonx", "",
                                          "application/json; charset=iso-8859-1"])
def test_wrong_content_type_is_refused(server: DocumentServer, content_type: str) -> None:
    url = server.serve("/ctype", good_document(), headers={"Content-Type": content_type} if content_type else {})
    refused(fetcher(), url, "application/json|UTF-8")


def test_compressed_body_is_refused(server: DocumentServer) -> None:
    url = server.serve("/gz", good_document(), headers={"Content-Type": JSON, "Content-Encoding": "gzip"})
    refused(fetcher(), url, "compressed")


# -- SSRF guards ---------------------------------------------------------------------------------

@pytest.mark.parametrize("addresses", [
    ["10.0.0.5"], ["169.254.169.254"], ["::ffff:127.0.0.1"], ["127.0.0.1"], ["::1"], ["192.168.1.1"],
    ["fd00::1"], ["fe80::1"], ["0.0.0.0"], ["224.0.0.1"], ["100.64.0.1"], ["2002:a00:1::1"],
    ["64:ff9b::a9fe:a9fe"], ["::ffff:10.0.0.5"],
    ["93.184.215.14", "10.0.0.5"],  # one bad address refuses them all
])
def test_private_addresses_are_refused_before_connecting(server: DocumentServer, connections: list[str],
                                                          addresses: list[str]) -> None:
    server.serve("/client.json", good_document())
    lookups: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append((host, port))
        return addresses

    f = MetadataFetcher(resolver=resolver)  # allow_loopback_http off: production behaviour
    url = f"https://client.example:{server.port}/client.json"
    error = refused(f, url, "could not be resolved to a public address")
    assert lookups == [("client.example", server.port)]
    assert connections == []
    assert server.hit_count("/client.json") == 0
    assert addresses[-1] not in error.public  # the address stays in the log-only detail
    assert error.detail and addresses[-1] in error.detail


def test_loopback_http_needs_loopback_addresses(server: DocumentServer, connections: list[str]) -> None:
    # With the switch on, "localhost" resolving somewhere public still gets no plain-http request.
    f = fetcher(resolver=lambda host, port: ["93.184.215.14"])
    refused(f, f"http://localhost:{server.port}/client.json", "public address")
    assert connections == []


def test_resolver_failure_is_refused(connections: list[str]) -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise socket.gaierror("Name or service not known")

    refused(MetadataFetcher(resolver=resolver), "https://nowhere.invalid/client.json", "could not be resolved")
    assert connections == []


def test_http_url_without_the_switch_is_refused(server: DocumentServer, connections: list[str]) -> None:
    url = server.serve("/client.json", good_document())
    refused(MetadataFetcher(), url, "not a valid client metadata document URL")
    assert connections == []
    assert server.hit_count("/client.json") == 0


def test_http_on_non_loopback_host_is_refused_even_with_the_switch(connections: list[str]) -> None:
    refused(fetcher(), "http://app.example.com/client.json", "not a valid client metadata document URL")
    assert connections == []


def test_pinned_connection_uses_the_vetted_address(server: DocumentServer, connections: list[str]) -> None:
    # The URL's host name is resolved once, by our resolver; the socket goes to that address.
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    body = json.dumps({"client_id": f"http://localhost:{server.port}/pinned", **good_document()}).encode()
    server.serve("/pinned", body=body)
    meta = fetcher(resolver=resolver).fetch(f"http://localhost:{server.port}/pinned")
    assert meta.client_id == f"http://localhost:{server.port}/pinned"
    assert calls == ["localhost"]
    assert connections == ["127.0.0.1"]


# -- host patterns and negative cache --------------------------------------------------------------

def test_denied_host_patterns(server: DocumentServer, connections: list[str]) -> None:
    url = server.serve("/client.json", good_document())
    refused(fetcher(denied_hosts=["127.0.0.*"]), url, "not accepted here")
    refused(fetcher(denied_hosts=["*.evil.example"]), "https://a.b.EVIL.example/client.json", "not accepted here")
    # Denied wins over allowed.
    refused(fetcher(allowed_hosts=["127.0.0.1"], denied_hosts=["127.0.0.1"]), url, "not accepted here")
    assert connections == []
    assert fetcher(denied_hosts=["*.evil.example"]).fetch(url).client_id == url


def test_allowed_host_patterns(server: DocumentServer, connections: list[str]) -> None:
    url = server.serve("/client.json", good_document())
    refused(fetcher(allowed_hosts=["*.example.com"]), url, "not accepted here")
    refused(fetcher(allowed_hosts=[]), url, "not accepted here")  # an empty allow-list allows nothing
    assert connections == []
    assert fetcher(allowed_hosts=["*.example.com", "127.0.0.1"]).fetch(url).client_id == url


def test_failures_are_cached_briefly(server: DocumentServer) -> None:
    url = server.serve("/flaky", good_document(), status=500)
    f = fetcher(negative_ttl=1)
    refused(f, url, "HTTP 500")
    server.serve("/flaky", good_document())  # fixed, but we do not ask again yet
    refused(f, url, "HTTP 500")
    assert server.hit_count("/flaky") == 1
    time.sleep(1.1)
    assert f.fetch(url).client_id == url
    assert server.hit_count("/flaky") == 2


def test_forget_drops_a_cached_entry(server: DocumentServer) -> None:
    url = server.serve("/forget", good_document())
    f = fetcher()
    f.fetch(url)
    f.forget(url)
    f.fetch(url)
    assert server.hit_count("/forget") == 2


# -- TLS: pinned address, SNI and certificate checked against the host name ------------------------

@dataclass
class Pki:
    ca: ssl.SSLContext  # client side: trusts only the test CA
    server_context: Callable[[str], ssl.SSLContext]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory: Path = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def server_context(host: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(host)).issuer_name(ca_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        cert_path, key_path = directory / f"{host}.pem", directory / f"{host}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        return context

    return Pki(ca=ssl.create_default_context(cafile=str(ca_path)), server_context=server_context)


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[tuple[DocumentServer, list[str | None]]]:
    context = pki.server_context("client.test")
    sni: list[str | None] = []

    def record_sni(sock: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        sni.append(server_name)

    context.sni_callback = record_sni  # type: ignore[assignment]
    srv = DocumentServer(tls=context)
    yield srv, sni
    srv.close()


def test_https_pins_the_address_and_verifies_the_host_name(
        tls_server: tuple[DocumentServer, list[str | None]], pki: Pki, connections: list[str]) -> None:
    server, sni = tls_server
    url = server.url("/client.json", host="client.test", scheme="https")
    server.routes["/client.json"] = Route(body=json.dumps({"client_id": url, **good_document()}).encode())
    # client.test does not exist in DNS: only our resolver's (vetted) answer can get us there.
    f = MetadataFetcher(allow_loopback_http=True, ssl_context=pki.ca, resolver=lambda host, port: ["127.0.0.1"])
    assert f.fetch(url).client_id == url
    assert sni == ["client.test"]
    assert connections == ["127.0.0.1"]


def test_https_refuses_a_certificate_for_another_host(
        tls_server: tuple[DocumentServer, list[str | None]], pki: Pki) -> None:
    server, sni = tls_server
    url = server.url("/client.json", host="other.test", scheme="https")
    server.routes["/client.json"] = Route(body=json.dumps({"client_id": url, **good_document()}).encode())
    f = MetadataFetcher(allow_loopback_http=True, ssl_context=pki.ca, resolver=lambda host, port: ["127.0.0.1"])
    error = refused(f, url, "could not be fetched")
    assert "CERTIFICATE_VERIFY_FAILED" in (error.detail or "") or "hostname" in (error.detail or "").lower()
    assert sni == ["other.test"]
    assert server.hit_count("/client.json") == 0


def test_https_with_default_trust_refuses_the_test_certificate(
        tls_server: tuple[DocumentServer, list[str | None]]) -> None:
    server, _ = tls_server
    url = server.url("/client.json", host="client.test", scheme="https")
    f = MetadataFetcher(allow_loopback_http=True, resolver=lambda host, port: ["127.0.0.1"])
    refused(f, url, "could not be fetched")
    assert server.hit_count("/client.json") == 0



def test_cache_only_lookup_never_touches_the_network(server: DocumentServer) -> None:
    url = server.serve("/cache-only.json", good_document())
    f = fetcher()
    refused_now = pytest.raises(MetadataDocumentError, match="not available")
    with refused_now:
        f.fetch(url, network=False)
    assert server.hit_count("/cache-only.json") == 0
    f.fetch(url)
    assert f.fetch(url, network=False).client_id == url
    assert server.hit_count("/cache-only.json") == 1


def test_concurrent_fetches_are_bounded(server: DocumentServer) -> None:
    url = server.serve("/bounded.json", good_document())
    f = fetcher(max_concurrent_fetches=1)
    assert f._fetch_slots.acquire(blocking=False)  # one fetch in flight elsewhere
    with pytest.raises(MetadataDocumentError, match="too many"):
        f.fetch(url)
    assert server.hit_count("/bounded.json") == 0
    f._fetch_slots.release()
    assert f.fetch(url).client_id == url  # the refusal was not cached
