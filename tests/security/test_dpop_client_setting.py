"""``dpop_bound_access_tokens`` (RFC 9449 §5.2) as operators set it: the console's client form and the CLI.

Both databases; the console through the real pages (CSRF included), the CLI as a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from html import unescape
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from authserver.db import Database
from tests.admin_pages import browser, csrf, make_user
from tests.conftest import TEST_SECRET
from tests.oauth_helpers import REDIRECT, RESOURCE, World, seed, sql
from tests.security.dpop_helpers import DPoPKey


@pytest.fixture
def world(db: Database) -> World:
    world = seed(db)
    make_user(db, "root", "admin")
    return world


@pytest.fixture
def admin(app: FastAPI, world: World) -> Iterator[TestClient]:
    with browser(app, "root") as b:
        yield b


def edit_url(client_id: str) -> str:
    return f"/admin/clients/edit?{urlencode({'client_id': client_id})}"


def machine_form(**extra: object) -> dict[str, object]:
    return {"name": "Machine", "redirect_uris": "", "grant_type": ["client_credentials"],
            "auth_method": "client_secret_basic", "scope": ["read:calendar"], "resource": [RESOURCE], **extra}


def stored(db: Database, client_id: str) -> bool:
    ((value,),) = sql(db, "SELECT dpop_bound_access_tokens FROM clients WHERE client_id = :c", c=client_id)
    return bool(value)


def test_console_form_turns_dpop_bound_access_tokens_on_and_off(db: Database, world: World,
                                                                admin: TestClient, client: TestClient) -> None:
    form = {"name": "Web Agent", "redirect_uris": REDIRECT, "grant_type": ["authorization_code", "refresh_token"],
            "auth_method": "client_secret_basic", "scope": ["read:calendar"], "resource": [RESOURCE]}
    page = admin.get(edit_url(world.confidential_id))
    assert 'name="dpop_bound_access_tokens"' in page.text and "dpop_bound_access_tokens\" checked" not in page.text
    on = admin.post(edit_url(world.confidential_id), data={"csrf": csrf(admin, edit_url(world.confidential_id)),
                                                           **form, "dpop_bound_access_tokens": "on"})
    assert on.status_code == 303, on.text
    assert stored(db, world.confidential_id)
    assert 'name="dpop_bound_access_tokens" checked' in admin.get(edit_url(world.confidential_id)).text
    off = admin.post(edit_url(world.confidential_id), data={"csrf": csrf(admin, edit_url(world.confidential_id)),
                                                            **form})
    assert off.status_code == 303
    assert not stored(db, world.confidential_id)


def test_console_created_dpop_bound_client_is_refused_without_a_proof(db: Database, admin: TestClient,
                                                                      client: TestClient) -> None:
    response = admin.post("/admin/clients", data={"csrf": csrf(admin, "/admin/clients/new"),
                                                  **machine_form(dpop_bound_access_tokens="on")})
    assert response.status_code == 200, response.text  # the page that shows the secret once
    ((client_id,),) = sql(db, "SELECT client_id FROM clients WHERE name = 'Machine'")
    assert stored(db, client_id)
    shown = re.search(r'<p class="secret" id="client-secret">([^<]+)</p>', response.text)
    assert shown, response.text
    secret = unescape(shown.group(1))
    data = {"grant_type": "client_credentials", "resource": RESOURCE}
    plain = client.post("/token", data=data, auth=(client_id, secret))
    assert plain.status_code == 400 and plain.json()["error"] == "invalid_request"
    bound = client.post("/token", data=data, auth=(client_id, secret), headers={"DPoP": DPoPKey().proof()})
    assert bound.status_code == 200 and bound.json()["token_type"] == "DPoP"


def cli(db_url: str, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env.update({"AUTHSERVER_DATABASE_URL": db_url, "AUTHSERVER_SECRET_KEY": TEST_SECRET,
                "AUTHSERVER_ISSUER": "http://127.0.0.1:8000"})
    result = subprocess.run([sys.executable, "-m", "authserver.cli", *args, "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_creates_and_changes_dpop_bound_clients(db_url: str, db: Database, world: World) -> None:
    created = cli(db_url, "clients", "create", "--name", "Agent", "--public", "--redirect-uri", REDIRECT,
                  "--dpop-bound-access-tokens")
    client_id = str(created["client_id"])
    assert stored(db, client_id)
    assert cli(db_url, "clients", "dpop", client_id, "off") == {"client_id": client_id,
                                                                "dpop_bound_access_tokens": False}
    assert not stored(db, client_id)
    cli(db_url, "clients", "dpop", client_id, "on")
    assert stored(db, client_id)
    rows = cli(db_url, "clients", "list")
    assert [r["dpop_bound_access_tokens"] for r in rows if r["client_id"] == client_id] == [True]
