"""Background jobs: a transactional outbox in front of arq, per-domain registries, retries.

A service calls `await enqueue(session, "job_name", *args)` inside its transaction and then
`await commit(session)`. The job is written to `job_outbox` in the same transaction, so it exists
if and only if the change it belongs to committed. After the commit it is handed to arq at once
(best effort, off the request path); the worker's relay re-sends whatever Redis never got or lost,
so losing Redis delays jobs but never loses them. Jobs run at least once and must be idempotent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias, cast

import asyncpg
import structlog
from arq import Retry
from arq.connections import ArqRedis
from arq.cron import CronJob, cron
from arq.typing import WorkerCoroutine
from arq.worker import Function, func
from redis.exceptions import RedisError
from sqlalchemy import Column, Index, and_, or_, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, col, select

from coalition.platform.db import SessionMaker, id_field, timestamp_field, utcnow

log = structlog.get_logger("coalition.jobs")

JobContext: TypeAlias = dict[str, Any]
JobFunction: TypeAlias = Callable[..., Awaitable[Any]]

OUTBOX_JOB_PREFIX = "outbox:"
RELAY_STALE_AFTER = timedelta(minutes=10)
RELAY_BATCH = 500
RELAY_GIVE_UP_AFTER = 50


class JobOutbox(SQLModel, table=True):
    __tablename__ = "job_outbox"
    __table_args__ = (
        Index(
            "ix_job_outbox_pending",
            "available_at",
            postgresql_where="completed_at IS NULL AND abandoned_at IS NULL",
        ),
    )

    id: uuid.UUID = id_field()
    function: str = Field(max_length=100)
    args: list[Any] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    dedupe_key: str | None = Field(default=None, max_length=200, unique=True)
    created_at: datetime = timestamp_field(now=True)
    available_at: datetime = timestamp_field(now=True)
    enqueued_at: datetime | None = timestamp_field(nullable=True)
    relay_count: int = 0
    completed_at: datetime | None = timestamp_field(nullable=True)
    abandoned_at: datetime | None = timestamp_field(nullable=True)


class TransientError(Exception):
    """Raise from a job for a failure worth retrying later (remote 5xx, lock timeout ...)."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    OSError,
    asyncio.TimeoutError,
    RedisError,
    OperationalError,
    asyncpg.PostgresConnectionError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc.orig, TRANSIENT_ERRORS)
    return False


def retry_delay(job_try: int) -> int:
    """Exponential backoff for the n-th try: 5 s, 10 s, 20 s ... capped at one hour."""
    return int(min(5 * 2 ** max(job_try - 1, 0), 3600))


@dataclass(frozen=True, slots=True)
class _Pending:
    outbox_id: uuid.UUID
    function: str
    args: list[Any]
    available_at: datetime | None


async def enqueue(
    session: AsyncSession,
    function: str,
    *args: Any,
    key: str | None = None,
    defer_until: datetime | None = None,
) -> None:
    """Record a job in the current transaction. With `key`, a job is recorded once per key."""
    outbox_id = uuid.uuid4()
    values: dict[str, Any] = {
        "id": outbox_id,
        "function": function,
        "args": list(args),
        "dedupe_key": key,
        "created_at": utcnow(),
        "available_at": defer_until or utcnow(),
        "relay_count": 0,
    }
    statement = insert(JobOutbox).values(**values)
    if key is not None:
        statement = statement.on_conflict_do_nothing(index_elements=["dedupe_key"])
    result = await session.execute(statement.returning(col(JobOutbox.id)))
    if result.scalar_one_or_none() is not None:
        session.info.setdefault("outbox", []).append(
            _Pending(outbox_id, function, list(args), defer_until)
        )


def enqueue_many_sql(*, ids: str, function: str, args: str, now: str) -> str:
    """Jobs recorded by plain SQL on the transaction's asyncpg connection (the hot paths), as
    `enqueue` writes them: one row per id, all for one function; each job's arguments a
    serialized JSON array. The arguments name the statement's parameters (`$1` ...)."""
    # Placeholders only, never input.
    return (
        "INSERT INTO job_outbox (id, function, args, dedupe_key, created_at, available_at, "  # noqa: S608
        f"relay_count) SELECT i, {function}, a::jsonb, NULL, {now}, {now}, 0 "
        f"FROM unnest({ids}::uuid[], {args}::text[]) AS j(i, a)"
    )


Outbox: TypeAlias = "list[_Pending]"


def outbox_of(session: AsyncSession) -> Outbox:
    """The jobs the session's transaction recorded so far: `commit` hands them to the queue."""
    pending: Outbox = session.info.setdefault("outbox", [])
    return pending


def will_dispatch(
    outbox: Outbox, function: str, outbox_ids: list[uuid.UUID], arg_lists: list[list[Any]]
) -> None:
    """Jobs written to the outbox by plain SQL in a transaction: to hand to the queue once it
    committed (`dispatch_committed`, or `commit` for a session's `outbox_of`)."""
    outbox.extend(
        _Pending(outbox_id, function, args, None)
        for outbox_id, args in zip(outbox_ids, arg_lists, strict=True)
    )


_background: set[asyncio.Task[None]] = set()


async def commit(session: AsyncSession) -> None:
    """Commit, then hand the jobs this transaction recorded to the queue (off the caller's path)."""
    await session.commit()
    pending: Outbox = session.info.pop("outbox", [])
    dispatch_committed(session.info.get("dispatcher"), pending)


def dispatch_committed(dispatcher: JobDispatcher | None, pending: Outbox) -> None:
    """Hand jobs whose transaction committed to the queue, off the caller's path."""
    if pending and dispatcher is not None:
        task = asyncio.get_running_loop().create_task(dispatcher.dispatch(pending))
        _background.add(task)
        task.add_done_callback(_background.discard)


async def drain_dispatches() -> None:
    """Wait for post-commit dispatches still in flight (shutdown, tests)."""
    loop = asyncio.get_running_loop()
    while tasks := [t for t in _background if t.get_loop() is loop]:
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class JobDispatcher:
    redis: ArqRedis
    sessionmaker: SessionMaker
    timeout: float = 2.0

    async def dispatch(self, pending: list[_Pending]) -> None:
        sent: list[uuid.UUID] = []
        try:
            async with asyncio.timeout(self.timeout):
                for item in pending:
                    await self.redis.enqueue_job(
                        item.function,
                        *item.args,
                        _job_id=f"{OUTBOX_JOB_PREFIX}{item.outbox_id}",
                        _defer_until=item.available_at,
                    )
                    sent.append(item.outbox_id)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("job_dispatch_deferred_to_relay", error=str(exc), jobs=len(pending))
        if sent:
            async with self.sessionmaker() as session:
                await session.execute(
                    update(JobOutbox)
                    .where(col(JobOutbox.id).in_(sent))
                    .values(enqueued_at=utcnow())
                )
                await session.commit()


async def relay_outbox(ctx: JobContext) -> int:
    """Send outbox rows the queue never got (Redis down at commit) or lost (Redis restarted)."""
    now = utcnow()
    sessionmaker: SessionMaker = ctx["sessionmaker"]
    redis: ArqRedis = ctx["redis"]
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                select(JobOutbox)
                .where(
                    col(JobOutbox.completed_at).is_(None),
                    col(JobOutbox.abandoned_at).is_(None),
                    or_(
                        col(JobOutbox.enqueued_at).is_(None),
                        and_(
                            col(JobOutbox.enqueued_at) < now - RELAY_STALE_AFTER,
                            col(JobOutbox.available_at) < now - RELAY_STALE_AFTER,
                        ),
                    ),
                )
                .order_by(col(JobOutbox.available_at))
                .limit(RELAY_BATCH)
                .with_for_update(skip_locked=True)
            )
        ).scalars()
        relayed = 0
        for row in rows:
            if row.relay_count >= RELAY_GIVE_UP_AFTER:
                row.abandoned_at = now
                log.error("job_abandoned", outbox_id=str(row.id), function=row.function)
                continue
            await redis.enqueue_job(
                row.function,
                *row.args,
                _job_id=f"{OUTBOX_JOB_PREFIX}{row.id}",
                _defer_until=row.available_at if row.available_at > now else None,
            )
            row.enqueued_at = now
            row.relay_count += 1
            relayed += 1
        await session.commit()
    if relayed:
        log.info("outbox_relayed", jobs=relayed)
    return relayed


async def _mark_completed(ctx: JobContext) -> None:
    job_id = str(ctx.get("job_id", ""))
    if not job_id.startswith(OUTBOX_JOB_PREFIX):
        return
    sessionmaker: SessionMaker = ctx["sessionmaker"]
    async with sessionmaker() as session:
        await session.execute(
            update(JobOutbox)
            .where(col(JobOutbox.id) == uuid.UUID(job_id.removeprefix(OUTBOX_JOB_PREFIX)))
            .values(completed_at=utcnow())
        )
        await session.commit()


def _with_retries(fn: JobFunction) -> JobFunction:
    async def run(ctx: JobContext, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await fn(ctx, *args, **kwargs)
        except Exception as exc:
            if is_transient(exc):
                delay = retry_delay(int(ctx.get("job_try", 1)))
                log.warning("job_retry", job=fn.__name__, error=repr(exc), retry_in_s=delay)
                raise Retry(defer=delay) from exc
            raise
        await _mark_completed(ctx)
        return result

    run.__name__ = fn.__name__
    run.__qualname__ = fn.__qualname__
    run.__doc__ = fn.__doc__
    return run


@dataclass
class JobRegistry:
    """The jobs and cron schedules one domain contributes to the worker."""

    domain: str
    functions: list[Function] = field(default_factory=list)
    cron_jobs: list[CronJob] = field(default_factory=list)

    def job(
        self, *, max_tries: int | None = None, timeout: float | None = None
    ) -> Callable[[JobFunction], JobFunction]:
        def register(fn: JobFunction) -> JobFunction:
            self.functions.append(
                func(
                    cast(WorkerCoroutine, _with_retries(fn)),
                    name=fn.__name__,
                    max_tries=max_tries,
                    timeout=timeout,
                )
            )
            return fn

        return register

    def cron(self, fn: JobFunction, **schedule: Any) -> None:
        """Run `fn` on a schedule (arq cron fields); unique across workers, at least once."""
        self.cron_jobs.append(
            cron(
                cast(WorkerCoroutine, _with_retries(fn)),
                name=f"cron:{fn.__name__}",
                unique=True,
                **schedule,
            )
        )


registry = JobRegistry("platform")
registry.cron(relay_outbox, second=set(range(0, 60, 10)))


@asynccontextmanager
async def job_session(ctx: JobContext) -> AsyncIterator[AsyncSession]:
    """A session for one job, whose post-commit jobs go straight to the queue."""
    sessionmaker: SessionMaker = ctx["sessionmaker"]
    async with sessionmaker() as session:
        session.info["dispatcher"] = ctx["dispatcher"]
        try:
            yield session
        finally:
            if session.in_transaction():
                await session.rollback()
