"""Check a registered resource (MCP server) the way an MCP client will see it, and say so in words.

Fetches its RFC 9728 protected-resource metadata at the well-known URLs a client tries (§3.1: the
well-known segment inserted before the resource's path, then the host-level URL) and sends one
request without a token to the resource itself, then answers: does ``authorization_servers``
name this issuer exactly, does ``resource`` equal the registered URI, which advertised
``scopes_supported`` we do not know or do not allow for it, and is the 401 challenge right
(``WWW-Authenticate: Bearer`` with ``resource_metadata`` pointing at the document served).

Every request goes through ``safehttp`` — the same SSRF guard as metadata documents — because an
operator's typo or a compromised resource registration must not turn the console into a probe of
the internal network. Nothing here touches the database: the caller passes what is registered.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from authserver.resource.metadata import WELL_KNOWN, resource_metadata_url
from authserver.safehttp import FetchError, GuardedHTTP

SUBJECT = "the protected-resource metadata"
PROBE_SUBJECT = "the resource"
_USER_AGENT = b"authserver (resource check)"
_AUTH_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Finding:
    ok: bool
    message: str


@dataclass(frozen=True)
class CheckResult:
    resource: str
    metadata_url: str | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)


def candidate_urls(resource: str) -> list[str]:
    """Where MCP clients look for the document: path-inserted first, then host-level."""
    parts = urlsplit(resource)
    host_level = f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}"
    return list(dict.fromkeys([resource_metadata_url(resource), host_level]))


def bearer_params(header: str) -> dict[str, str] | None:
    """The parameters of the ``Bearer`` challenge in a WWW-Authenticate value, or None without one."""
    match = re.search(r"(?:^|,)\s*Bearer(?:\s+|$)", header, flags=re.IGNORECASE)
    if match is None:
        return None
    rest = header[match.end():]
    params: dict[str, str] = {}
    # A following challenge (", Basic realm=…") starts another scheme: its parameters are not ours.
    following = re.search(r",\s*[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*\s+[A-Za-z0-9_-]+\s*=", rest)
    if following is not None and not re.match(r",\s*[A-Za-z0-9_-]+\s*=", rest[following.start():]):
        rest = rest[:following.start()]
    for m in _AUTH_PARAM.finditer(rest):
        name = m.group(1).lower()
        params.setdefault(name, m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3))
    return params


class ResourceChecker:
    def __init__(self, http: GuardedHTTP) -> None:
        self._http = http

    @classmethod
    def for_settings(cls, allow_loopback_http: bool) -> ResourceChecker:
        return cls(GuardedHTTP(allow_loopback_http=allow_loopback_http, max_bytes=64 * 1024, timeout=5.0,
                               user_agent=_USER_AGENT))

    def check(self, resource: str, issuer: str, known_scopes: Collection[str],
              allowed_scopes: Collection[str]) -> CheckResult:
        findings: list[Finding] = []
        document, metadata_url = self._metadata(resource, findings)
        if document is not None and metadata_url is not None:
            findings.append(Finding(True, f"The protected-resource metadata was found at {metadata_url}."))
            findings.extend(_judge_document(document, resource, issuer, known_scopes, allowed_scopes))
        findings.append(self._probe(resource, metadata_url))
        return CheckResult(resource, metadata_url, findings)

    def _metadata(self, resource: str, findings: list[Finding]) -> tuple[dict[str, Any] | None, str | None]:
        failures = []
        for url in candidate_urls(resource):
            try:
                document, _ = self._http.get_json(url, SUBJECT)
            except FetchError as exc:
                failures.append(f"{url}: {exc.public}")
                continue
            if not isinstance(document, dict):
                failures.append(f"{url}: {SUBJECT} is not a JSON object")
                continue
            return document, url
        findings.append(Finding(False, "No protected-resource metadata (RFC 9728) could be read, so MCP clients "
                                       "cannot find this server's authorization server. Tried "
                                       + "; ".join(failures) + "."))
        return None, None

    def _probe(self, resource: str, metadata_url: str | None) -> Finding:
        try:
            answer = self._http.request(resource, PROBE_SUBJECT, accept=b"application/json, text/event-stream",
                                        read_body=False)
        except FetchError as exc:
            return Finding(False, f"The request without a token to {resource} failed: {exc.public}.")
        if answer.status != 401:
            return Finding(False, f"Without a token, {resource} answered HTTP {answer.status} instead of 401: "
                                  "it does not ask MCP clients to authorize, so they will not.")
        header = answer.headers.get("www-authenticate")
        params = bearer_params(header) if header else None
        if params is None:
            return Finding(False, "Without a token the resource answers 401, but without a "
                                  "WWW-Authenticate: Bearer challenge.")
        pointer = params.get("resource_metadata")
        if not pointer:
            return Finding(False, "The 401 challenge is Bearer but has no resource_metadata parameter, so clients "
                                  "must guess where the metadata is.")
        if metadata_url is None:
            return Finding(False, f"The 401 challenge points at {pointer}, but no metadata could be read there "
                                  "or at the well-known URLs.")
        if pointer != metadata_url:
            return Finding(False, f"The 401 challenge's resource_metadata points at {pointer}, but the metadata "
                                  f"was served at {metadata_url}.")
        return Finding(True, "Without a token the resource answers 401 with a Bearer challenge whose "
                             "resource_metadata points at the document it serves.")


def _judge_document(document: dict[str, Any], resource: str, issuer: str, known_scopes: Collection[str],
                    allowed_scopes: Collection[str]) -> list[Finding]:
    findings = []
    servers = document.get("authorization_servers")
    if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers) or not servers:
        findings.append(Finding(False, f"authorization_servers is missing or not a list of URLs; it must name "
                                       f"this server, {issuer}."))
    elif issuer in servers:
        findings.append(Finding(True, f"authorization_servers names this server ({issuer}) exactly."))
    else:
        near = [s for s in servers if s.rstrip("/") == issuer.rstrip("/")]
        hint = (f" {near[0]} differs only by a trailing slash, and clients compare issuers exactly." if near else "")
        findings.append(Finding(False, f"authorization_servers lists {', '.join(servers)}, not this server "
                                       f"({issuer}): MCP clients will ask another authorization server.{hint}"))
    named = document.get("resource")
    if named == resource:
        findings.append(Finding(True, "resource equals the registered URI."))
    else:
        findings.append(Finding(False, f"resource is {named!r} but the registered URI is {resource}: clients "
                                       "must refuse metadata for another resource (RFC 9728 §3.3)."))
    scopes = document.get("scopes_supported")
    if scopes is None:
        findings.append(Finding(True, "The metadata lists no scopes_supported (optional)."))
    elif not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        findings.append(Finding(False, "scopes_supported is not a list of strings."))
    else:
        unknown = [s for s in scopes if s not in known_scopes]
        not_allowed = [s for s in scopes if s in known_scopes and s not in allowed_scopes]
        if unknown:
            findings.append(Finding(False, f"It advertises scopes that are not registered here: {', '.join(unknown)}"
                                           ". Requests for them will be refused (invalid_scope)."))
        if not_allowed:
            findings.append(Finding(False, "It advertises scopes that are registered but not allowed for this "
                                           f"resource: {', '.join(not_allowed)}."))
        if not unknown and not not_allowed:
            findings.append(Finding(True, "Every advertised scope is registered and allowed for this resource."))
    return findings
