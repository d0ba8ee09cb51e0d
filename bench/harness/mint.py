"""Mint never-used refresh tokens for the refresh scenario, with the server's own domain code.

    AUTHSERVER_DATABASE_URL=... AUTHSERVER_SECRET_KEY=... AUTHSERVER_ISSUER=... \\
    python bench/harness/mint.py --client-id ID --username NAME --resource URI --scope S --count N --out FILE

Each token starts its own family through ``tokens.issue.token_response`` (with its access token
signed by the current key), as a code exchange with "Stay connected" would, so the server's
refresh path sees ordinary rows. Run by bench/bench.py before the server starts, in a subprocess
with the server's settings, so the benchmark process itself never loads the application.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from authserver.clients import repository as clients
from authserver.db import Database, utcnow
from authserver.services import build_services
from authserver.settings import load_settings
from authserver.tokens.issue import token_response
from authserver.users import repository as users

BATCH = 1000  # flushed in batches: one transaction, bounded memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    for name in ("--client-id", "--username", "--resource", "--scope", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()

    settings = load_settings()
    db = Database(settings.database_url)
    services = build_services(settings, db)
    tokens: list[str] = []
    try:
        # Load the signing key now: loading it first inside the write transaction below would wait
        # for that very transaction on SQLite (its own BEGIN IMMEDIATE).
        services.keys.snapshot()
        with db.session() as session:
            client = clients.require(session, args.client_id)
            user = users.get_by_username(session, args.username)
            if user is None:
                raise SystemExit(f"no user {args.username!r}")
            now = utcnow()
            for i in range(args.count):
                issued = token_response(session, services, client=client, subject=str(user.id), user_id=user.id,
                                        resource=args.resource, scopes=[args.scope], auth_time=now, now=now,
                                        stay_connected=True)
                tokens.append(issued.body["refresh_token"])
                if i % BATCH == BATCH - 1:
                    session.flush()
                    session.expunge_all()
                    client = clients.require(session, args.client_id)
    finally:
        db.dispose()
    Path(args.out).write_text("\n".join(tokens) + "\n")


if __name__ == "__main__":
    main()
