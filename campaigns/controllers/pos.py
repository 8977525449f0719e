"""HTTP API of the till (terminal key): quote a coupon, redeem it, reverse a redemption, and
read this terminal's redemptions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.schemas.redemptions import (
    QuoteRead,
    QuoteRequest,
    RedeemRequest,
    RedemptionRead,
    ReverseRequest,
)
from coalition.campaigns.services import redemptions
from coalition.platform import idempotency
from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, principal_of
from coalition.platform.errors import Forbidden
from coalition.platform.ratelimit import LocalRateLimiter
from coalition.platform.settings import Settings


async def pos_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Terminal keys only (`403` otherwise), and every POS call spends a token of its
    terminal's bucket (in this process: no Redis on the redemption path); none left is
    `429 rate_limited` with `Retry-After`. One guard: the framework copies the route handler
    for every guard it runs, on every request. A coroutine although it never waits: the
    framework runs a plain function guard in a worker thread, a thread hop per request."""
    principal = principal_of(connection)
    if principal.kind != "terminal":
        raise Forbidden(f"This endpoint is not for {principal.kind} credentials")
    state = connection.app.state
    limiter: LocalRateLimiter | None = state.get("pos_rate_limiter")
    if limiter is None:
        settings: Settings = state.settings
        limiter = LocalRateLimiter(
            per_minute=settings.pos_rate_limit_per_minute, burst=settings.pos_rate_limit_burst
        )
        state.pos_rate_limiter = limiter
    limiter.hit(str(principal.subject_id))


IdempotencyKey = Annotated[str | None, Parameter(header="Idempotency-Key", required=False)]


def _answer(result: redemptions.PosResult) -> Response[dict[str, Any]]:
    headers = {idempotency.REPLAY_HEADER: "true"} if result.replayed else {}
    return Response(result.body, status_code=result.status_code, headers=headers)


class PosRedemptionController(Controller):
    path = "/api/v1/pos"
    tags = ["pos"]
    guards = [pos_guard]

    @post("/quotes", status_code=HTTP_200_OK)
    async def quote(
        self, data: QuoteRequest, session: AsyncSession, principal: Principal
    ) -> QuoteRead:
        """The discount a coupon (typed or scanned) gives this basket in this store now, or
        why not (`coupon_expired`, `not_redeemable_here`, ...). Changes nothing."""
        return await redemptions.quote_coupon(
            session,
            principal,
            code=data.code,
            basket_amount=data.basket_amount,
            currency=data.currency,
        )

    @post("/redemptions")
    async def redeem(
        self,
        data: RedeemRequest,
        db: asyncpg.Connection,
        request: Request[Any, Any, Any],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        """Redeem a coupon exactly once (`Idempotency-Key` required): 201 with the discount,
        what is left to pay and each funder's part. A replay of the key returns the first
        answer with `Idempotent-Replayed: true`."""
        # The till's hot path: one dependency, the principal and settings read from the request.
        state = request.app.state
        result = await redemptions.redeem(
            db,
            state.get("dispatcher"),
            principal_of(request),
            data,
            idempotency_key=idempotency.check_key(idempotency_key),
            rule=redemptions.VelocityRule.of(state.settings),
        )
        return _answer(result)

    @post("/redemptions/{redemption_id:uuid}/reversals")
    async def reverse(
        self,
        redemption_id: uuid.UUID,
        data: ReverseRequest,
        session: AsyncSession,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        """Reverse a redemption on a refund (`Idempotency-Key` required): in full (no
        `refund_amount`, or the whole basket) the coupon comes back; in part the discount is
        reversed pro rata. Refunds never exceed the basket."""
        result = await redemptions.reverse(
            session,
            principal,
            redemption_id,
            data,
            idempotency_key=idempotency.check_key(idempotency_key),
        )
        return _answer(result)

    @get("/redemptions/{redemption_id:uuid}")
    async def get_redemption(
        self, redemption_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> RedemptionRead:
        return await redemptions.get_redemption(session, principal, redemption_id)

    @get("/redemptions")
    async def list_redemptions(
        self, session: AsyncSession, principal: Principal, limit: Limit, offset: Offset
    ) -> Page[RedemptionRead]:
        """This terminal's redemptions, newest first."""
        items, total = await redemptions.list_redemptions(
            session, principal, limit=limit, offset=offset
        )
        return Page(items=items, limit=limit, offset=offset, total=total)


ROUTES = [PosRedemptionController]
