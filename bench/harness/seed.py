"""Seeding the throw-away database: through the CLI like an operator, plus minted refresh tokens.

Refresh tokens are single-use (a second use revokes the family), and signing in thousands of times
to get them would take longer than the scenario itself, so ``mint_refresh_tokens`` runs
``harness/mint.py`` as a setup step: it issues them with the server's own domain code
(``tokens.issue.token_response``), each the start of its own family, exactly as a code exchange would.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.server import cli

RESOURCE = "https://bench.invalid/mcp"  # an identifier only, never contacted (.invalid, RFC 6761)
SCOPE = "bench.read"
REDIRECT_URI = "http://127.0.0.1/callback"  # a loopback redirect (RFC 8252): never followed by the driver
USERNAME = "bench-user"
MINT = Path(__file__).with_name("mint.py")


@dataclass(frozen=True)
class Seeded:
    m2m_id: str      # confidential: client_credentials, and may introspect tokens of RESOURCE
    m2m_secret: str
    app_id: str      # public, PKCE, loopback redirect: authorization_code + refresh_token
    username: str
    password: str


def seed(env: dict[str, str], cwd: Path) -> Seeded:
    cli(env, cwd, "db", "upgrade")
    cli(env, cwd, "scopes", "create", SCOPE, "--description", "Benchmark read access")
    cli(env, cwd, "resources", "create", RESOURCE, "--name", "Benchmark resource", "--scope", SCOPE)
    m2m = cli(env, cwd, "clients", "create", "--name", "bench machine client", "--grant-type", "client_credentials",
              "--scope", SCOPE, "--resource", RESOURCE, "--introspect")
    app = cli(env, cwd, "clients", "create", "--name", "bench app", "--public", "--redirect-uri", REDIRECT_URI,
              "--scope", SCOPE, "--resource", RESOURCE)
    password = secrets.token_urlsafe(18)
    cli(env, cwd, "users", "create", USERNAME, "--password-stdin", stdin=password + "\n")
    return Seeded(m2m["client_id"], m2m["client_secret"], app["client_id"], USERNAME, password)


def mint_refresh_tokens(env: dict[str, str], cwd: Path, seeded: Seeded, count: int, out: Path) -> None:
    """Write ``count`` fresh refresh tokens of the public app for the bench user to ``out``, one a line."""
    done = subprocess.run(  # noqa: S603 (our interpreter, our script, fixed arguments)
        # --name=value: a client_id may begin with "-"
        [sys.executable, str(MINT), f"--client-id={seeded.app_id}", f"--username={seeded.username}",
         f"--resource={RESOURCE}", f"--scope={SCOPE}", f"--count={count}", f"--out={out}"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"minting refresh tokens failed: {done.stderr.strip()[-2000:]}")
