"""Scale-out, proven: three real ``authserver serve`` processes on one PostgreSQL database, driven
round-robin with real HTTP, as a load balancer would spread one person's requests.

* a flow crosses nodes: the sign-in and consent pages (their HTML forms, CSRF included) on one
  node, the code redeemed on a second, the refresh token rotated on a third; every node verifies
  what every other issued; and a browser whose every request lands on the next node (no sticky
  sessions) signs in and consents all the same;
* a revocation on one node is seen by every node within the stated bound (the verdict cache,
  ``AUTHSERVER_CACHE_SECONDS``, default 1 s), polled against a deadline;
* the same refresh token sent to three nodes at once continues one family only (the race grace
  window hands every racer that same successor), and nothing answers 5xx;
* the same code sent to three nodes at once is redeemed once: the others get ``invalid_grant``,
  one token is issued, and the replay revokes it (RFC 6749 §4.1.2), on every node;
* a key rotated with ``authserver keys rotate`` (another process) is signed with by every node
  within the key ring's period (5 s), and at every moment a token signed by any node is
  accepted by every other (an unknown ``kid`` re-reads the keys at once).

Starting three processes costs seconds on a small machine, so one trio serves the module; the
tests keep apart by the grants they make. The database is created for the module and dropped
after it. ``xdist_group`` is meant to keep the module on one xdist worker (``make test`` runs
``--dist loadgroup``), so the three servers start once. With pytest 9.2 and pytest-xdist 3.8 as
pinned, loadgroup does not group (pytest-xdist issue 1386: it renames node ids through a field
pytest 9.2 no longer reads), so each worker that draws a test of this module starts its own trio
on its own database: slower by one start-up, never wrong.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select

from authserver.clients import repository as clients
from authserver.db import Database
from authserver.keys.ring import MISS_RELOAD_SECONDS, REFRESH_SECONDS
from authserver.settings import Settings
from authserver.tokens.models import RefreshToken
from tests.conftest import ISSUER, TEST_SECRET, pg_database
from tests.live import at_once, wait_healthy
from tests.oauth_helpers import RESOURCE, authorize_params, pkce_pair, query, run_flow, seed

pytestmark = pytest.mark.xdist_group("scale-out")

NODES = 3
# The bounds the README states, from the code, not restated here.
CACHE_SECONDS = float(Settings.model_fields["cache_seconds"].default)
KEY_SECONDS = REFRESH_SECONDS
# What a loaded two-core machine may add to a bound: request latency and polling.
SLACK = 1.5


@dataclass
class Cluster:
    urls: list[str]
    db: Database
    env: dict[str, str]
    public_id: str
    introspector: tuple[str, str]  # a resource server's client_id and secret (introspect, client_credentials)

    def node(self, n: int) -> str:
        return self.urls[n % len(self.urls)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    template = request.getfixturevalue("_pg_template")
    if template is None:
        pytest.skip("PostgreSQL is not reachable")
    with pg_database("authserver_scale", template) as url:
        db = Database(url)
        world = seed(db)
        with db.session() as s:
            made = clients.create_client(s, clients.NewClient(
                name="Calendar MCP server", grant_types=["client_credentials"], scopes=["read:calendar"],
                resources=[RESOURCE], can_introspect=True))
        introspector = (made.client.client_id, made.client_secret or "")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
        env.update(AUTHSERVER_DATABASE_URL=url, AUTHSERVER_ISSUER=ISSUER, AUTHSERVER_SECRET_KEY=TEST_SECRET,
                   AUTHSERVER_LOG_LEVEL="warning")
        logs = tmp_path_factory.mktemp("scale-out")
        ports = [free_port() for _ in range(NODES)]
        procs = [subprocess.Popen([sys.executable, "-m", "authserver.cli", "serve", "--port", str(port)], env=env,
                                  cwd=logs, stdout=subprocess.DEVNULL, stderr=(logs / f"{port}.log").open("wb"))
                 for port in ports]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        try:
            for node, proc in zip(urls, procs, strict=True):
                wait_healthy(node, lambda proc=proc: proc.poll() is None)
            yield Cluster(urls, db, env, world.public_id, introspector)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            db.dispose()


# ---- the requests, each on a node named by the caller ---------------------------------------

def authorize(cluster: Cluster, node: str) -> tuple[str, str]:
    """Sign in and consent through the real pages of ``node``, in a fresh browser: (code, verifier)."""
    verifier, challenge = pkce_pair()
    with httpx.Client(base_url=node, follow_redirects=False) as browser:
        location = run_flow(browser, authorize_params(cluster.public_id, challenge,  # type: ignore[arg-type]
                                                      scope="read:calendar offline_access"))
    answer = query(location)
    assert answer["iss"] == ISSUER and answer["state"] == "xyz-state", answer
    return answer["code"], verifier


def round_robin_browser(cluster: Cluster) -> tuple[httpx.Client, list[int]]:
    """A browser behind a load balancer without sticky sessions: each request goes to the next
    node (its port rewritten); cookies are per host, so they follow it. The ports it used, in order."""
    ports = [int(url.rsplit(":", 1)[1]) for url in cluster.urls]
    used: list[int] = []

    def next_node(request: httpx.Request) -> None:
        port = ports[len(used) % len(ports)]
        used.append(port)
        request.url = request.url.copy_with(port=port)
        request.headers["host"] = f"127.0.0.1:{port}"

    return httpx.Client(base_url=cluster.urls[0], follow_redirects=False,
                        event_hooks={"request": [next_node]}), used


def redeem(cluster: Cluster, node: str, code: str, verifier: str) -> httpx.Response:
    return httpx.post(f"{node}/token", data={"grant_type": "authorization_code", "code": code,
                                             "code_verifier": verifier, "redirect_uri": authorize_params("", "")[
                                                 "redirect_uri"], "client_id": cluster.public_id})


def refresh(cluster: Cluster, node: str, token: str) -> httpx.Response:
    return httpx.post(f"{node}/token", data={"grant_type": "refresh_token", "refresh_token": token,
                                             "client_id": cluster.public_id})


def revoke(cluster: Cluster, node: str, token: str) -> httpx.Response:
    return httpx.post(f"{node}/revoke", data={"token": token, "client_id": cluster.public_id})


def introspect(cluster: Cluster, node: str, token: str) -> dict[str, Any]:
    response = httpx.post(f"{node}/introspect", data={"token": token}, auth=cluster.introspector)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def machine_token(cluster: Cluster, node: str) -> str:
    response = httpx.post(f"{node}/token", data={"grant_type": "client_credentials", "scope": "read:calendar",
                                                 "resource": RESOURCE}, auth=cluster.introspector)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def tokens_across(cluster: Cluster, first: int = 0) -> dict[str, Any]:
    """Authorize on one node, redeem on the next; the token response."""
    code, verifier = authorize(cluster, cluster.node(first))
    response = redeem(cluster, cluster.node(first + 1), code, verifier)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def within(seconds: float, what: str, done: Callable[[], bool]) -> float:
    """Poll ``done()`` (never a blind sleep) until true; fail past ``seconds``. The time it took."""
    start = time.monotonic()
    while not done():
        assert time.monotonic() - start < seconds, f"not within {seconds} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def family_rows(cluster: Cluster) -> int:
    with cluster.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(RefreshToken)) or 0)


# ---- the tests ------------------------------------------------------------------------------

def test_authorize_on_one_node_token_on_another_refresh_on_a_third(cluster: Cluster) -> None:
    tokens = tokens_across(cluster, first=0)  # pages on node 1, code redeemed on node 2
    assert "refresh_token" in tokens
    rotated = refresh(cluster, cluster.node(2), tokens["refresh_token"])  # node 3
    assert rotated.status_code == 200, rotated.text
    successor = rotated.json()
    assert successor["refresh_token"] != tokens["refresh_token"]
    for n in range(NODES):  # every node knows what the others issued
        for token in (tokens["access_token"], successor["access_token"]):
            answer = introspect(cluster, cluster.node(n), token)
            assert answer["active"] is True and answer["client_id"] == cluster.public_id, answer
    # Each node publishes the key the tokens were signed with, and the successor refreshes anywhere.
    for n in range(NODES):
        kids = {k["kid"] for k in httpx.get(f"{cluster.node(n)}/jwks.json").json()["keys"]}
        assert kid_of(successor["access_token"]) in kids
    assert refresh(cluster, cluster.node(0), successor["refresh_token"]).status_code == 200


def test_a_browser_whose_every_request_lands_on_another_node_signs_in_and_consents(cluster: Cluster) -> None:
    """No sticky sessions needed: the pending request, the sign-in session and the CSRF tokens of
    the pages are valid on every node."""
    verifier, challenge = pkce_pair()
    browser, used = round_robin_browser(cluster)
    with browser:
        location = run_flow(browser, authorize_params(cluster.public_id, challenge,  # type: ignore[arg-type]
                                                      scope="read:calendar offline_access"))
    assert len(used) >= 4 and set(used) == {int(url.rsplit(":", 1)[1]) for url in cluster.urls}
    assert all(a != b for a, b in itertools.pairwise(used))  # never twice in a row on one node
    answer = query(location)
    assert answer["iss"] == ISSUER
    response = redeem(cluster, cluster.node(len(used)), answer["code"], verifier)
    assert response.status_code == 200, response.text


def test_a_revocation_on_one_node_holds_on_every_node_within_the_cache_bound(cluster: Cluster) -> None:
    tokens = tokens_across(cluster, first=1)
    access = tokens["access_token"]
    for n in range(NODES):  # every node has the verdict "active" cached now
        assert introspect(cluster, cluster.node(n), access)["active"] is True
    revoked = revoke(cluster, cluster.node(0), access)
    assert revoked.status_code == 200, revoked.text
    # The node that revoked emptied its caches in the same commit.
    assert introspect(cluster, cluster.node(0), access)["active"] is False
    for n in (1, 2):
        took = within(CACHE_SECONDS + SLACK, f"node {n + 1} sees the revocation",
                      lambda n=n: introspect(cluster, cluster.node(n), access)["active"] is False)
        assert took <= CACHE_SECONDS + SLACK
    # A refresh token revoked on one node is dead on the others at once (no cache in front of it).
    assert revoke(cluster, cluster.node(1), tokens["refresh_token"]).status_code == 200
    for n in (2, 0):
        answer = refresh(cluster, cluster.node(n), tokens["refresh_token"])
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant", answer.text


def test_one_refresh_token_sent_to_three_nodes_at_once_continues_one_family(cluster: Cluster) -> None:
    tokens = tokens_across(cluster, first=2)
    for _ in range(3):  # several rounds: chances for the race to go wrong
        before = family_rows(cluster)
        answers = at_once([lambda n=n: refresh(cluster, cluster.node(n), tokens["refresh_token"])
                           for n in range(NODES)])
        assert [a.status_code for a in answers] == [200] * NODES, [a.text for a in answers]
        bodies = [a.json() for a in answers]
        # The racers within the grace window get the one successor, not one each.
        assert all(b == bodies[0] for b in bodies), "racing nodes handed out different successors"
        assert family_rows(cluster) == before + 1
        tokens = bodies[0]
    for n in range(NODES):
        assert introspect(cluster, cluster.node(n), tokens["access_token"])["active"] is True
    assert refresh(cluster, cluster.node(1), tokens["refresh_token"]).status_code == 200  # the family goes on


def test_one_code_sent_to_three_nodes_at_once_is_redeemed_once(cluster: Cluster) -> None:
    code, verifier = authorize(cluster, cluster.node(0))
    before = family_rows(cluster)
    answers = at_once([lambda n=n: redeem(cluster, cluster.node(n), code, verifier) for n in range(NODES)])
    assert sorted(a.status_code for a in answers) == [200] + [400] * (NODES - 1), [a.text for a in answers]
    assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code == 400)
    (won,) = [a.json() for a in answers if a.status_code == 200]
    assert family_rows(cluster) == before + 1  # one refresh token issued, not one per node
    # The losing attempts were replays of a used code: what it issued is revoked, everywhere.
    for n in range(NODES):
        answer = refresh(cluster, cluster.node(n), won["refresh_token"])
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
        within(CACHE_SECONDS + SLACK, f"node {n + 1} refuses the access token",
               lambda n=n: introspect(cluster, cluster.node(n), won["access_token"])["active"] is False)


def test_a_key_rotated_with_the_cli_is_used_and_accepted_by_every_node_within_the_bound(cluster: Cluster) -> None:
    old = {kid_of(machine_token(cluster, node)) for node in cluster.urls}
    assert len(old) == 1
    rotated = subprocess.run([sys.executable, "-m", "authserver.cli", "--json", "keys", "rotate"], env=cluster.env,
                             capture_output=True, text=True, timeout=60, check=True)
    new_kid = json.loads(rotated.stdout)["kid"]
    assert new_kid not in old
    signing: dict[int, str] = {}

    def every_node_signs_with_the_new_key() -> bool:
        # Each round: a token from every node, checked by the next node at once. While some nodes
        # still sign with the old key and others with the new one, each must accept both.
        for n in range(NODES):
            token = machine_token(cluster, cluster.node(n))
            signing[n] = kid_of(token)
            assert signing[n] in old | {new_kid}
            answer = introspect(cluster, cluster.node(n + 1), token)
            assert answer["active"] is True, (n, signing, answer)
        return all(kid == new_kid for kid in signing.values())

    # The nodes re-read every KEY_SECONDS; the first request after that may be the one that waits.
    within(KEY_SECONDS + MISS_RELOAD_SECONDS + SLACK, "every node signs with the rotated key",
           every_node_signs_with_the_new_key)
    for node in cluster.urls:
        kids = [k["kid"] for k in httpx.get(f"{node}/jwks.json").json()["keys"]]
        assert kids[0] == new_kid and set(old) <= set(kids)  # the old key stays published
