"""Background jobs of the settlement domain."""

from __future__ import annotations

from coalition.platform.db import utcnow
from coalition.platform.jobs import JobContext, JobRegistry, job_session
from coalition.settlement.services import statements

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
