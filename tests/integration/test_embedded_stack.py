"""The embedded PostgreSQL + Redis stack starts, serves, stops, and keeps its data on restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from coalition.platform.embedded import EmbeddedStack


def _dsn(stack: EmbeddedStack) -> str:
    return str(stack.database_url).replace("postgresql+asyncpg://", "postgresql://", 1)


async def test_embedded_stack_serves_and_keeps_data_across_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "stack"
    stack = EmbeddedStack(data_dir, durable=False)
    try:
        await asyncio.to_thread(stack.start)
        assert stack.database_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
        assert stack.database_url.endswith("/coalition")
        assert stack.admin_url.endswith("/postgres")
        assert stack.redis_url == f"redis://127.0.0.1:{stack.redis_port}/0"
        first_ports = (stack.pg_port, stack.redis_port)
        assert json.loads((data_dir / "stack.json").read_text()) == {
            "pg_port": first_ports[0],
            "redis_port": first_ports[1],
        }

        conn = await asyncpg.connect(_dsn(stack))
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert await conn.fetchval("SELECT current_database()") == "coalition"
            assert await conn.fetchval("SHOW max_connections") == "200"
            assert await conn.fetchval("SHOW fsync") == "off"
            await conn.execute("CREATE TABLE survivor (id int PRIMARY KEY, note text)")
            await conn.execute("INSERT INTO survivor VALUES (1, 'kept')")
        finally:
            await conn.close()

        client = aioredis.Redis.from_url(stack.redis_url)
        try:
            assert await client.ping() is True
        finally:
            await client.aclose()

        await asyncio.to_thread(stack.stop)
        await asyncio.to_thread(stack.stop)  # idempotent
        assert not (data_dir / "postgres" / "postmaster.pid").exists()

        restarted = EmbeddedStack(data_dir, durable=False)
        stack = restarted
        await asyncio.to_thread(stack.start)
        assert (stack.pg_port, stack.redis_port) == first_ports  # remembered in stack.json

        conn = await asyncpg.connect(_dsn(stack))
        try:
            assert await conn.fetchval("SELECT note FROM survivor WHERE id = 1") == "kept"
        finally:
            await conn.close()

        client = aioredis.Redis.from_url(stack.redis_url)
        try:
            assert await client.ping() is True
        finally:
            await client.aclose()
    finally:
        await asyncio.to_thread(stack.stop)
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
