"""Attacks on the authorization endpoint (issue 3).

Until the client and its redirect URI are known to be right, every problem is an HTML
error page and nothing is redirected (RFC 6749 §4.1.2.1). After that, problems go back
to the redirect URI as OAuth errors carrying ``state`` and ``iss`` (RFC 9207). Either
way no authorization request is stored and no code exists.
"""

from __future__ import annotations

from starlette.testclient import TestClient

from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.db import Database
from tests.conftest import ISSUER
from tests.oauth_helpers import (
    LOOPBACK_REDIRECT,
    OTHER_RESOURCE,
    REDIRECT,
    RESOURCE,
    World,
    authorize_params,
    count,
    exchange,
    pkce_pair,
    query,
    run_flow,
    seed,
)

# --- helpers -------------------------------------------------------------------------------


def assert_error_page(response, db: Database) -> None:  # type: ignore[no-untyped-def]
    """An HTML error page, never a redirect; nothing stored."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert "<h1>" in response.text
    assert count(db, "authorization_requests") == 0
    assert count(db, "authorization_codes") == 0


def assert_error_redirect(response, db: Database, error: str, *, redirect_uri: str = REDIRECT,
                          state: str | None = "xyz-state") -> dict[str, str]:  # type: ignore[no-untyped-def]
    """An OAuth error sent back to the (validated) redirect URI, with ``state`` and ``iss``."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(redirect_uri + "?"), location
    params = query(location)
    assert params["error"] == error, params
    assert params["iss"] == ISSUER
    if state is None:
        assert "state" not in params
    else:
        assert params["state"] == state
    assert "code" not in params
    assert response.headers["cache-control"] == "no-store"
    assert count(db, "authorization_requests") == 0
    assert count(db, "authorization_codes") == 0
    return params


def authorize(client: TestClient, world: World, **extra: str):  # type: ignore[no-untyped-def]
    _, challenge = pkce_pair()
    return client.get("/authorize", params=authorize_params(world.public_id, challenge, **extra))


def authorize_items(client: TestClient, items: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    return client.get("/authorize", params=items)


# --- client and redirect URI: error page, never a redirect ----------------------------------


def test_unregistered_redirect_uri_shows_error_page(client: TestClient, db: Database) -> None:
    world = seed(db)
    response = authorize(client, world, redirect_uri="https://attacker.example.net/steal")
    assert_error_page(response, db)
    assert "Invalid redirect" in response.text


def test_authorize_post_with_unregistered_redirect_uri_shows_error_page(client: TestClient, db: Database) -> None:
    world = seed(db)
    _, challenge = pkce_pair()
    response = client.post("/authorize", data=authorize_params(world.public_id, challenge,
                                                               redirect_uri="https://evil.example.com/callback"))
    assert_error_page(response, db)


def test_prefix_matched_redirect_uri_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_page(authorize(client, world, redirect_uri=REDIRECT + "/extra"), db)


def test_trailing_slash_redirect_uri_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_page(authorize(client, world, redirect_uri=REDIRECT + "/"), db)


def test_redirect_uri_on_different_host_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_page(authorize(client, world, redirect_uri="https://evil.example.com/callback"), db)


def test_redirect_uri_with_different_scheme_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_page(authorize(client, world, redirect_uri="http://app.example.com/callback"), db)


def test_redirect_uri_with_userinfo_injection_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_page(authorize(client, world, redirect_uri="https://app.example.com@evil.com/callback"), db)


def test_redirect_uri_with_extra_query_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_page(authorize(client, world, redirect_uri=REDIRECT + "?next=https://evil.com"), db)


def test_redirect_uri_with_fragment_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_page(authorize(client, world, redirect_uri=REDIRECT + "#x"), db)


def test_unknown_client_id_shows_error_page(client: TestClient, db: Database) -> None:
    seed(db)
    _, challenge = pkce_pair()
    response = client.get("/authorize", params=authorize_params("no-such-client", challenge))
    assert_error_page(response, db)
    assert "Unknown application" in response.text


def test_missing_client_id_shows_error_page(client: TestClient, db: Database) -> None:
    seed(db)
    _, challenge = pkce_pair()
    assert_error_page(client.get("/authorize", params=authorize_params("<omit>", challenge)), db)


def test_disabled_client_shows_error_page(client: TestClient, db: Database) -> None:
    world = seed(db)
    with db.session() as s:
        clients.require(s, world.public_id).disabled = True
    assert_error_page(authorize(client, world), db)


def test_repeated_client_id_shows_error_page(client: TestClient, db: Database) -> None:
    world = seed(db)
    _, challenge = pkce_pair()
    items = [*authorize_params(world.public_id, challenge).items(), ("client_id", world.public_id)]
    response = authorize_items(client, items)
    assert_error_page(response, db)
    assert "client_id" in response.text


def test_repeated_redirect_uri_shows_error_page(client: TestClient, db: Database) -> None:
    world = seed(db)
    _, challenge = pkce_pair()
    # Even when both values are registered: which one would the code be bound to?
    items = [*authorize_params(world.public_id, challenge).items(), ("redirect_uri", LOOPBACK_REDIRECT)]
    response = authorize_items(client, items)
    assert_error_page(response, db)
    assert "redirect_uri" in response.text


def test_missing_redirect_uri_with_several_registered_shows_error_page(client: TestClient, db: Database) -> None:
    world = seed(db)  # the public client registered two redirect URIs
    assert_error_page(authorize(client, world, redirect_uri="<omit>"), db)


def test_loopback_redirect_may_use_any_port(client: TestClient, db: Database) -> None:
    world = seed(db)
    verifier, challenge = pkce_pair()
    redirect_uri = "http://127.0.0.1:53124/callback"
    location = run_flow(client, authorize_params(world.public_id, challenge, redirect_uri=redirect_uri))
    assert location.startswith(redirect_uri + "?"), location
    params = query(location)
    assert params["state"] == "xyz-state" and params["iss"] == ISSUER
    # The code is bound to the exact URI used, port included.
    wrong_port = exchange(client, params["code"], verifier, world.public_id,
                          redirect_uri="http://127.0.0.1:53125/callback")
    assert wrong_port.status_code == 400 and wrong_port.json()["error"] == "invalid_grant"
    response = exchange(client, params["code"], verifier, world.public_id, redirect_uri=redirect_uri)
    assert response.status_code == 200, response.text


def test_non_loopback_redirect_with_different_port_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_page(authorize(client, world, redirect_uri="https://app.example.com:8443/callback"), db)


def test_localhost_redirect_does_not_match_registered_127_0_0_1(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert LOOPBACK_REDIRECT == "http://127.0.0.1/callback"
    assert_error_page(authorize(client, world, redirect_uri="http://localhost:5000/callback"), db)


def test_loopback_redirect_with_different_path_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_page(authorize(client, world, redirect_uri="http://127.0.0.1:53124/other"), db)


def test_loopback_redirect_with_userinfo_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_page(authorize(client, world, redirect_uri="http://evil@127.0.0.1:53124/callback"), db)


def test_loopback_redirect_with_backslash_tricks_is_rejected(client: TestClient, db: Database) -> None:
    """Browsers read a backslash as a slash; whatever the parser, no code may go elsewhere."""
    world = seed(db)
    for trick in ("http://127.0.0.1:53124\\@evil.com/callback", "http://evil.com\\@127.0.0.1:53124/callback",
                  "http://127.0.0.1.evil.com:53124/callback", "http://127.1:53124/callback"):
        assert_error_page(authorize(client, world, redirect_uri=trick), db)


def test_https_redirect_to_loopback_host_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_page(authorize(client, world, redirect_uri="https://127.0.0.1:53124/callback"), db)


# --- PKCE: error redirect with state and iss -------------------------------------------------


def test_missing_code_challenge_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    params = assert_error_redirect(authorize(client, world, code_challenge="<omit>"), db, "invalid_request")
    assert "code_challenge" in params["error_description"]


def test_plain_code_challenge_method_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    verifier, _ = pkce_pair()
    response = authorize(client, world, code_challenge=verifier[:43], code_challenge_method="plain")
    params = assert_error_redirect(response, db, "invalid_request")
    assert "S256" in params["error_description"]


def test_missing_code_challenge_method_means_plain_and_is_rejected(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_redirect(authorize(client, world, code_challenge_method="<omit>"), db, "invalid_request")


def test_malformed_code_challenge_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    for bad in ("too-short", "A" * 44, "+" * 43, "=" * 43):
        response = authorize(client, world, code_challenge=bad)
        assert_error_redirect(response, db, "invalid_request")


def test_unknown_code_challenge_method_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_redirect(authorize(client, world, code_challenge_method="S512"), db, "invalid_request")


# --- other protocol errors -------------------------------------------------------------------


def test_response_type_token_is_unsupported_response_type(client: TestClient, db: Database) -> None:
    world = seed(db)
    response = authorize(client, world, response_type="token")
    assert_error_redirect(response, db, "unsupported_response_type")
    assert "#" not in response.headers["location"]  # no fragment: no implicit-style answer at all


def test_missing_response_type_is_unsupported_response_type(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_redirect(authorize(client, world, response_type="<omit>"), db, "unsupported_response_type")


def test_response_type_code_id_token_is_unsupported(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_redirect(authorize(client, world, response_type="code id_token"), db, "unsupported_response_type")


def test_repeated_scope_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    _, challenge = pkce_pair()
    items = [*authorize_params(world.public_id, challenge).items(), ("scope", "write:calendar")]
    params = assert_error_redirect(authorize_items(client, items), db, "invalid_request")
    assert "scope" in params["error_description"]


def test_repeated_code_challenge_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    _, challenge = pkce_pair()
    _, other = pkce_pair()
    items = [*authorize_params(world.public_id, challenge).items(), ("code_challenge", other)]
    assert_error_redirect(authorize_items(client, items), db, "invalid_request")


def test_repeated_state_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    _, challenge = pkce_pair()
    items = [*authorize_params(world.public_id, challenge, state="first").items(), ("state", "second")]
    response = authorize_items(client, items)
    assert response.status_code == 303
    params = query(response.headers["location"])
    assert params["error"] == "invalid_request" and params["iss"] == ISSUER
    assert count(db, "authorization_requests") == 0


def test_two_resource_parameters_are_invalid_target(client: TestClient, db: Database) -> None:
    world = seed(db)
    _, challenge = pkce_pair()
    items = [*authorize_params(world.confidential_id, challenge).items(), ("resource", OTHER_RESOURCE)]
    assert_error_redirect(authorize_items(client, items), db, "invalid_target")


def test_request_object_is_not_supported(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_redirect(authorize(client, world, request="eyJhbGciOiJub25lIn0.e30."), db, "request_not_supported")


def test_prompt_none_combined_with_login_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_redirect(authorize(client, world, prompt="none login"), db, "invalid_request")


def test_fragment_response_mode_is_invalid_request(client: TestClient, db: Database) -> None:
    world = seed(db)
    response = authorize(client, world, response_mode="fragment")
    assert_error_redirect(response, db, "invalid_request")
    assert "#" not in response.headers["location"]


def test_client_without_code_grant_is_unauthorized_client(client: TestClient, db: Database) -> None:
    world = seed(db)
    with db.session() as s:
        machine = clients.create_client(s, clients.NewClient(
            name="Machine", redirect_uris=[REDIRECT], grant_types=["client_credentials"],
            scopes=["read:calendar"], resources=[RESOURCE])).client.client_id
    _, challenge = pkce_pair()
    response = client.get("/authorize", params=authorize_params(machine, challenge))
    assert world.public_id != machine
    assert_error_redirect(response, db, "unauthorized_client")


def test_error_redirect_without_state_omits_state(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_redirect(authorize(client, world, state="<omit>", code_challenge="<omit>"), db, "invalid_request",
                          state=None)


def test_error_redirect_keeps_state_byte_for_byte(client: TestClient, db: Database) -> None:
    world = seed(db)
    state = "a b&c=d/é?#%"
    assert_error_redirect(authorize(client, world, state=state, response_type="token"), db,
                          "unsupported_response_type", state=state)


def test_error_redirect_goes_to_the_given_loopback_uri(client: TestClient, db: Database) -> None:
    world = seed(db)
    redirect_uri = "http://127.0.0.1:40001/callback"
    assert_error_redirect(authorize(client, world, redirect_uri=redirect_uri, code_challenge="<omit>"), db,
                          "invalid_request", redirect_uri=redirect_uri)


# --- scopes and resources --------------------------------------------------------------------


def test_scope_not_allowed_for_client_is_invalid_scope(client: TestClient, db: Database) -> None:
    world = seed(db)
    with db.session() as s:
        reader = clients.create_client(s, clients.NewClient(
            name="Reader", redirect_uris=[REDIRECT], public=True, scopes=["read:calendar"],
            resources=[RESOURCE])).client.client_id
    _, challenge = pkce_pair()
    # write:calendar is registered and accepted by the resource, but not on this client's allow-list.
    response = client.get("/authorize", params=authorize_params(reader, challenge,
                                                                scope="read:calendar write:calendar"))
    params = assert_error_redirect(response, db, "invalid_scope")
    assert "write:calendar" in params["error_description"]
    assert world.public_id != reader


def test_scope_not_allowed_for_resource_is_invalid_scope(client: TestClient, db: Database) -> None:
    world = seed(db)
    # read:email is on the confidential client's allow-list, but the calendar does not accept it.
    response = client.get("/authorize", params=authorize_params(
        world.confidential_id, pkce_pair()[1], resource=RESOURCE, scope="read:calendar read:email"))
    assert_error_redirect(response, db, "invalid_scope")


def test_unregistered_scope_is_invalid_scope(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_redirect(authorize(client, world, scope="read:calendar admin:everything"), db, "invalid_scope")


def test_offline_access_alone_gets_default_scopes_not_more(client: TestClient, db: Database) -> None:
    world = seed(db)
    verifier, challenge = pkce_pair()
    location = run_flow(client, authorize_params(world.public_id, challenge, scope="offline_access"))
    response = exchange(client, query(location)["code"], verifier, world.public_id)
    assert response.status_code == 200, response.text
    # The default scopes are the read-only part of the allow-list: never write:calendar.
    assert response.json()["scope"].split() == ["read:calendar", "offline_access"]


def test_unknown_resource_is_invalid_target(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert_error_redirect(authorize(client, world, resource="https://unknown.example.com/mcp"), db, "invalid_target")


def test_resource_with_userinfo_is_invalid_target_not_the_resource_it_seems(client: TestClient, db: Database) -> None:
    world = seed(db)
    assert RESOURCE == "https://calendar.example.com/mcp"  # what the disguises below seem to name
    for disguised in ("https://evil@calendar.example.com/mcp", "https://a:b@calendar.example.com/mcp"):
        assert_error_redirect(authorize(client, world, resource=disguised), db, "invalid_target")


def test_resource_client_may_not_use_is_invalid_target(client: TestClient, db: Database) -> None:
    world = seed(db)
    # The mail server is registered, but only the confidential client may use it.
    assert_error_redirect(authorize(client, world, resource=OTHER_RESOURCE, scope="read:email"), db,
                          "invalid_target")


def test_malformed_resource_is_invalid_target(client: TestClient, db: Database) -> None:
    world = seed(db)
    for bad in ("not a uri", "calendar.example.com/mcp", RESOURCE + "#fragment", "http://calendar.example.com/mcp",
                "ftp://calendar.example.com/mcp", "https://calendar.example.com:notaport/mcp"):
        assert_error_redirect(authorize(client, world, resource=bad), db, "invalid_target")


def test_missing_resource_with_several_allowed_is_invalid_target(client: TestClient, db: Database) -> None:
    world = seed(db)
    response = client.get("/authorize", params=authorize_params(world.confidential_id, pkce_pair()[1],
                                                                resource="<omit>"))
    assert_error_redirect(response, db, "invalid_target")


def test_resource_prefix_of_registered_is_invalid_target(client: TestClient, db: Database) -> None:
    world = seed(db)
    with db.session() as s:
        assert catalog.get_resource(s, RESOURCE) is not None
    for near in (RESOURCE + "/", RESOURCE + "/admin", "https://calendar.example.com/", RESOURCE + "?x=1"):
        assert_error_redirect(authorize(client, world, resource=near), db, "invalid_target")
