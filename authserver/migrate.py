"""Alembic, driven from code: `authserver db upgrade` and the test suite use this."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from authserver.db import Database

if TYPE_CHECKING:
    from alembic.config import Config

# alembic is imported where it is used: `authserver serve` checks the schema in a child process
# and never loads it (see cli._require_schema_apart).

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# The revision this code needs: ``/readyz`` compares the database's ``alembic_version`` with it
# without loading alembic. A new migration changes it too (tests/test_readiness.py checks they agree).
HEAD = "0010"


def alembic_config(db: Database) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    from alembic import command

    with db.engine.begin() as connection:
        config = alembic_config(db)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(db: Database, revision: str = "base") -> None:
    from alembic import command

    with db.engine.begin() as connection:
        config = alembic_config(db)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(db: Database) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(db)).get_current_head()


def is_current(db: Database) -> bool:
    return current_revision(db) == head_revision(db)
