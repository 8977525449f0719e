"""Background jobs of the settlement domain."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from coalition.platform.db import utcnow
from coalition.platform.jobs import JobContext, JobRegistry, TransientError, job_session
from coalition.platform.settings import get_settings
from coalition.settlement.gateway import (
    GatewayNotConfigured,
    GatewayUnavailable,
    SettlementGateway,
)
from coalition.settlement.services import payouts, reconciliation, statements, stripe_events
from coalition.settlement.stripe_gateway import StripeGateway

registry = JobRegistry("settlement")
log = structlog.get_logger(__name__)


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


def _scheduled_gateway(ctx: JobContext, job: str) -> SettlementGateway | None:
    """The gateway for a scheduled run, or None when Stripe is not configured: the schedule
    then skips (with a warning) instead of failing every few minutes. A payout asked for
    explicitly (`pay_statement`) still fails loudly."""
    try:
        return _gateway(ctx)
    except GatewayNotConfigured:
        log.warning("stripe_not_configured", job=job)
        return None


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
    gateway = _scheduled_gateway(ctx, "pay_approved_statements")
    if gateway is None:
        return 0
    async with job_session(ctx) as session:
        return await payouts.pay_approved(session, gateway)


registry.cron(pay_approved_statements, minute={7, 37}, second=0)


@registry.job(timeout=600)
async def ingest_stripe_events(ctx: JobContext) -> int:
    """The webhook backstop: handle Stripe events after the stored cursor; the number new."""
    gateway = _scheduled_gateway(ctx, "ingest_stripe_events")
    if gateway is None:
        return 0
    async with job_session(ctx) as session:
        return await stripe_events.poll_events(session, gateway)


registry.cron(ingest_stripe_events, minute=set(range(0, 60, 5)), second=30)


@contextmanager
def _retried_while_stripe_is_unavailable() -> Iterator[None]:
    """Stripe did not answer: the job is tried again later, with backoff."""
    try:
        yield
    except GatewayUnavailable as exc:
        raise TransientError(exc.message) from exc


@registry.job(timeout=3600)
async def reconcile(ctx: JobContext, run_id: str) -> int:
    """Execute one reconciliation run (asked for through the API); its discrepancies.
    Idempotent and safe concurrently (see `settlement/services/reconciliation.py`); Stripe
    not answering is retried with backoff."""
    async with job_session(ctx) as session:
        try:
            gateway = _gateway(ctx)
        except GatewayNotConfigured as exc:  # asked for explicitly: fail loudly
            await reconciliation.fail(session, uuid.UUID(run_id), exc)
            raise
        with _retried_while_stripe_is_unavailable():
            run = await reconciliation.execute(session, gateway, uuid.UUID(run_id))
        return run.discrepancies


@registry.job(timeout=3600)
async def reconcile_previous_day(ctx: JobContext) -> int:
    """The daily run: the UTC day before; its discrepancies."""
    gateway = _scheduled_gateway(ctx, "reconcile_previous_day")
    if gateway is None:
        return 0
    async with job_session(ctx) as session:
        with _retried_while_stripe_is_unavailable():
            run = await reconciliation.reconcile_previous_day(session, gateway)
        return run.discrepancies


# Early in the UTC day: late webhooks and the event backstop have had an hour.
registry.cron(reconcile_previous_day, hour=1, minute=10, second=0)
