"""Background jobs of the campaigns domain."""

from __future__ import annotations

import uuid

from coalition.campaigns.services import coupons, customers, issuance, online, workflow
from coalition.platform.db import utcnow
from coalition.platform.jobs import JobContext, JobRegistry, job_session

registry = JobRegistry("campaigns")


@registry.job()
async def start_and_end_campaigns(ctx: JobContext) -> dict[str, int]:
    """Activate approved campaigns whose start time has come, end those whose end time has
    passed (one transaction per campaign; idempotent)."""
    now = utcnow()
    async with job_session(ctx) as session:
        activated = await workflow.activate_due(session, now)
        ended = await workflow.end_due(session, now)
    return {"activated": activated, "ended": ended}


registry.cron(start_and_end_campaigns, second=0)  # every minute


@registry.job()
async def expire_coupons(ctx: JobContext) -> int:
    """Expire coupons past their validity, and every unused coupon of an ended campaign,
    handing their reservations back to the budgets (batch by batch; idempotent)."""
    expired = 0
    async with job_session(ctx) as session:
        while batch := await coupons.expire_due(session, utcnow()):
            expired += batch
        for campaign_id in await coupons.ended_with_open_coupons(session):
            while batch := await coupons.expire_due(session, utcnow(), ended_campaign=campaign_id):
                expired += batch
    return expired


@registry.job(timeout=3600)
async def issue_batch(ctx: JobContext, batch_id: str) -> dict[str, object]:
    """Issue a bulk batch chunk by chunk (a rerun resumes without duplicates or gaps)."""
    async with job_session(ctx) as session:
        progress = await issuance.issue_batch(session, uuid.UUID(batch_id))
    return progress.as_dict()


@registry.job()
async def purge_expired_otps(ctx: JobContext) -> int:
    async with job_session(ctx) as session:
        return await customers.purge_expired_otps(session)


registry.cron(expire_coupons, second=30)  # every minute, between the campaign starts and ends
registry.cron(purge_expired_otps, hour=3, minute=41, second=0)


@registry.job()
async def release_expired_hold(ctx: JobContext, hold_id: str) -> bool:
    """Release one online hold at its expiry (enqueued with the hold; idempotent)."""
    async with job_session(ctx) as session:
        return await online.expire_hold(session, uuid.UUID(hold_id), utcnow())


@registry.job()
async def release_expired_holds(ctx: JobContext) -> int:
    """Release every online hold past its expiry (the sweep behind the per-hold jobs)."""
    async with job_session(ctx) as session:
        return await online.expire_due(session, utcnow())


registry.cron(release_expired_holds, second=45)  # every minute
