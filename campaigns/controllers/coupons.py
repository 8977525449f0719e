"""HTTP API of coupons: claim, wallet and QR images, void, campaign figures."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns import qr
from coalition.campaigns.schemas.coupons import CampaignStatsRead, CouponRead, VoidRequest
from coalition.campaigns.services import coupons
from coalition.platform import idempotency
from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, principal_of, role_guard
from coalition.platform.settings import Settings

customers_only = role_guard(kinds=("customer",))
IdempotencyKey = Annotated[str | None, Parameter(header="Idempotency-Key", required=False)]


class ClaimController(Controller):
    path = "/api/v1/campaigns"
    tags = ["coupons"]

    @post("/{campaign_id:uuid}/claims", guards=[customers_only])
    async def claim(
        self,
        campaign_id: uuid.UUID,
        db: asyncpg.Connection,
        request: Request[Any, Any, Any],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[dict[str, Any]]:
        """Claim a coupon (customer token; `Idempotency-Key` required). A replay of the key
        returns the first response with `Idempotent-Replayed: true`."""
        # The flash-sale path: one dependency (several would be resolved in a task group per
        # request), the principal and settings read from the request.
        result = await coupons.claim_coupon(
            db,
            request.app.state.settings,
            principal_of(request),
            campaign_id,
            idempotency_key=idempotency.check_key(idempotency_key),
        )
        headers = {idempotency.REPLAY_HEADER: "true"} if result.replayed else {}
        return Response(result.body, status_code=result.status_code, headers=headers)

    @get("/{campaign_id:uuid}/stats", guards=[role_guard()])
    async def stats(
        self, campaign_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> CampaignStatsRead:
        """Issued, claimed, redeemed, expired, redemption rate, budget held per funder, by day."""
        return await coupons.campaign_stats(session, principal, campaign_id)


WalletState = Annotated[str | None, Parameter(query="state", pattern="^(valid|used|expired)$")]


class WalletController(Controller):
    path = "/api/v1/wallet"
    tags = ["coupons"]
    guards = [customers_only]

    @get("/coupons")
    async def list_coupons(
        self,
        session: AsyncSession,
        settings: Settings,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        wallet_state: WalletState = None,
    ) -> Page[CouponRead]:
        """The customer's coupons, newest first: `state` = valid, used or expired."""
        rows, total = await coupons.wallet(
            session, principal, state=wallet_state, limit=limit, offset=offset
        )
        return Page(
            items=[coupons.coupon_read(c, k, settings) for c, k in rows],
            limit=limit,
            offset=offset,
            total=total,
        )

    @get("/coupons/{coupon_id:uuid}")
    async def get_coupon(
        self, coupon_id: uuid.UUID, session: AsyncSession, settings: Settings, principal: Principal
    ) -> CouponRead:
        coupon, campaign = await coupons.wallet_coupon(session, principal, coupon_id)
        return coupons.coupon_read(coupon, campaign, settings)

    @get("/coupons/{coupon_id:uuid}/qr.png", media_type="image/png")
    async def qr_png(
        self, coupon_id: uuid.UUID, session: AsyncSession, settings: Settings, principal: Principal
    ) -> Response[bytes]:
        """The coupon's QR code (its page URL, which carries the code)."""
        coupon, _ = await coupons.wallet_coupon(session, principal, coupon_id)
        image = qr.png(qr.coupon_url(settings.public_url, coupon.code))
        return Response(image, media_type="image/png", headers={"Cache-Control": "private"})

    @get("/coupons/{coupon_id:uuid}/qr.svg", media_type="image/svg+xml")
    async def qr_svg(
        self, coupon_id: uuid.UUID, session: AsyncSession, settings: Settings, principal: Principal
    ) -> Response[bytes]:
        coupon, _ = await coupons.wallet_coupon(session, principal, coupon_id)
        image = qr.svg(qr.coupon_url(settings.public_url, coupon.code))
        return Response(image, media_type="image/svg+xml", headers={"Cache-Control": "private"})


class CouponAdminController(Controller):
    path = "/api/v1/coupons"
    tags = ["coupons"]
    guards = [role_guard("admin", "marketing")]

    @post("/{coupon_id:uuid}/void", status_code=HTTP_200_OK)
    async def void(
        self,
        coupon_id: uuid.UUID,
        data: VoidRequest,
        session: AsyncSession,
        settings: Settings,
        principal: Principal,
    ) -> CouponRead:
        """The campaign owner voids an unused coupon; its budget and unit go back."""
        coupon, campaign = await coupons.void_coupon(
            session, principal, coupon_id, reason=data.reason
        )
        return coupons.coupon_read(coupon, campaign, settings)


ROUTES = [ClaimController, WalletController, CouponAdminController]
