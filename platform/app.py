"""The Litestar application factory: routes of every domain, kernel middleware, lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import swagger_ui_bundle
from arq.connections import ArqRedis
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.prometheus import PrometheusController
from litestar.static_files import create_static_files_router
from redis.asyncio import ConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.util import greenlet_spawn

from coalition.platform import jobs, web
from coalition.platform.auth import BearerAuthMiddleware, provide_principal
from coalition.platform.db import make_engine, make_sessionmaker, set_clock
from coalition.platform.errors import EXCEPTION_HANDLERS, answered_as
from coalition.platform.health import HealthController
from coalition.platform.observability import (
    configure_logging,
    prometheus_config,
    request_id_middleware,
)
from coalition.platform.settings import Settings, get_settings

PUBLIC_PATHS = ["^/health", "^/metrics", "^/schema", "^/static"]
SWAGGER_ASSETS = "/static/swagger"


def make_redis(settings: Settings) -> ArqRedis:
    """A lazily connecting client: the API starts, and redeems, while Redis is down."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set (run `coalition dev` for the embedded stack)")
    pool = ConnectionPool.from_url(
        settings.redis_url, socket_connect_timeout=1.0, socket_timeout=2.0, max_connections=50
    )
    return ArqRedis(connection_pool=pool)


def _lifespan(settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = make_engine(settings)
        redis = make_redis(settings)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        # Waiting for a pooled connection is not first come, first served (a request that
        # arrives as a connection is returned takes it, and a woken waiter goes to the back):
        # under a flash sale some requests starved past the pool timeout. `provide_db` queues
        # at this gate instead, which hands each freed place to the longest waiter.
        app.state.db_gate = asyncio.Semaphore(settings.db_pool_size + settings.db_max_overflow)
        app.state.redis = redis
        app.state.dispatcher = jobs.JobDispatcher(redis, app.state.sessionmaker)
        try:
            yield
        finally:
            await jobs.drain_dispatches()
            await redis.aclose()
            await engine.dispose()

    return lifespan


async def provide_session(state: State) -> AsyncIterator[AsyncSession]:
    """One session per request; what the service did not commit is rolled back."""
    async with state.sessionmaker() as session:
        session.info["dispatcher"] = state.dispatcher
        try:
            yield session
        finally:
            if session.in_transaction():
                await session.rollback()


async def provide_db(state: State) -> AsyncIterator[asyncpg.Connection]:
    """A bare asyncpg connection from the same pool, outside any transaction, for the hot
    paths whose service runs its own transactions in few round trips (claims, the till's
    redemption): no ORM session to build and tear down per request, and the pool's raw
    checkout rather than a `Connection` around it (a quarter of the CPU). Never returned to
    the pool inside a transaction. Requests wait for a connection in arrival order
    (`db_gate`)."""
    engine: AsyncEngine = state.engine
    gate: asyncio.Semaphore = state.db_gate
    async with gate:
        pooled = await engine.raw_connection()
        try:
            driver = pooled.driver_connection
            if driver is None:  # pragma: no cover - asyncpg always has one
                raise RuntimeError("no asyncpg connection under the pool")
            try:
                yield driver
            finally:
                if driver.is_closed():
                    await greenlet_spawn(pooled.invalidate)
                elif driver.is_in_transaction():
                    try:
                        await driver.execute("ROLLBACK")
                    except Exception:
                        await greenlet_spawn(pooled.invalidate)
                        raise
        finally:
            pooled.close()


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_redis(state: State) -> ArqRedis:
    redis: ArqRedis = state.redis
    return redis


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings)
    set_clock(settings)

    from coalition.campaigns.controllers import ROUTES as CAMPAIGN_ROUTES
    from coalition.campaigns.controllers import portal as campaign_pages
    from coalition.campaigns.controllers import portal_builder, portal_targets
    from coalition.merchants.controllers import ROUTES as MERCHANT_ROUTES
    from coalition.merchants.controllers import portal as merchant_pages
    from coalition.merchants.services.identity import principal_without_lookup, resolve_principal
    from coalition.settlement.controllers import ANSWERED_AS as SETTLEMENT_ERRORS
    from coalition.settlement.controllers import ROUTES as SETTLEMENT_ROUTES
    from coalition.settlement.controllers import portal as settlement_pages
    from coalition.settlement.controllers import portal_payouts as payout_pages
    from coalition.settlement.controllers import portal_reconciliation as reconciliation_pages

    state = State(
        {
            "settings": settings,
            "resolve_principal": resolve_principal,
            "resolve_principal_fast": principal_without_lookup,
        }
    )
    return Litestar(
        route_handlers=[
            HealthController,
            PrometheusController,
            create_static_files_router(
                path=SWAGGER_ASSETS,
                directories=[swagger_ui_bundle.swagger_ui_path],
                include_in_schema=False,
                opt={"exclude_from_auth": True},
            ),
            *MERCHANT_ROUTES,
            *CAMPAIGN_ROUTES,
            *SETTLEMENT_ROUTES,
            web.static_router(),
            web.portal_router(
                "/portal",
                [
                    *merchant_pages.PORTAL_PAGES,
                    *campaign_pages.PORTAL_PAGES,
                    *portal_builder.PORTAL_PAGES,
                    *portal_targets.PORTAL_PAGES,
                    *settlement_pages.PORTAL_PAGES,
                    *payout_pages.PORTAL_PAGES,
                    *reconciliation_pages.PORTAL_PAGES,
                ],
                SETTLEMENT_ERRORS,
            ),
            web.portal_router("/c", campaign_pages.COUPON_PAGES),
        ],
        dependencies={
            "session": Provide(provide_session),
            "db": Provide(provide_db),
            "principal": Provide(provide_principal, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
            "redis": Provide(provide_redis, sync_to_thread=False),
        },
        middleware=[
            request_id_middleware,
            prometheus_config().middleware,
            DefineMiddleware(BearerAuthMiddleware, exclude=[*PUBLIC_PATHS, *web.PORTAL_PATHS]),
        ],
        exception_handlers={
            **EXCEPTION_HANDLERS,
            **{kind: answered_as(error) for kind, error in SETTLEMENT_ERRORS.items()},
        },
        openapi_config=OpenAPIConfig(
            title="Coalition API",
            version="1.0.0",
            description=(
                "Joint co-funded coupon campaigns between a carrier and partner merchants. "
                "Errors are RFC 9457 problem+json with a stable `code`."
            ),
            path="/schema",
            render_plugins=[
                SwaggerRenderPlugin(
                    path="/",
                    js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
                    css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
                    standalone_preset_js_url=f"{SWAGGER_ASSETS}/swagger-ui-standalone-preset.js",
                )
            ],
        ),
        request_max_body_size=settings.max_request_body_bytes,
        lifespan=[_lifespan(settings)],
        state=state,
        debug=False,
    )
