"""HTTP API of payouts, for finance: list, detail and retry of payout / collection attempts;
and, for an organization's admin, its Stripe Connect account and onboarding link.

Merchant users see their own organization's payouts (another's answer 404); the carrier's
finance staff and admins see all. The gateway is the application's `settlement_gateway`
state (set by tests and tools), else one made from the settings on first use.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Dependency, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.platform.api import Limit, Offset, Page
from coalition.platform.auth import Principal, role_guard
from coalition.platform.errors import DomainError
from coalition.platform.settings import Settings
from coalition.settlement.gateway import GatewayNotConfigured, SettlementGateway
from coalition.settlement.schemas.payouts import (
    ConnectedAccountRead,
    ConnectedAccountRequest,
    PayoutRead,
)
from coalition.settlement.services import payouts
from coalition.settlement.stripe_gateway import StripeGateway


class StripeNotConfigured(DomainError):
    """How the API and the portal answer `GatewayNotConfigured` (no Stripe key, or no webhook
    secret): the request was sound, the deployment cannot serve it."""

    status_code, code, title = 503, "stripe_not_configured", "Stripe is not configured"


# Raised by the gateway outside the DomainError tree; the app answers each as its DomainError.
ANSWERED_AS: dict[type[Exception], type[DomainError]] = {GatewayNotConfigured: StripeNotConfigured}


def provide_gateway(state: State, settings: Settings) -> SettlementGateway:
    gateway: SettlementGateway | None = state.get("settlement_gateway")
    if gateway is None:
        gateway = StripeGateway.from_settings(settings)
        state["settlement_gateway"] = gateway
    return gateway


# A Protocol: Litestar cannot isinstance-check it, so the value is not validated.
Gateway = Annotated[SettlementGateway, Dependency(skip_validation=True)]
GATEWAY = {"gateway": Provide(provide_gateway, sync_to_thread=False)}
PayoutStatus = Annotated[
    Literal["in_flight", "processing", "succeeded", "failed", "reversed"] | None,
    Parameter(query="status"),
]


class PayoutController(Controller):
    path = "/api/v1/payouts"
    tags = ["payouts"]
    guards = [role_guard("finance", "admin")]
    dependencies = GATEWAY

    @get("/")
    async def list_payouts(
        self,
        session: AsyncSession,
        principal: Principal,
        limit: Limit,
        offset: Offset,
        org_id: Annotated[uuid.UUID | None, Parameter(query="org_id")] = None,
        statement_id: Annotated[uuid.UUID | None, Parameter(query="statement_id")] = None,
        status: PayoutStatus = None,
    ) -> Page[PayoutRead]:
        """Payout and collection attempts, newest first."""
        items, total = await payouts.list_payouts(
            session,
            principal,
            org_id=org_id,
            status=status,
            statement_id=statement_id,
            limit=limit,
            offset=offset,
        )
        return Page(items=items, limit=limit, offset=offset, total=total)

    @get("/{payout_id:uuid}")
    async def get_payout(
        self, session: AsyncSession, principal: Principal, payout_id: uuid.UUID
    ) -> PayoutRead:
        return await payouts.get_payout(session, principal, payout_id)

    @post("/{payout_id:uuid}/retry", status_code=200, guards=[role_guard("finance")])
    async def retry_payout(
        self,
        session: AsyncSession,
        principal: Principal,
        gateway: Gateway,
        payout_id: uuid.UUID,
    ) -> PayoutRead:
        """Try again: the same idempotency key while the outcome is unknown (an earlier
        transfer is looked up and adopted first), the next generation after a refusal."""
        return await payouts.retry_payout(session, principal, gateway, payout_id)


class ConnectedAccountController(Controller):
    path = "/api/v1/organizations/{org_id:uuid}/stripe-account"
    tags = ["payouts"]
    guards = [role_guard("admin")]
    dependencies = GATEWAY

    @post("/", status_code=200)
    async def connect(
        self,
        session: AsyncSession,
        principal: Principal,
        gateway: Gateway,
        org_id: uuid.UUID,
        data: ConnectedAccountRequest,
    ) -> ConnectedAccountRead:
        """Create the organization's connected account (once) and an onboarding link."""
        return await payouts.connect_account(session, principal, gateway, org_id, data)


ROUTES = [PayoutController, ConnectedAccountController]
