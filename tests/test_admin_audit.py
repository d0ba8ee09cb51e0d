"""The console's audit log and dashboard: each filter narrows, pages go by id, the export matches the page."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from authserver.audit.models import AuditEvent
from authserver.db import Database, utcnow
from tests.admin_pages import browser, make_user
from tests.oauth_helpers import World, authorize_params, exchange, pkce_pair, query, run_flow, seed, user_id


@pytest.fixture
def world(db: Database) -> World:
    world = seed(db)
    make_user(db, "root", "admin")
    now = utcnow()
    alice, bob = user_id(db, "alice"), user_id(db, "bob")
    with db.session() as s:
        s.add_all([
            AuditEvent(event="login.failed", outcome="failure", ip="10.0.0.9", at=now - timedelta(hours=2),
                       detail={"username": "mallory"}),
            AuditEvent(event="token.issued", actor=alice, client_id=world.public_id, at=now - timedelta(minutes=30),
                       detail={"grant_type": "authorization_code"}),
            AuditEvent(event="client.created", actor="cli", client_id=world.confidential_id,
                       at=now - timedelta(days=3)),
            AuditEvent(event="token.refreshed", actor=bob, client_id=world.confidential_id,
                       at=now - timedelta(days=10)),
            AuditEvent(event="token.refreshed", actor=bob, client_id=world.confidential_id,
                       at=now - timedelta(hours=23)),
        ])
    return world


@pytest.fixture
def admin(app: FastAPI, world: World):  # type: ignore[no-untyped-def]
    with browser(app, "root") as b:
        yield b


def shown(admin: TestClient, **params: str) -> list[str]:
    """The event column of the audit page, top to bottom."""
    page = admin.get("/admin/audit", params=params)
    assert page.status_code == 200, page.text
    return re.findall(r'<td class="event"><code>([a-z_.]+)</code></td>', page.text)


def exported(admin: TestClient, **params: str) -> list[dict[str, object]]:
    response = admin.get("/admin/audit/export", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["content-disposition"].startswith('attachment; filename="audit-')
    lines = response.text.splitlines()
    assert response.text.endswith("\n") or not lines
    return [json.loads(line) for line in lines]


def test_each_filter_narrows(admin: TestClient, db: Database, world: World) -> None:
    everything = shown(admin)
    assert everything[0] == "login.succeeded"  # root's sign-in, newest first
    assert sorted(everything) == sorted(["login.succeeded", "login.failed", "token.issued", "client.created",
                                         "token.refreshed", "token.refreshed"])
    assert shown(admin, user="alice") == ["token.issued"]
    assert shown(admin, user=user_id(db, "alice")) == ["token.issued"]  # a raw actor (a user id) works too
    assert shown(admin, user="cli") == ["client.created"]
    assert shown(admin, user="nobody") == []
    # newest first means by id (the order events were written), whatever their clocks said
    assert shown(admin, client_id=world.confidential_id) == ["token.refreshed", "token.refreshed", "client.created"]
    assert shown(admin, event="token.refreshed") == ["token.refreshed", "token.refreshed"]
    assert shown(admin, outcome="failure") == ["login.failed"]
    assert shown(admin, since="1h") == ["login.succeeded", "token.issued"]
    assert shown(admin, since="24h", event="token.refreshed") == ["token.refreshed"]
    assert sorted(shown(admin, since="7d")) == sorted(["login.succeeded", "login.failed", "token.issued",
                                                       "client.created", "token.refreshed"])
    ten_days_ago = (utcnow() - timedelta(days=10)).date().isoformat()
    assert shown(admin, **{"from": ten_days_ago, "to": ten_days_ago}) == ["token.refreshed"]
    assert shown(admin, client_id=world.confidential_id, user="bob", since="7d") == ["token.refreshed"]


def test_page_names_actors_and_offers_the_known_event_types(admin: TestClient, world: World) -> None:
    page = admin.get("/admin/audit", params={"user": "alice"}).text
    row = re.search(r"<code>token.issued</code></td>(.*?)</tr>", page, re.S)
    assert row and "<td>alice</td>" in row.group(1)
    assert f"<code>{world.public_id}</code>" in row.group(1)
    assert '<option value="client.created">' in page and '<option value="token.refreshed">' in page
    assert 'value="alice"' in page  # the filter shows what was typed


def test_unreadable_date_is_shown_next_to_its_field(admin: TestClient) -> None:
    page = admin.get("/admin/audit", params={"from": "yesterday"})
    assert page.status_code == 400
    assert 'id="error-from"' in page.text and 'value="yesterday"' in page.text
    assert admin.get("/admin/audit/export", params={"since": "1y"}).status_code == 400


def test_pages_go_by_id_and_keep_the_filters(admin: TestClient, db: Database) -> None:
    with db.session() as s:
        s.add_all([AuditEvent(event="test.bulk", detail={"n": n}) for n in range(60)])
    first = admin.get("/admin/audit", params={"event": "test.bulk"}).text
    assert first.count('<td class="event"><code>test.bulk</code></td>') == 50
    older = re.search(r'href="(/admin/audit\?[^"]+)" rel="next">Older', first)
    assert older
    link = older.group(1).replace("&amp;", "&")
    assert query(link)["event"] == "test.bulk"
    second = admin.get(link).text
    assert second.count('<td class="event"><code>test.bulk</code></td>') == 10 and 'rel="next"' not in second
    assert '{"n":9}' in second.replace("&#34;", '"') and '{"n":10}' not in second.replace("&#34;", '"')


def test_export_is_json_lines_matching_the_filter(admin: TestClient, db: Database, world: World) -> None:
    rows = exported(admin, client_id=world.confidential_id)
    assert [r["event"] for r in rows] == ["token.refreshed", "token.refreshed", "client.created"]
    assert all(r["client_id"] == world.confidential_id for r in rows)
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)  # type: ignore[type-var]
    assert set(rows[0]) == {"id", "at", "event", "outcome", "actor", "client_id", "ip", "detail"}
    failed = exported(admin, outcome="failure")
    assert [(r["event"], r["ip"], r["detail"]) for r in failed] == [
        ("login.failed", "10.0.0.9", {"username": "mallory"})]
    assert exported(admin, user="nobody") == []
    assert [r["event"] for r in exported(admin)] == shown(admin)  # viewing the log is no event


def test_export_streams_past_one_batch(admin: TestClient, db: Database) -> None:
    with db.session() as s:
        s.add_all([AuditEvent(event="test.bulk", detail={"n": n}) for n in range(1205)])
    rows = exported(admin, event="test.bulk")
    assert len(rows) == 1205 and len({r["id"] for r in rows}) == 1205


def test_dashboard_counts_and_recent_events(app: FastAPI, admin: TestClient, db: Database, world: World,
                                            client: TestClient) -> None:
    verifier, challenge = pkce_pair()
    code = query(run_flow(client, authorize_params(world.public_id, challenge)))["code"]
    assert "refresh_token" in exchange(client, code, verifier, world.public_id).json()
    with db.session() as s:
        s.add(AuditEvent(event="login.failed", outcome="failure", at=utcnow() - timedelta(days=2)))  # too old
        s.add_all([AuditEvent(event="test.bulk") for _ in range(25)])
    page = admin.get("/admin")
    assert page.status_code == 200
    counts = dict((label.strip(), int(n)) for n, label in re.findall(
        r"<li><strong>(\d+)</strong>\s*(?:<a [^>]*>)?([^<]+)", page.text))
    assert counts["pre-registered clients"] == 2
    assert counts["dynamically registered clients"] == 0
    assert counts["active grants"] == 1
    # the seeded token.issued (30 min) and token.refreshed (23 h), and the flow's own token.issued
    assert counts["tokens issued"] == 3
    assert counts["failed sign-ins"] == 1  # the seeded one; not the 2-day-old one
    assert page.text.count('<td class="event">') == 20  # the latest 20 only
    assert set(re.findall(r'<td class="event"><code>([a-z_.]+)</code>', page.text)) == {"test.bulk"}


def test_out_of_range_cursors_are_the_first_page(admin: TestClient) -> None:
    assert shown(admin, before=str(10**30)) == shown(admin)
    assert admin.get("/admin/clients", params={"page": str(10**30)}).status_code == 200
