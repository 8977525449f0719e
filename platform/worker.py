"""The arq worker: every domain's job registry, with a database engine per worker process."""

from __future__ import annotations

from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, create_worker

from coalition.platform import jobs
from coalition.platform.db import make_engine, make_sessionmaker, set_clock
from coalition.platform.jobs import JobContext, JobDispatcher, JobRegistry
from coalition.platform.observability import configure_logging
from coalition.platform.settings import Settings, get_settings


def registries() -> list[JobRegistry]:
    from coalition.campaigns import jobs as campaign_jobs
    from coalition.merchants import jobs as merchant_jobs
    from coalition.settlement import jobs as settlement_jobs

    return [jobs.registry, merchant_jobs.registry, campaign_jobs.registry, settlement_jobs.registry]


async def on_startup(ctx: JobContext) -> None:
    settings: Settings = ctx.get("settings") or get_settings()
    ctx["settings"] = settings
    ctx["engine"] = make_engine(settings, pool_size=5)
    ctx["sessionmaker"] = make_sessionmaker(ctx["engine"])
    ctx["dispatcher"] = JobDispatcher(ctx["redis"], ctx["sessionmaker"])
    # Whatever Redis lost or never got while no worker ran is handed over before anything else.
    await jobs.relay_outbox(ctx)


async def on_shutdown(ctx: JobContext) -> None:
    await jobs.drain_dispatches()
    engine = ctx.pop("engine", None)
    if engine is not None:
        await engine.dispose()


def redis_settings(settings: Settings) -> RedisSettings:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set (run `coalition dev` for the embedded stack)")
    return RedisSettings.from_dsn(settings.redis_url)


def worker_options(settings: Settings) -> dict[str, Any]:
    all_registries = registries()
    return {
        "functions": [f for r in all_registries for f in r.functions],
        "cron_jobs": [c for r in all_registries for c in r.cron_jobs],
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "redis_settings": redis_settings(settings),
        "max_tries": settings.job_max_tries,
        "max_jobs": 20,
        "job_timeout": 600,
        "keep_result": 3600,
        "health_check_interval": 60,
        "ctx": {"settings": settings},
    }


def build_worker(settings: Settings, **overrides: Any) -> Worker:
    return create_worker({**worker_options(settings), **overrides})


def run_worker(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    configure_logging(settings)
    set_clock(settings)
    build_worker(settings).run()  # arq's own loop, with SIGINT/SIGTERM handled gracefully
