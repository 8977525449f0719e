"""Jobs: recorded with the transaction, queued after commit, run by a real arq worker on real
Redis, relayed when Redis missed them, and retried with backoff on transient errors."""

from __future__ import annotations

import uuid
from datetime import timedelta

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import ConnectionPool
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.models import RefreshToken
from coalition.platform import jobs
from coalition.platform.db import SessionMaker, utcnow
from coalition.platform.jobs import (
    JobContext,
    JobDispatcher,
    JobOutbox,
    JobRegistry,
    TransientError,
)
from coalition.platform.settings import Settings
from coalition.platform.worker import build_worker, worker_options
from tests.integration.conftest import World

flaky_registry = JobRegistry("test")
FLAKY_KEY = "test:flaky-attempts"


@flaky_registry.job()
async def flaky_job(ctx: JobContext, label: str) -> str:
    """Fails with a transient error on its first try, succeeds on the second."""
    attempts = await ctx["redis"].incr(FLAKY_KEY)
    await ctx["redis"].rpush("test:flaky-tries", ctx["job_try"])
    if attempts == 1:
        raise TransientError("remote said 503")
    return f"done {label}"


async def _queue(settings: Settings) -> ArqRedis:
    return await create_pool(RedisSettings.from_dsn(settings.redis_url or ""))


async def _run_worker_until_idle(settings: Settings) -> None:
    options = worker_options(settings)
    worker = build_worker(
        settings,
        functions=[*options["functions"], *flaky_registry.functions],
        burst=True,
        handle_signals=False,
        poll_delay=0.05,
    )
    try:
        await worker.main()
    finally:
        await worker.close()


async def _expired_tokens(session: AsyncSession, world: World, count: int) -> None:
    user = world.users["cafe_admin"]
    for i in range(count):
        session.add(
            RefreshToken(
                family_id=uuid.uuid4(),
                user_id=user.id,
                token_hash=f"{i:064d}",
                expires_at=utcnow() - timedelta(days=2 + i),
            )
        )
    session.add(
        RefreshToken(
            family_id=uuid.uuid4(),
            user_id=user.id,
            token_hash="f" * 64,
            expires_at=utcnow() + timedelta(days=1),
        )
    )
    await session.commit()


async def test_rolled_back_transaction_leaves_no_job(
    sessionmaker: SessionMaker, settings: Settings
) -> None:
    queue = await _queue(settings)
    async with sessionmaker() as session:
        session.info["dispatcher"] = JobDispatcher(queue, sessionmaker)
        await jobs.enqueue(session, "purge_expired_refresh_tokens")
        await session.rollback()
    await jobs.drain_dispatches()
    async with sessionmaker() as session:
        assert (await session.execute(select(JobOutbox))).scalars().all() == []
    assert await queue.queued_jobs() == []
    await queue.aclose()


async def test_committed_job_is_queued_and_run_by_a_real_worker(
    sessionmaker: SessionMaker, settings: Settings, session: AsyncSession, world: World
) -> None:
    await _expired_tokens(session, world, 3)
    queue = await _queue(settings)
    async with sessionmaker() as work:
        work.info["dispatcher"] = JobDispatcher(queue, sessionmaker)
        await jobs.enqueue(work, "purge_expired_refresh_tokens")
        assert await queue.queued_jobs() == []  # nothing reaches the queue before the commit
        await jobs.commit(work)
    await jobs.drain_dispatches()
    queued = await queue.queued_jobs()
    assert [j.function for j in queued] == ["purge_expired_refresh_tokens"]
    assert queued[0].job_id and queued[0].job_id.startswith("outbox:")

    await _run_worker_until_idle(settings)

    remaining = (await session.execute(select(RefreshToken.token_hash))).scalars().all()
    assert remaining == ["f" * 64]
    outbox = (await session.execute(select(JobOutbox))).scalars().one()
    await session.refresh(outbox)
    assert outbox.enqueued_at is not None and outbox.completed_at is not None
    await queue.aclose()


async def test_job_recorded_while_redis_is_down_is_relayed_later(
    sessionmaker: SessionMaker, settings: Settings, session: AsyncSession, world: World
) -> None:
    await _expired_tokens(session, world, 2)
    dead_redis = ArqRedis(
        connection_pool=ConnectionPool.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    )
    async with sessionmaker() as work:
        work.info["dispatcher"] = JobDispatcher(dead_redis, sessionmaker)
        await jobs.enqueue(work, "purge_expired_refresh_tokens")
        await jobs.commit(work)  # the commit itself succeeds with Redis unreachable
    await jobs.drain_dispatches()
    await dead_redis.aclose()
    outbox = (await session.execute(select(JobOutbox))).scalars().one()
    assert outbox.enqueued_at is None and outbox.completed_at is None

    await _run_worker_until_idle(settings)  # its relay runs at start-up and hands the job over

    await session.refresh(outbox)
    assert outbox.relay_count == 1 and outbox.completed_at is not None
    remaining = (await session.execute(select(RefreshToken.token_hash))).scalars().all()
    assert remaining == ["f" * 64]


async def test_transient_failure_is_retried_with_backoff(
    sessionmaker: SessionMaker, settings: Settings, session: AsyncSession
) -> None:
    queue = await _queue(settings)
    async with sessionmaker() as work:
        work.info["dispatcher"] = JobDispatcher(queue, sessionmaker)
        await jobs.enqueue(work, "flaky_job", "invoice-7")
        await jobs.commit(work)
    await jobs.drain_dispatches()

    await _run_worker_until_idle(settings)

    assert [int(t) for t in await queue.lrange("test:flaky-tries", 0, -1)] == [1, 2]
    outbox = (await session.execute(select(JobOutbox))).scalars().one()
    assert outbox.completed_at is not None
    results = [r for r in await queue.all_job_results() if r.function == "flaky_job"]
    assert len(results) == 1 and results[0].success and results[0].result == "done invoice-7"
    assert results[0].job_try == 2
    await queue.aclose()


async def test_keyed_jobs_are_recorded_once(sessionmaker: SessionMaker) -> None:
    for _ in range(3):
        async with sessionmaker() as work:
            await jobs.enqueue(work, "purge_expired_refresh_tokens", key="purge:2026-11-23")
            await jobs.commit(work)
    async with sessionmaker() as session:
        rows = (await session.execute(select(JobOutbox))).scalars().all()
    assert len(rows) == 1


def test_worker_registers_every_domain_and_its_schedules(settings: Settings) -> None:
    options = worker_options(settings)
    names = {f.name for f in options["functions"]}
    assert "purge_expired_refresh_tokens" in names
    crons = {c.name: c for c in options["cron_jobs"]}
    assert crons["cron:purge_expired_refresh_tokens"].minute == 17
    assert crons["cron:relay_outbox"].second == set(range(0, 60, 10))
    assert all(c.unique for c in crons.values())
