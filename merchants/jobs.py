"""Background jobs of the merchants domain."""

from __future__ import annotations

import uuid

from coalition.merchants.services import identity, webhook_delivery
from coalition.platform.jobs import JobContext, JobRegistry, job_session

registry = JobRegistry("merchants")


@registry.job()
async def purge_expired_refresh_tokens(ctx: JobContext) -> int:
    """Delete refresh tokens that expired more than a day ago; returns how many went."""
    async with job_session(ctx) as session:
        return await identity.purge_expired_refresh_tokens(session)


registry.cron(purge_expired_refresh_tokens, minute=17, second=0)


@registry.job()
async def deliver_webhook(ctx: JobContext, delivery_id: str) -> str:
    """Make one signed attempt of a webhook delivery; a failure schedules the next attempt."""
    async with job_session(ctx) as session:
        return await webhook_delivery.deliver(
            session,
            ctx["settings"],
            uuid.UUID(delivery_id),
            job_id=str(ctx.get("job_id") or ""),
        )
