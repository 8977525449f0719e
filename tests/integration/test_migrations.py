"""`alembic upgrade head` on an empty database builds exactly what the models declare."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from coalition.platform import migrate
from coalition.platform.migrate import all_metadata
from tests.conftest import Servers, create_database, drop_database


@pytest.fixture
def empty_database(servers: Servers) -> Iterator[str]:
    name = f"coalition_migrations_{uuid.uuid4().hex[:8]}"
    url = asyncio.run(create_database(servers.server_url, name))
    yield url
    asyncio.run(drop_database(servers.server_url, name))


def _inspect(url: str, fn: Any) -> Any:
    async def run() -> Any:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(fn)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, all_metadata()))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def test_upgrade_head_matches_the_models_and_downgrade_base_empties(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    assert _inspect(empty_database, _diff) == []
    model_tables = {t.name for t in all_metadata().sorted_tables}
    assert _inspect(empty_database, _tables) == model_tables | {"alembic_version"}

    migrate.downgrade(empty_database, "base")
    assert _inspect(empty_database, _tables) == {"alembic_version"}

    migrate.upgrade(empty_database)  # and the round trip comes back the same
    assert _inspect(empty_database, _diff) == []


def test_0015_fills_the_queued_rows_from_their_entries(empty_database: str) -> None:
    """Rows queued for statements before migration 0015 get their entry's cycle, time, kind,
    campaign and redemption; later ones get them from the trigger."""
    migrate.upgrade(empty_database, "0012")
    entry, redemption, org = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    async def queue_one(connection: AsyncConnection) -> None:
        # Only the two rows this needs (foreign keys and the balance check off).
        await connection.execute(text("SET session_replication_role = replica"))
        await connection.execute(
            text(
                "INSERT INTO journal_entry (id, idempotency_key, kind, occurred_at, "
                "redemption_id, created_at) VALUES (:entry, 'k', 'adjustment', "
                "'2026-11-03 04:05:06+00', :redemption, now())"
            ),
            {"entry": entry, "redemption": redemption},
        )
        await connection.execute(
            text(
                "INSERT INTO statement_pending (entry_id, org_id, currency) "
                "VALUES (:entry, :org, 'CNY')"
            ),
            {"entry": entry, "org": org},
        )

    async def queued(connection: AsyncConnection) -> list[Any]:
        rows = await connection.execute(
            text(
                "SELECT entry_id, org_id, cycle, occurred_at, kind, campaign_id, redemption_id "
                "FROM statement_pending"
            )
        )
        return [tuple(row) for row in rows]

    _run(empty_database, queue_one)
    migrate.upgrade(empty_database)
    assert _run(empty_database, queued) == [
        (
            entry,
            org,
            "monthly",
            datetime(2026, 11, 3, 4, 5, 6, tzinfo=UTC),
            "adjustment",
            None,
            redemption,
        )
    ]


def _run(url: str, fn: Any) -> Any:
    async def run() -> Any:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                return await fn(connection)
        finally:
            await engine.dispose()

    return asyncio.run(run())
