"""`POST /api/v1/stripe/webhooks`: Stripe's signed event deliveries. Public (no bearer token):
the `Stripe-Signature` over the raw body is the authentication."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.settlement.controllers.payouts import GATEWAY, Gateway
from coalition.settlement.schemas.payouts import WebhookReceipt
from coalition.settlement.services import stripe_events


class StripeWebhookController(Controller):
    path = "/api/v1/stripe/webhooks"
    tags = ["payouts"]
    dependencies = GATEWAY

    @post("/", status_code=200, opt={"exclude_from_auth": True})
    async def receive(
        self,
        request: Request[Any, Any, Any],
        session: AsyncSession,
        gateway: Gateway,
        signature: Annotated[str | None, Parameter(header="Stripe-Signature")] = None,
    ) -> WebhookReceipt:
        """Verify and handle one event (once per event id: a redelivery answers
        `duplicate: true`)."""
        payload = await request.body()
        event_id, new = await stripe_events.receive_webhook(session, gateway, payload, signature)
        return WebhookReceipt(event_id=event_id, duplicate=not new)


ROUTES = [StripeWebhookController]
