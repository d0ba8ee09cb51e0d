"""Alembic migrations: up, down and up again on both databases, and no drift from the models."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from authserver import migrate
from authserver.db import Database
from authserver.models import metadata


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def _drift(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "target_metadata": metadata})
        return compare_metadata(context, metadata)


def test_empty_to_head_to_base_to_head(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    try:
        model_tables = set(metadata.tables)
        assert _tables(db) == set()
        assert migrate.current_revision(db) is None and not migrate.is_current(db)

        migrate.upgrade(db)
        assert migrate.current_revision(db) == migrate.head_revision(db) is not None
        assert migrate.is_current(db)
        assert _tables(db) == model_tables | {"alembic_version"}

        migrate.downgrade(db, "base")
        assert migrate.current_revision(db) is None
        assert _tables(db) <= {"alembic_version"}

        migrate.upgrade(db)
        assert migrate.is_current(db)
        assert _tables(db) == model_tables | {"alembic_version"}
        migrate.upgrade(db)  # idempotent at head
        assert migrate.is_current(db)
    finally:
        db.dispose()


def test_migrated_schema_matches_the_models(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    try:
        migrate.upgrade(db)
        assert _drift(db) == []
    finally:
        db.dispose()


def test_drift_is_detected(empty_db_url: str) -> None:
    """The comparison itself works: a schema one migration short of head differs from the models."""
    db = Database(empty_db_url)
    try:
        migrate.upgrade(db, "0001")
        if migrate.head_revision(db) == "0001":
            migrate.downgrade(db, "base")
        assert _drift(db) != []
    finally:
        db.dispose()
