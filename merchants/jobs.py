"""Background jobs of the merchants domain."""

from __future__ import annotations

from coalition.merchants.services import identity
from coalition.platform.jobs import JobContext, JobRegistry, job_session

registry = JobRegistry("merchants")


@registry.job()
async def purge_expired_refresh_tokens(ctx: JobContext) -> int:
    """Delete refresh tokens that expired more than a day ago; returns how many went."""
    async with job_session(ctx) as session:
        return await identity.purge_expired_refresh_tokens(session)


registry.cron(purge_expired_refresh_tokens, minute=17, second=0)
