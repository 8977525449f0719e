"""Real PostgreSQL and Redis for the whole suite: the servers named by DATABASE_URL / REDIS_URL,
or else a private embedded stack under `.coalition/test`. Each run gets a fresh, migrated database.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from coalition.platform.settings import to_asyncpg_url

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Servers:
    database_url: str  # the migrated test database (postgresql+asyncpg://...)
    server_url: str  # the same server's maintenance database, for creating databases
    redis_url: str


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def create_database(server_url: str, name: str) -> str:
    connection = await asyncpg.connect(_plain(server_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str, name: str) -> None:
    connection = await asyncpg.connect(_plain(server_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    import asyncio

    from coalition.platform import migrate

    database_env = os.environ.get("DATABASE_URL")
    redis_env = os.environ.get("REDIS_URL")
    stack = None
    if not database_env or not redis_env:
        from coalition.platform.embedded import EmbeddedStack

        # A private stack per run (about a second to create): parallel runs never share one.
        (ROOT / ".coalition").mkdir(exist_ok=True)
        stack_dir = Path(tempfile.mkdtemp(prefix="test-", dir=ROOT / ".coalition"))
        stack = EmbeddedStack(stack_dir, durable=False)
        stack.start()
    server_url = (
        make_url(to_asyncpg_url(database_env)).set(database="postgres").render_as_string(False)
        if database_env
        else stack.admin_url  # type: ignore[union-attr]
    )
    redis_url = redis_env or stack.redis_url  # type: ignore[union-attr]
    name = f"coalition_test_{uuid.uuid4().hex[:8]}"
    database_url = asyncio.run(create_database(server_url, name))
    migrate.upgrade(database_url)
    os.environ.update(DATABASE_URL=database_url, REDIS_URL=redis_url, COALITION_ENVIRONMENT="test")
    from coalition.platform.settings import get_settings

    get_settings.cache_clear()
    try:
        yield Servers(database_url=database_url, server_url=server_url, redis_url=redis_url)
    finally:
        asyncio.run(drop_database(server_url, name))
        if stack is not None:
            stack.stop()
            shutil.rmtree(stack.data_dir, ignore_errors=True)
