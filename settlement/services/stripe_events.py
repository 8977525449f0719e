"""Stripe events, from signed webhooks and from the polling backstop, through one handler.

`receive_webhook` verifies the raw body's `Stripe-Signature` through the gateway; `poll_events`
lists the events after a stored cursor. Both call `handle_event`, which records the event id in
`stripe_event` first (a unique key: an event delivered twice, or both pushed and polled, is
handled once) and, in the same transaction, moves statuses:

- `transfer.reversed`: each reversal the transfer lists is recorded once, with its ledger
  entry, the attempt `reversed` and its statement back to `approved` to be paid again
  (`payouts.record_reversal`);
- `payment_intent.succeeded`: a `processing` collection is posted and its statement collected;
- `payment_intent.payment_failed`: a `processing` collection fails and its hold is released;
- `account.updated`: the connected account's onboarding status.

Any other event type is recorded as ignored.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.platform.db import utcnow
from coalition.platform.errors import ValidationFailed
from coalition.settlement.gateway import GatewayEvent, SettlementGateway, WebhookSignatureInvalid
from coalition.settlement.models import (
    PayoutAttempt,
    StripeAccount,
    StripeEvent,
    StripeEventCursor,
)
from coalition.settlement.services import payouts
from coalition.settlement.stripe_gateway import transfer_from_json

POLL_CURSOR = "events"
POLLED_TYPES = (
    "transfer.reversed",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "account.updated",
)


class WebhookSignatureRejected(ValidationFailed):
    code, title = "webhook_signature_invalid", "The webhook's signature does not verify"


async def _attempt_by_stripe_id(session: AsyncSession, stripe_id: str) -> PayoutAttempt | None:
    row = await session.execute(
        select(PayoutAttempt)
        .where(col(PayoutAttempt.stripe_id) == stripe_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return row.scalars().first()


async def _apply(session: AsyncSession, event: GatewayEvent, now: datetime) -> str:
    obj = event.object
    object_id = str(obj.get("id", ""))
    if event.type == "transfer.reversed":
        attempt = await _attempt_by_stripe_id(session, object_id)
        if attempt is None:
            return "unknown transfer"
        recorded = [
            reversal.id
            for reversal in transfer_from_json(obj).reversals
            if await payouts.record_reversal(session, attempt, reversal, now)
        ]
        return f"attempt {attempt.id} {attempt.status}; recorded {', '.join(recorded) or '-'}"
    if event.type in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        attempt = await _attempt_by_stripe_id(session, object_id)
        if attempt is None:
            return "unknown payment intent"
        if attempt.status == "processing":
            if event.type == "payment_intent.succeeded":
                await payouts.finish_attempt(session, attempt, object_id, now)
            else:
                error = obj.get("last_payment_error") or {}
                await payouts.fail_attempt(
                    session,
                    attempt,
                    now,
                    code=str(error.get("code") or "payment_failed"),
                    message=str(error.get("message") or ""),
                )
        return f"attempt {attempt.id} {attempt.status}"
    if event.type == "account.updated":
        row = await session.execute(
            select(StripeAccount)
            .where(col(StripeAccount.connected_account_id) == object_id)
            .with_for_update()
        )
        account = row.scalars().first()
        if account is None:
            return "unknown account"
        capabilities = obj.get("capabilities") or {}
        requirements = obj.get("requirements") or {}
        if capabilities.get("transfers") == "active" and obj.get("details_submitted"):
            account.onboarding_status = "complete"
        elif requirements.get("disabled_reason"):
            account.onboarding_status = "restricted"
        else:
            account.onboarding_status = "pending"
        account.updated_at = now
        return f"onboarding {account.onboarding_status}"
    return "ignored"


async def handle_event(
    session: AsyncSession, event: GatewayEvent, *, source: str, now: datetime | None = None
) -> bool:
    """Handle one event exactly once; False when it had been handled already. Commits."""
    now = now or utcnow()
    inserted = await session.execute(
        insert(StripeEvent)
        .values(
            id=event.id,
            type=event.type,
            source=source,
            outcome="",
            created=event.created,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(col(StripeEvent.id))
    )
    if inserted.scalar_one_or_none() is None:
        await session.rollback()
        return False
    outcome = await _apply(session, event, now)
    stored = await session.get_one(StripeEvent, event.id)
    stored.outcome = outcome[:200]
    await session.commit()
    return True


async def receive_webhook(
    session: AsyncSession, gateway: SettlementGateway, payload: bytes, signature: str | None
) -> tuple[str, bool]:
    """Verify and handle a webhook; (event id, whether it was new)."""
    try:
        event = gateway.verify_webhook(payload, signature)
    except WebhookSignatureInvalid as exc:
        raise WebhookSignatureRejected(exc.message, field="Stripe-Signature") from exc
    return event.id, await handle_event(session, event, source="webhook")


async def poll_events(session: AsyncSession, gateway: SettlementGateway) -> int:
    """The backstop: list the events after the stored cursor (the first run: the last day's)
    and handle them; the number that were new. Safe concurrently (handling is per event id,
    the cursor only moves forward under its row lock)."""
    cursor = await session.get(StripeEventCursor, POLL_CURSOR, populate_existing=True)
    after = cursor.event_id if cursor else None
    since = None if after else utcnow() - timedelta(days=1)
    await session.rollback()
    events = await gateway.list_events(after=after, since=since, types=POLLED_TYPES)
    handled = 0
    for event in events:
        handled += await handle_event(session, event, source="poll")
    if events:
        statement = (
            insert(StripeEventCursor)
            .values(name=POLL_CURSOR, event_id=events[-1].id, updated_at=utcnow())
            .on_conflict_do_update(
                index_elements=["name"],
                set_={"event_id": events[-1].id, "updated_at": utcnow()},
            )
        )
        await session.execute(statement)
        await session.commit()
    return handled
