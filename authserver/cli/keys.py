"""``authserver keys …``: token signing keys."""

from __future__ import annotations

import argparse
from typing import Any

from authserver.audit.log import record
from authserver.cli.base import CLI_ACTOR, Commands, Context
from authserver.keys.models import SigningKey
from authserver.keys.ring import published_keys
from authserver.services import build_services


def _key_row(key: SigningKey) -> dict[str, Any]:
    return {"kid": key.kid, "alg": key.alg, "created_at": key.created_at.isoformat(),
            "status": "current" if key.retired_at is None else "retired",
            "published_until": key.publish_until.isoformat() if key.publish_until else None}


def cmd_keys_rotate(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    services = build_services(ctx.settings, ctx.db)
    kid = services.keys.rotate()
    with ctx.db.session() as session:
        record(session, "key.rotated", actor=CLI_ACTOR, kid=kid)
    ctx.out.emit({"kid": kid}, f"new signing key {kid}; previous keys stay published for verification")


def cmd_keys_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.require_schema()
    with ctx.db.session() as session:
        rows = [_key_row(k) for k in published_keys(session)]
    ctx.out.table(rows, ["kid", "alg", "status", "created_at", "published_until"])


def register(commands: Commands) -> None:
    ks = commands.group("keys", "token signing keys")
    commands.command(ks, "rotate", cmd_keys_rotate, "make a new current signing key")
    commands.command(ks, "list", cmd_keys_list, "list published keys")
