"""HTTP API of partners' online checkout (an organization's API key, `cak_...`): reserve a
coupon, confirm or release the hold, read and reverse online redemptions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Response, get, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.schemas.redemptions import (
    HoldRead,
    QuoteRead,
    QuoteRequest,
    RedemptionRead,
    ReserveRequest,
    ReverseRequest,
)
from coalition.campaigns.services import online, redemptions
from coalition.merchants.services.api_keys import scope_guard
from coalition.platform import idempotency
from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Guard, Principal, principal_of
from coalition.platform.errors import Forbidden
from coalition.platform.settings import Settings

IdempotencyKey = Annotated[str | None, Parameter(header="Idempotency-Key", required=False)]


def api_keys_with(*scopes: str) -> Guard:
    """Only an organization's API keys holding `scopes` (403 for any other credential)."""
    scoped = scope_guard(*scopes)

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        principal = principal_of(connection)
        if principal.kind != "api_key":
            raise Forbidden("Online checkout calls use an organization's API key (cak_...)")
        await scoped(connection, handler)

    return guard


writes = api_keys_with("redemptions:write")
reads = api_keys_with("redemptions:read")


def _answer(result: redemptions.PosResult) -> Response[dict[str, Any]]:
    headers = {idempotency.REPLAY_HEADER: "true"} if result.replayed else {}
    return Response(result.body, status_code=result.status_code, headers=headers)


class OnlineRedemptionController(Controller):
    path = "/api/v1/online"
    tags = ["online checkout"]

    @post("/quotes", status_code=HTTP_200_OK, guards=[writes])
    async def quote(
        self, data: QuoteRequest, session: AsyncSession, principal: Principal
    ) -> QuoteRead:
        """The discount a coupon gives this basket online now, or why not. Changes nothing."""
        return await redemptions.quote_coupon(
            session,
            principal,
            code=data.code,
            basket_amount=data.basket_amount,
            currency=data.currency,
        )

    @post("/holds", guards=[writes])
    async def reserve(
        self,
        data: ReserveRequest,
        session: AsyncSession,
        principal: Principal,
        settings: Settings,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        """Hold a coupon for this checkout (`Idempotency-Key` required): 201 with the
        discount and `expires_at`. While held it cannot be redeemed anywhere else."""
        result = await online.reserve(
            session,
            principal,
            data,
            idempotency_key=idempotency.check_key(idempotency_key),
            settings=settings,
        )
        return _answer(result)

    @post("/holds/{hold_id:uuid}/confirm", guards=[writes])
    async def confirm(
        self,
        hold_id: uuid.UUID,
        session: AsyncSession,
        principal: Principal,
        settings: Settings,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        """Redeem the held coupon (`Idempotency-Key` required): 201 with the redemption,
        exactly as at the till; `409 hold_expired` once the hold has lapsed."""
        result = await online.confirm(
            session,
            principal,
            hold_id,
            idempotency_key=idempotency.check_key(idempotency_key),
            rule=redemptions.VelocityRule.of(settings),
        )
        return _answer(result)

    @post("/holds/{hold_id:uuid}/release", status_code=HTTP_200_OK, guards=[writes])
    async def release(
        self, hold_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> HoldRead:
        """Give the coupon back now (idempotent)."""
        return await online.release(session, principal, hold_id)

    @get("/holds/{hold_id:uuid}", guards=[reads])
    async def get_hold(
        self, hold_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> HoldRead:
        return await online.get_hold(session, principal, hold_id)

    @post("/redemptions/{redemption_id:uuid}/reversals", guards=[writes])
    async def reverse(
        self,
        redemption_id: uuid.UUID,
        data: ReverseRequest,
        session: AsyncSession,
        principal: Principal,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        """Reverse one of this organization's redemptions on a refund (in full or pro rata),
        as at the till (`Idempotency-Key` required)."""
        result = await redemptions.reverse(
            session,
            principal,
            redemption_id,
            data,
            idempotency_key=idempotency.check_key(idempotency_key),
        )
        return _answer(result)

    @get("/redemptions/{redemption_id:uuid}", guards=[reads])
    async def get_redemption(
        self, redemption_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> RedemptionRead:
        return await redemptions.get_redemption(session, principal, redemption_id)

    @get("/redemptions", guards=[reads])
    async def list_redemptions(
        self, session: AsyncSession, principal: Principal, limit: Limit, offset: Offset
    ) -> Page[RedemptionRead]:
        """This organization's online redemptions, newest first."""
        items, total = await redemptions.list_redemptions(
            session, principal, limit=limit, offset=offset
        )
        return Page(items=items, limit=limit, offset=offset, total=total)


ROUTES = [OnlineRedemptionController]
