"""RFC 8414 authorization server metadata, and where it is served.

MCP clients do not follow redirects during discovery, so the same document is
served directly at every URL they try (MCP authorization spec, "Authorization
Server Metadata Discovery").
"""

from __future__ import annotations

from typing import Any

from authserver.clients.jwks import ALGORITHMS
from authserver.dpop import SIGNING_ALGORITHMS
from authserver.settings import Settings


def discovery_paths(settings: Settings) -> list[str]:
    path = settings.issuer_path
    paths = [
        f"/.well-known/oauth-authorization-server{path}",
        f"/.well-known/openid-configuration{path}",
    ]
    if path:
        paths.append(f"{path}/.well-known/openid-configuration")
    return paths


def build_metadata(settings: Settings, public_scopes: list[str], *, registration: bool = True) -> dict[str, Any]:
    """``registration``: whether the current policy accepts RFC 7591 registrations (not ``off``)."""
    e = settings.endpoint
    auth_methods = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
    confidential_methods = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
    signing_algs = list(ALGORITHMS)  # private_key_jwt assertions (asymmetric only)
    metadata = {
        "issuer": settings.issuer,
        "authorization_endpoint": e("/authorize"),
        "token_endpoint": e("/token"),
        "revocation_endpoint": e("/revoke"),
        "introspection_endpoint": e("/introspect"),
        "jwks_uri": e("/jwks.json"),
        # Extension field (RFC 8414 §2 allows them): where resource servers report tool calls.
        "tool_call_endpoint": e("/tool-calls"),
        "scopes_supported": [*public_scopes, "offline_access"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": signing_algs,
        # Public clients revoke their own tokens by client_id (RFC 7009 §2.1).
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": signing_algs,
        "introspection_endpoint_auth_methods_supported": confidential_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": signing_algs,
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "resource_parameter_supported": True,
        "subject_types_supported": ["public"],
        "client_id_metadata_document_supported": settings.cimd_enabled,
        # RFC 9449 §5.1: the proof algorithms the token endpoint accepts.
        "dpop_signing_alg_values_supported": SIGNING_ALGORITHMS,
    }
    if registration:
        metadata["registration_endpoint"] = e("/register")
    return metadata
