"""`provide_db`, the hot paths' bare pooled connection: what a request leaves behind never
reaches the next one."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from coalition.platform.app import provide_db


async def one_request(app: Litestar) -> asyncpg.Connection:
    """A connection as a request gets it, handed back as the request's end hands it back."""
    provider = provide_db(app.state)
    connection = await anext(provider)
    await provider.aclose()
    return connection


async def test_a_transaction_left_open_is_rolled_back_before_the_connection_is_reused(
    app: Litestar, client: AsyncTestClient[Litestar]
) -> None:
    provider = provide_db(app.state)
    connection = await anext(provider)
    assert not connection.is_in_transaction()
    await connection.execute("BEGIN")
    await connection.execute("CREATE TEMPORARY TABLE left_behind (n int)")
    await provider.aclose()  # the request ended inside its transaction

    assert not connection.is_in_transaction()
    exists = await connection.fetchval("SELECT to_regclass('pg_temp.left_behind') IS NOT NULL")
    assert exists is False


async def test_a_connection_the_server_dropped_is_replaced(
    app: Litestar, client: AsyncTestClient[Litestar]
) -> None:
    provider = provide_db(app.state)
    connection = await anext(provider)
    backend = connection.get_server_pid()
    async with app.state.engine.connect() as other:
        raw = await other.get_raw_connection()
        # Waits (up to 10 s) until the backend has exited, not only been signalled.
        await raw.driver_connection.fetchval("SELECT pg_terminate_backend($1, 10000)", backend)
    deadline = time.monotonic() + 10
    while not connection.is_closed():  # the driver sees the socket close
        assert time.monotonic() < deadline, "the driver never saw its backend go"
        await asyncio.sleep(0.05)
    await provider.aclose()

    # Every connection the pool hands out afterwards works, none is the dropped one.
    size = app.state.settings.db_pool_size
    for _ in range(size + 1):
        fresh = await one_request(app)
        assert fresh is not connection
        assert not fresh.is_closed()
    provider = provide_db(app.state)
    working = await anext(provider)
    assert await working.fetchval("SELECT 1") == 1
    await provider.aclose()
