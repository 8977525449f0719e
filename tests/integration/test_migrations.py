"""`alembic upgrade head` on an empty database builds exactly what the models declare."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

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
