"""Database engine, sessions, and the shared SQLModel metadata with its naming convention."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
from sqlalchemy import DateTime, MetaData, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlmodel import Field, SQLModel

from coalition.platform.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION
metadata: MetaData = SQLModel.metadata

SessionMaker = async_sessionmaker[AsyncSession]


# How far the application's clock runs ahead of the wall clock (`COALITION_CLOCK_OFFSET_SECONDS`,
# refused in production): set once per process at start-up by the app and the worker.
_clock_offset = timedelta(0)


def set_clock(settings: Settings) -> None:
    """Make `utcnow` follow the settings' clock offset (zero unless configured)."""
    global _clock_offset
    _clock_offset = timedelta(seconds=settings.clock_offset_seconds)


def utcnow() -> datetime:
    """The application's clock: the wall clock, shifted by the configured offset (outside
    production only), so that a test or demo can see periods end without waiting for them."""
    return datetime.now(UTC) + _clock_offset


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def id_field() -> Any:
    return Field(default_factory=new_id, primary_key=True)


def timestamp_field(*, nullable: bool = False, index: bool = False, now: bool = False) -> Any:
    """A `timestamptz` column; `now=True` defaults it to the current time."""
    column_type = DateTime(timezone=True)
    if now:
        return Field(default_factory=utcnow, sa_type=column_type, nullable=nullable, index=index)
    return Field(default=None, sa_type=column_type, nullable=nullable, index=index)


def make_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set (run `coalition dev` for the embedded stack)")
    return create_async_engine(
        settings.database_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # No ping per checkout (a round trip on every request): a dropped connection fails its
        # statement, SQLAlchemy invalidates it, and the next checkout gets a fresh one.
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "coalition"}},
    )


def make_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def session_from(sessionmaker: SessionMaker) -> AsyncIterator[AsyncSession]:
    """One session per unit of work; whatever the service did not commit is rolled back."""
    async with sessionmaker() as session:
        try:
            yield session
        finally:
            if session.in_transaction():
                await session.rollback()


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session's transaction, the transaction begun.

    For plain SQL on the hot paths (see `campaigns/services/redemption_sql.py`). SQLAlchemy's
    asyncpg adapter sends BEGIN only with its own first statement, so when plain SQL comes
    first the transaction is begun here: a statement sent outside it would commit on its own.
    """
    connection = await session.connection()
    adapter = (await connection.get_raw_connection()).dbapi_connection
    if not getattr(adapter, "_started", True):
        await adapter._start_transaction()  # type: ignore[union-attr]
    driver = cast(asyncpg.Connection, adapter.driver_connection)  # type: ignore[union-attr]
    if not driver.is_in_transaction():
        await session.execute(text("SELECT 1"))  # the adapter's own way of beginning
    if not driver.is_in_transaction():
        raise RuntimeError("plain SQL needs the session's transaction, and none was begun")
    return driver
