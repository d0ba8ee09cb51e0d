"""The repository contract of each domain, on SQLite and on PostgreSQL (the `db` fixture)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from authserver.audit.log import recent, record
from authserver.audit.models import AuditEvent
from authserver.catalog import repository as catalog
from authserver.clients import repository as clients
from authserver.clients.models import Client
from authserver.db import Database
from authserver.errors import AppError, NotFound
from authserver.users import repository as users
from authserver.users.models import User

PASSWORD = "correct horse battery staple"
ARGON2_PREFIX = "$argon2id$v=19$m=19456,t=2,p=1$"
RESOURCE = "https://mcp.example.com/mcp"


def _catalog(db: Database) -> None:
    with db.session() as s:
        catalog.create_scope(s, "read:calendar", "See your calendar")
        catalog.create_scope(s, "write:calendar", "Change your calendar", write=True)
        catalog.create_scope(s, "read:mail", "Read your mail")
        catalog.create_resource(s, RESOURCE, "Calendar", ["read:calendar", "write:calendar", "read:mail"])


# ---- users ----------------------------------------------------------------------------------

def test_password_is_stored_as_argon2id_with_owasp_parameters(db: Database) -> None:
    with db.session() as s:
        users.create_user(s, "alice", PASSWORD)
    with db.session() as s:
        stored = s.execute(text("SELECT password_hash FROM users WHERE username = 'alice'")).scalar_one()
    assert stored.startswith(ARGON2_PREFIX)
    assert PASSWORD not in stored


def test_new_user_gets_the_user_role_and_is_enabled(db: Database) -> None:
    with db.session() as s:
        users.create_user(s, "alice", PASSWORD)
        users.create_user(s, "root", PASSWORD, ["admin", "user", "admin"])
    with db.session() as s:
        alice = users.get_by_username(s, "alice")
        root = users.get_by_username(s, "root")
        assert alice is not None and root is not None
        assert alice.roles == ["user"] and not alice.disabled and not alice.is_admin
        assert root.roles == ["admin", "user"] and root.is_admin
        assert users.any_admin(s)
        assert [u.username for u in users.list_users(s)] == ["alice", "root"]
        assert users.get(s, alice.id) is not None


def test_duplicate_username_is_refused_and_nothing_is_written(db: Database) -> None:
    with db.session() as s:
        users.create_user(s, "alice", PASSWORD)
    with pytest.raises(AppError, match="already exists"), db.session() as s:
        users.create_user(s, "bob", PASSWORD)
        users.create_user(s, "alice", "another password")
    with db.session() as s:
        assert [u.username for u in users.list_users(s)] == ["alice"]  # bob rolled back with the error


@pytest.mark.parametrize(("username", "password", "roles", "message"), [
    ("bob", PASSWORD, ["superuser"], "unknown role"),
    ("bad name", PASSWORD, None, "username"),
    ("", PASSWORD, None, "username"),
    ("bob", "short", None, "at least 8"),
])
def test_invalid_user_is_refused(db: Database, username: str, password: str, roles: list[str] | None,
                                 message: str) -> None:
    with pytest.raises(AppError, match=message), db.session() as s:
        users.create_user(s, username, password, roles)
    with db.session() as s:
        assert users.list_users(s) == []


def test_authenticate_accepts_only_the_right_password_of_an_enabled_user(db: Database) -> None:
    with db.session() as s:
        users.create_user(s, "alice", PASSWORD)
    with db.session() as s:
        user = users.authenticate(s, "alice", PASSWORD)
        assert user is not None and user.username == "alice"
        assert users.authenticate(s, "alice", PASSWORD + "!") is None
        assert users.authenticate(s, "alice", "") is None
        assert users.authenticate(s, "nobody", PASSWORD) is None
        assert users.authenticate(s, "ALICE", PASSWORD) is None


def test_disabled_user_cannot_authenticate(db: Database) -> None:
    with db.session() as s:
        users.create_user(s, "alice", PASSWORD)
    with db.session() as s:
        assert users.set_disabled(s, "alice").disabled
    with db.session() as s:
        alice = users.get_by_username(s, "alice")
        assert alice is not None and alice.disabled
        assert users.authenticate(s, "alice", PASSWORD) is None
    with db.session() as s:
        users.set_disabled(s, "alice", False)
    with db.session() as s:
        assert users.authenticate(s, "alice", PASSWORD) is not None


def test_disabling_an_unknown_user_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound), db.session() as s:
        users.set_disabled(s, "nobody")


def test_hash_with_old_parameters_is_upgraded_on_sign_in(db: Database) -> None:
    old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    assert not old.startswith(ARGON2_PREFIX)
    with db.session() as s:
        user = users.create_user(s, "alice", PASSWORD)
        user.password_hash = old
    with db.session() as s:
        assert users.authenticate(s, "alice", "wrong password") is None
    with db.session() as s:
        assert s.execute(select(User.password_hash)).scalar_one() == old  # a failed sign-in changes nothing
        assert users.authenticate(s, "alice", PASSWORD) is not None
    with db.session() as s:
        upgraded = s.execute(select(User.password_hash)).scalar_one()
        assert upgraded.startswith(ARGON2_PREFIX)
        assert users.authenticate(s, "alice", PASSWORD) is not None


def test_set_password_replaces_the_hash(db: Database) -> None:
    with db.session() as s:
        user = users.create_user(s, "alice", PASSWORD)
        with pytest.raises(AppError):
            users.set_password(s, user, "short")
        users.set_password(s, user, "a brand new password")
    with db.session() as s:
        assert users.authenticate(s, "alice", PASSWORD) is None
        assert users.authenticate(s, "alice", "a brand new password") is not None


# ---- scopes and resources -------------------------------------------------------------------

def test_scopes_are_created_listed_and_required(db: Database) -> None:
    _catalog(db)
    with db.session() as s:
        listed = catalog.list_scopes(s)
        assert [x.name for x in listed] == ["read:calendar", "read:mail", "write:calendar"]
        assert {x.name: x.write for x in listed} == {"read:calendar": False, "read:mail": False,
                                                     "write:calendar": True}
        assert all(x.public for x in listed)
        assert catalog.require_scopes(s, ["read:mail", "read:calendar", "read:mail"]) == ["read:mail",
                                                                                          "read:calendar"]
        with pytest.raises(AppError, match="unknown scope 'nope'"):
            catalog.require_scopes(s, ["read:mail", "nope"])


@pytest.mark.parametrize(("name", "description", "message"), [
    ("read:calendar", "again", "already exists"),
    ("offline_access", "refresh", "invalid scope name"),
    ("has space", "x", "invalid scope name"),
    ("", "x", "invalid scope name"),
    ("fine", "   ", "description"),
])
def test_invalid_scope_is_refused(db: Database, name: str, description: str, message: str) -> None:
    _catalog(db)
    with pytest.raises(AppError, match=message), db.session() as s:
        catalog.create_scope(s, name, description)
    with db.session() as s:
        assert len(catalog.list_scopes(s)) == 3


def test_private_scope_is_kept(db: Database) -> None:
    with db.session() as s:
        catalog.create_scope(s, "admin:all", "Everything", write=True, public=False)
    with db.session() as s:
        (scope,) = catalog.list_scopes(s)
        assert not scope.public and scope.write and scope.description == "Everything"


def test_resource_uri_is_stored_in_canonical_form(db: Database) -> None:
    with db.session() as s:
        catalog.create_scope(s, "read:calendar", "See your calendar")
        created = catalog.create_resource(s, "HTTPS://MCP.Example.COM:8443/Mcp", " Calendar ", ["read:calendar"])
        assert created.uri == "https://mcp.example.com:8443/Mcp"  # the path keeps its case
    with db.session() as s:
        (resource,) = catalog.list_resources(s)
        assert (resource.uri, resource.name, resource.scopes) == ("https://mcp.example.com:8443/Mcp", "Calendar",
                                                                  ["read:calendar"])
        assert catalog.require_resources(s, ["https://MCP.example.com:8443/Mcp"]) == [resource.uri]
        with pytest.raises(AppError, match="already exists"):
            catalog.create_resource(s, "https://mcp.example.com:8443/Mcp", "Again")


def test_loopback_http_resource_is_allowed(db: Database) -> None:
    with db.session() as s:
        assert catalog.create_resource(s, "http://[::1]:3000/mcp", "Local").uri == "http://[::1]:3000/mcp"
        assert catalog.create_resource(s, "http://LOCALHOST:3000", "Local 2").uri == "http://localhost:3000"


@pytest.mark.parametrize(("uri", "scopes", "message"), [
    (RESOURCE, ["read:calendar", "nope"], "unknown scope 'nope'"),
    ("http://mcp.example.com/mcp", [], "must be https"),
    ("https://mcp.example.com/mcp#frag", [], "fragment"),
    ("mcp.example.com/mcp", [], "absolute"),
    ("https://mcp.example.com:99999/mcp", [], "malformed"),
    ("https://[::1/mcp", [], "malformed"),
])
def test_invalid_resource_is_refused(db: Database, uri: str, scopes: list[str], message: str) -> None:
    with db.session() as s:
        catalog.create_scope(s, "read:calendar", "See your calendar")
    with pytest.raises(AppError, match=message), db.session() as s:
        catalog.create_resource(s, uri, "Calendar", scopes)
    with db.session() as s:
        assert catalog.list_resources(s) == []


def test_unknown_resource_is_not_found(db: Database) -> None:
    with db.session() as s:
        assert catalog.get_resource(s, RESOURCE) is None
        with pytest.raises(NotFound):
            catalog.require_resource(s, RESOURCE)


def test_resource_scopes_can_be_replaced_only_with_known_scopes(db: Database) -> None:
    _catalog(db)
    with db.session() as s:
        catalog.set_resource_scopes(s, RESOURCE, ["read:mail"])
    with pytest.raises(AppError), db.session() as s:
        catalog.set_resource_scopes(s, RESOURCE, ["nope"])
    with db.session() as s:
        assert catalog.require_resource(s, RESOURCE).scopes == ["read:mail"]


# ---- clients --------------------------------------------------------------------------------

def test_client_secret_is_stored_only_as_its_sha256(db: Database) -> None:
    _catalog(db)
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name="Desktop", redirect_uris=["https://app.example.com/cb"], scopes=["read:calendar"],
            resources=[RESOURCE]))
        client_id, secret = created.client.client_id, created.client_secret
    assert secret is not None and len(secret) >= 43  # 256 bits, base64url
    with db.session() as s:
        stored = s.execute(text("SELECT secret_hash FROM clients WHERE client_id = :c"),
                           {"c": client_id}).scalar_one()
        everything = " ".join(str(v) for v in s.execute(text("SELECT * FROM clients")).one())
    assert stored != secret
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in everything
    with db.session() as s:
        client = clients.require(s, client_id)
        assert client.token_endpoint_auth_method == "client_secret_basic" and not client.is_public
        assert client.application_type == "web" and client.kind == "static" and client.verified


def test_rotated_secret_replaces_the_old_hash(db: Database) -> None:
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(name="Worker", grant_types=["client_credentials"]))
    with db.session() as s:
        new = clients.rotate_secret(s, created.client.client_id)
    with db.session() as s:
        stored = clients.require(s, created.client.client_id).secret_hash
    assert new != created.client_secret
    assert stored == hashlib.sha256(new.encode()).hexdigest()


def test_public_client_has_no_secret(db: Database) -> None:
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name="CLI", public=True, redirect_uris=["http://127.0.0.1:8765/callback"]))
    assert created.client_secret is None
    with db.session() as s:
        client = clients.require(s, created.client.client_id)
        assert client.secret_hash is None and client.is_public
        assert client.application_type == "native"  # loopback-only redirect URIs
        with pytest.raises(AppError, match="no secret"):
            clients.rotate_secret(s, client.client_id)


@pytest.mark.parametrize("uri", [
    "https://app.example.com/callback",
    "https://app.example.com:8443/cb?x=1",
    "http://127.0.0.1:33418/callback",
    "http://127.0.0.1/callback",
    "http://[::1]:33418/callback",
    "http://localhost:8080/callback",
])
def test_redirect_uri_https_or_loopback_http_is_accepted(db: Database, uri: str) -> None:
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(name="App", public=True, redirect_uris=[uri]))
    with db.session() as s:
        assert clients.require(s, created.client.client_id).redirect_uris == [uri]


@pytest.mark.parametrize(("uri", "message"), [
    ("http://app.example.com/callback", "must be https"),
    ("http://10.0.0.1/callback", "must be https"),
    ("https://app.example.com/callback#frag", "fragment"),
    ("https://app.example.com/callback#", "fragment"),
    ("javascript:alert(1)", "must be https"),
    ("data:text/html,hi", "must be https"),
    ("app.example.com/callback", "must be https"),
    ("https:///callback", "must be https"),
    ("http://127.0.0.1:99999/callback", "malformed"),
    ("http://127.0.0.1:port/callback", "malformed"),
    ("https://app.example.com/call back", "malformed"),
    ("", "malformed"),
])
def test_redirect_uri_is_refused(db: Database, uri: str, message: str) -> None:
    with pytest.raises(AppError, match=message), db.session() as s:
        clients.create_client(s, clients.NewClient(name="App", public=True,
                                                   redirect_uris=["https://ok.example.com/cb", uri]))
    with db.session() as s:
        assert clients.list_clients(s) == []


def test_default_scopes_are_the_read_only_allowed_scopes(db: Database) -> None:
    _catalog(db)
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name="App", public=True, redirect_uris=["http://127.0.0.1/cb"],
            scopes=["write:calendar", "read:calendar", "offline_access", "read:mail"],
            resources=["HTTPS://mcp.example.com/mcp"]))
    with db.session() as s:
        client = clients.require(s, created.client.client_id)
        assert client.scopes == ["write:calendar", "read:calendar", "read:mail"]  # offline_access is no scope
        assert client.default_scopes == ["read:calendar", "read:mail"]
        assert client.resources == [RESOURCE]
        assert client.grant_types == ["authorization_code", "refresh_token"]


def test_explicit_default_scopes_must_be_allowed(db: Database) -> None:
    _catalog(db)
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name="App", public=True, redirect_uris=["http://127.0.0.1/cb"],
            scopes=["read:calendar", "write:calendar"], default_scopes=["write:calendar"]))
        assert created.client.default_scopes == ["write:calendar"]
    with pytest.raises(AppError, match="default scopes"), db.session() as s:
        clients.create_client(s, clients.NewClient(
            name="App", public=True, redirect_uris=["http://127.0.0.1/cb"],
            scopes=["read:calendar"], default_scopes=["read:mail"]))


@pytest.mark.parametrize(("spec", "message"), [
    (clients.NewClient(name="Worker", public=True, grant_types=["client_credentials"]), "client_credentials"),
    (clients.NewClient(name="Worker", auth_method="none", grant_types=["client_credentials"]),
     "client_credentials"),
    (clients.NewClient(name="App", public=True), "redirect"),
    (clients.NewClient(name="  ", public=True, redirect_uris=["http://127.0.0.1/cb"]), "name"),
    (clients.NewClient(name="App", grant_types=["password"], redirect_uris=["http://127.0.0.1/cb"]),
     "unsupported grant type"),
    (clients.NewClient(name="App", grant_types=["implicit"], redirect_uris=["http://127.0.0.1/cb"]),
     "unsupported grant type"),
    (clients.NewClient(name="App", auth_method="magic", redirect_uris=["http://127.0.0.1/cb"]),
     "auth method"),
    (clients.NewClient(name="App", public=True, redirect_uris=["http://127.0.0.1/cb"], scopes=["nope"]),
     "unknown scope 'nope'"),
    (clients.NewClient(name="App", public=True, redirect_uris=["http://127.0.0.1/cb"],
                       resources=["https://other.example.com/mcp"]), "unknown resource"),
])
def test_invalid_client_is_refused(db: Database, spec: clients.NewClient, message: str) -> None:
    _catalog(db)
    with pytest.raises(AppError, match=message), db.session() as s:
        clients.create_client(s, spec)
    with db.session() as s:
        assert clients.list_clients(s) == []


def test_confidential_client_may_use_client_credentials(db: Database) -> None:
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(
            name="Indexer", grant_types=["client_credentials"], can_introspect=True))
    assert created.client_secret
    with db.session() as s:
        client = clients.require(s, created.client.client_id)
        assert client.grant_types == ["client_credentials"] and client.can_introspect


def test_duplicate_client_id_is_refused(db: Database) -> None:
    url_id = "https://app.example.com/oauth/client.json"
    with db.session() as s:
        clients.create_client(s, clients.NewClient(name="A", public=True, client_id=url_id, kind="metadata",
                                                   redirect_uris=["https://app.example.com/cb"]))
    with pytest.raises(AppError, match="already exists"), db.session() as s:
        clients.create_client(s, clients.NewClient(name="B", public=True, client_id=url_id,
                                                   redirect_uris=["https://app.example.com/cb"]))
    with db.session() as s:
        (client,) = clients.list_clients(s)
        assert client.name == "A" and client.kind == "metadata"


def test_client_is_deleted_and_unknown_delete_is_not_found(db: Database) -> None:
    with db.session() as s:
        ids = [clients.create_client(s, clients.NewClient(
            name=n, public=True, redirect_uris=["http://127.0.0.1/cb"])).client.client_id for n in ("A", "B")]
    assert len(set(ids)) == 2
    with db.session() as s:
        clients.delete_client(s, ids[0])
    with db.session() as s:
        assert [c.client_id for c in clients.list_clients(s)] == [ids[1]]
        assert clients.get(s, ids[0]) is None
        with pytest.raises(NotFound):
            clients.require(s, ids[0])
    with pytest.raises(NotFound), db.session() as s:
        clients.delete_client(s, ids[0])


def test_allowed_is_a_subset_check() -> None:
    assert clients.allowed(["a"], ["a", "b"])
    assert clients.allowed([], [])
    assert not clients.allowed(["a", "c"], ["a", "b"])


# ---- audit ----------------------------------------------------------------------------------

def test_audit_events_are_recorded_and_listed_newest_first(db: Database) -> None:
    with db.session() as s:
        record(s, "user.created", actor="cli", username="alice", roles=["user"])
        record(s, "client.created", actor="admin", client_id="abc", ip="192.0.2.1", name="Desktop")
        record(s, "user.created", actor="cli", username="bob", roles=["admin"])
    with db.session() as s:
        events = recent(s)
        assert [e.event for e in events] == ["user.created", "client.created", "user.created"]
        assert events[0].detail == {"username": "bob", "roles": ["admin"]}
        assert (events[1].actor, events[1].client_id, events[1].ip) == ("admin", "abc", "192.0.2.1")
        assert [e.detail["username"] for e in recent(s, event="user.created")] == ["bob", "alice"]
        assert [e.event for e in recent(s, limit=1)] == ["user.created"]
        assert recent(s, event="nothing") == []
        assert events[0].id > events[1].id > events[2].id


def test_audit_event_is_rolled_back_with_its_change(db: Database) -> None:
    with pytest.raises(AppError), db.session() as s:
        record(s, "user.created", actor="cli", username="x")
        users.create_user(s, "x", "short")
    with db.session() as s:
        assert recent(s) == []


# ---- time -----------------------------------------------------------------------------------

def test_datetimes_come_back_timezone_aware_utc(db: Database) -> None:
    before = datetime.now(UTC)
    india = timezone(timedelta(hours=5, minutes=30))
    moment = datetime(2026, 3, 1, 17, 30, 15, 123456, tzinfo=india)
    with db.session() as s:
        users.create_user(s, "alice", PASSWORD)
        s.add(AuditEvent(event="test", at=moment, detail={}))
    with db.session() as s:
        if not db.is_sqlite:  # PostgreSQL answers in the session's zone; it must still come back as UTC
            s.execute(text("SET TIME ZONE 'America/Los_Angeles'"))
        user = users.get_by_username(s, "alice")
        assert user is not None
        stored_at = s.scalar(select(AuditEvent.at).where(AuditEvent.event == "test"))
    assert stored_at is not None
    for value in (user.created_at, user.updated_at, stored_at):
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
    assert stored_at == moment and stored_at.hour == 12 and stored_at.minute == 0
    assert before - timedelta(seconds=5) <= user.created_at <= datetime.now(UTC) + timedelta(seconds=5)


def test_datetimes_compare_in_sql_by_instant(db: Database) -> None:
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    with db.session() as s:
        s.add(AuditEvent(event="early", at=base, detail={}))
        s.add(AuditEvent(event="late", at=base + timedelta(hours=2), detail={}))
    plus_three = timezone(timedelta(hours=3))
    with db.session() as s:
        # 14:00+03:00 is 11:00 UTC, before both; 16:00+03:00 is 13:00 UTC, between them.
        after = s.scalars(select(AuditEvent.event).where(AuditEvent.at > datetime(2026, 1, 1, 14, 0,
                                                                                  tzinfo=plus_three)))
        assert sorted(after) == ["early", "late"]
        after = s.scalars(select(AuditEvent.event).where(AuditEvent.at > datetime(2026, 1, 1, 16, 0,
                                                                                  tzinfo=plus_three)))
        assert sorted(after) == ["late"]


def test_naive_datetime_is_refused(db: Database) -> None:
    with pytest.raises(StatementError, match="naive"), db.session() as s:
        s.add(AuditEvent(event="test", at=datetime(2026, 1, 1, 12, 0), detail={}))
        s.flush()


def test_client_timestamps_are_set(db: Database) -> None:
    with db.session() as s:
        created = clients.create_client(s, clients.NewClient(name="A", public=True,
                                                             redirect_uris=["http://127.0.0.1/cb"]))
    with db.session() as s:
        client = s.get(Client, created.client.client_id)
        assert client is not None and client.expires_at is None
        assert client.created_at.utcoffset() == timedelta(0)
