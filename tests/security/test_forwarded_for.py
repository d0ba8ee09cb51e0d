"""X-Forwarded-For is believed only from a trusted proxy (AUTHSERVER_TRUSTED_PROXIES, off by default)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from starlette.requests import HTTPConnection
from starlette.testclient import TestClient

from authserver import replay
from authserver.app import create_app
from authserver.audit.models import AuditEvent
from authserver.db import Database, utcnow
from authserver.net import address_group, client_address, parse_networks
from tests.conftest import ISSUER, make_settings


def _conn(peer: str, *forwarded: str) -> HTTPConnection:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return HTTPConnection({"type": "http", "client": (peer, 1234), "headers": headers})


PROXIES = parse_networks(["10.0.0.0/8", "::1"])


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert client_address(_conn("203.0.113.9", "198.51.100.1")) == "203.0.113.9"
    assert client_address(_conn("203.0.113.9", "198.51.100.1"), PROXIES) == "203.0.113.9"


def test_forwarded_for_from_a_trusted_proxy_gives_the_first_untrusted_hop_from_the_right() -> None:
    # The client wrote "1.2.3.4" itself; the proxy appended what it saw (198.51.100.1).
    assert client_address(_conn("10.0.0.2", "1.2.3.4, 198.51.100.1"), PROXIES) == "198.51.100.1"
    assert client_address(_conn("10.0.0.2", "198.51.100.1, 10.0.0.7"), PROXIES) == "198.51.100.1"
    assert client_address(_conn("10.0.0.2", "1.2.3.4", "198.51.100.1"), PROXIES) == "198.51.100.1"


def test_garbage_or_missing_forwarded_for_answers_with_the_proxy_itself() -> None:
    assert client_address(_conn("10.0.0.2"), PROXIES) == "10.0.0.2"
    assert client_address(_conn("10.0.0.2", "not-an-ip"), PROXIES) == "10.0.0.2"
    assert client_address(_conn("10.0.0.2", "10.0.0.3"), PROXIES) == "10.0.0.2"


def test_ipv6_addresses_are_grouped_by_their_64() -> None:
    assert address_group("2001:db8:1:2:aaaa::1") == address_group("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_group("2001:db8:1:3::1") != address_group("2001:db8:1:2::1")
    assert address_group("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_group("192.0.2.1") == "192.0.2.1"


def test_bad_trusted_proxy_setting_is_a_config_error() -> None:
    from authserver.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="AUTHSERVER_TRUSTED_PROXIES"):
        load_settings(trusted_proxies=["10.0.0.0/33"])


@pytest.mark.parametrize("trusted", [False, True])
def test_spoofed_forwarded_for_does_not_change_the_audited_address(db_url: str, trusted: bool) -> None:
    """The audit log (and every limit) sees the forwarded address only behind a trusted proxy."""
    settings = make_settings(db_url, trusted_proxies=["192.0.2.0/24"] if trusted else [])
    db = Database(db_url)
    try:
        app = create_app(settings, db=db)
        with TestClient(app, base_url=ISSUER, client=("192.0.2.10", 5000)) as client:
            response = client.post("/register", json={"redirect_uris": ["http://127.0.0.1:9/cb"],
                                                       "client_name": "xff"},
                                   headers={"X-Forwarded-For": "198.51.100.77"})
            assert response.status_code == 201
        with db.session() as session:
            ips = {row.ip for row in session.query(AuditEvent).filter(AuditEvent.event == "client.registered")}
        assert ips == ({"198.51.100.77"} if trusted else {"192.0.2.10"})
    finally:
        db.dispose()


def test_a_proof_jti_is_spent_once_across_databases_sessions(db: Database) -> None:
    later = utcnow() + timedelta(minutes=5)
    assert replay.claim(db, "dpop", "jkt-a", "jti-1", later) is True
    assert replay.claim(db, "dpop", "jkt-a", "jti-1", later) is False
    # Another presenter, or another kind of proof, is another key.
    assert replay.claim(db, "dpop", "jkt-b", "jti-1", later) is True
    assert replay.claim(db, "client-assertion", "jkt-a", "jti-1", later) is True
    with db.session() as session:
        assert replay.purge(session, utcnow() + timedelta(minutes=10)) == 3
    assert replay.claim(db, "dpop", "jkt-a", "jti-1", later) is True


def test_forwarded_hops_with_a_port_are_read_as_their_address() -> None:
    assert client_address(_conn("10.0.0.2", "198.51.100.1:4242"), PROXIES) == "198.51.100.1"
    assert client_address(_conn("10.0.0.2", "[2001:db8::7]:4242"), PROXIES) == "2001:db8::7"
    assert client_address(_conn("10.0.0.2", "[2001:db8::7]"), PROXIES) == "2001:db8::7"
    assert client_address(_conn("10.0.0.2", "2001:db8::7"), PROXIES) == "2001:db8::7"
    assert client_address(_conn("10.0.0.2", "198.51.100.1, 10.0.0.7:80"), PROXIES) == "198.51.100.1"
    assert client_address(_conn("10.0.0.2", "198.51.100.1:x"), PROXIES) == "10.0.0.2"


def test_outsider_behind_a_proxy_writing_ports_does_not_pass_for_the_proxy_at_the_console(db_url: str) -> None:
    """A proxy that forwards ``ip:port`` (Azure Application Gateway does) made every client the proxy
    itself: with the proxy's network in the console's allow-list, anyone outside reached /admin."""
    settings = make_settings(db_url, trusted_proxies=["10.0.0.0/8"], admin_allowed_ips=["10.0.0.0/8"])
    db = Database(db_url)
    try:
        app = create_app(settings, db=db)
        with TestClient(app, base_url=ISSUER, client=("10.0.0.5", 5000), follow_redirects=False) as client:
            inside = client.get("/admin", headers={"X-Forwarded-For": "10.1.2.3:50123"})
            assert inside.status_code != 403  # an address inside the list still gets in (to sign in)
            outside = client.get("/admin", headers={"X-Forwarded-For": "203.0.113.9:50123"})
            assert outside.status_code == 403, outside.status_code
            assert "cannot be reached from this address" in outside.text
    finally:
        db.dispose()
