"""Outgoing webhooks: events recorded with the change that caused them, delivered by the worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import WebhookDelivery, WebhookEndpoint
from coalition.platform.db import utcnow
from coalition.platform.jobs import enqueue

# Every event type an endpoint may subscribe to ("*" subscribes to all of them).
EVENT_TYPES = (
    "organization.activated",
    "organization.suspended",
    "terminal.revoked",
    "campaign.proposed",
    "campaign.approved",
    "campaign.activated",
    "campaign.ended",
    "coupon.redeemed",
    "redemption.reversed",
    "statement.closed",
    "payout.paid",
    "reconciliation.discrepancy",
)
DELIVER_JOB = "deliver_webhook"


async def emit_event(
    session: AsyncSession,
    *,
    event_type: str,
    org_ids: Iterable[uuid.UUID],
    data: dict[str, Any],
) -> uuid.UUID:
    """Record one event for every enabled endpoint of `org_ids` that subscribed to it.

    Runs inside the caller's transaction: deliveries exist exactly when the change committed,
    and the worker picks them up only after that commit.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type}")
    event_id = uuid.uuid4()
    now = utcnow()
    envelope = {
        "id": str(event_id),
        "type": event_type,
        "created_at": now.isoformat(),
        "data": data,
    }
    endpoints = (
        await session.execute(
            select(WebhookEndpoint).where(
                col(WebhookEndpoint.org_id).in_(set(org_ids)),
                col(WebhookEndpoint.enabled).is_(True),
                or_(
                    col(WebhookEndpoint.event_types).any(event_type),  # type: ignore[attr-defined]
                    col(WebhookEndpoint.event_types).any("*"),  # type: ignore[attr-defined]
                ),
            )
        )
    ).scalars()
    for endpoint in endpoints:
        delivery = WebhookDelivery(
            org_id=endpoint.org_id,
            endpoint_id=endpoint.id,
            event_id=event_id,
            event_type=event_type,
            payload=envelope,
            next_attempt_at=now,
        )
        session.add(delivery)
        await enqueue(session, DELIVER_JOB, str(delivery.id))
    return event_id
