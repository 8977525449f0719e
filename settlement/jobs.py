"""Background jobs of the settlement domain."""

from __future__ import annotations

import uuid

from coalition.platform.db import utcnow
from coalition.platform.jobs import JobContext, JobRegistry, job_session
from coalition.platform.settings import get_settings
from coalition.settlement.gateway import SettlementGateway
from coalition.settlement.services import payouts, statements, stripe_events
from coalition.settlement.stripe_gateway import StripeGateway

registry = JobRegistry("settlement")


@registry.job(timeout=3600)
async def close_due_statements(ctx: JobContext) -> int:
    """Close every statement whose period has ended and that has entries, series by series
    in period order. Idempotent and safe to run twice or concurrently: closes of one series
    are serialized by a lock and a closed statement is never closed again."""
    async with job_session(ctx) as session:
        return await statements.close_due(session, utcnow())


# Periods end at local midnights in every organization's time zone (some on the half hour):
# look every 15 minutes.
registry.cron(close_due_statements, minute={2, 17, 32, 47}, second=0)


def _gateway(ctx: JobContext) -> SettlementGateway:
    """The worker's gateway (`ctx["settlement_gateway"]`), else one from the settings."""
    gateway: SettlementGateway | None = ctx.get("settlement_gateway")
    if gateway is None:
        gateway = StripeGateway.from_settings(get_settings())
        ctx["settlement_gateway"] = gateway
    return gateway


@registry.job(timeout=600)
async def pay_statement(ctx: JobContext, statement_id: str) -> str | None:
    """Pay or collect one approved statement; the attempt's status (None: nothing sent to
    Stripe). Idempotent and safe concurrently: see `settlement/services/payouts.py`."""
    async with job_session(ctx) as session:
        attempt = await payouts.pay_statement(session, _gateway(ctx), uuid.UUID(statement_id))
        return attempt.status if attempt else None


@registry.job(timeout=3600)
async def pay_approved_statements(ctx: JobContext) -> int:
    """Pay or collect every approved statement; the number settled by this run."""
    async with job_session(ctx) as session:
        return await payouts.pay_approved(session, _gateway(ctx))


registry.cron(pay_approved_statements, minute={7, 37}, second=0)


@registry.job(timeout=600)
async def ingest_stripe_events(ctx: JobContext) -> int:
    """The webhook backstop: handle Stripe events after the stored cursor; the number new."""
    async with job_session(ctx) as session:
        return await stripe_events.poll_events(session, _gateway(ctx))


registry.cron(ingest_stripe_events, minute=set(range(0, 60, 5)), second=30)
