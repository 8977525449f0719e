"""A real `coalition worker` process killed (SIGKILL, its whole process group) after Stripe made
the café's transfer and before the worker's transaction committed: the hold stays committed and
the statement unpaid; a fresh worker adopts the transfer Stripe made, so the statement is paid
once, the money in transit is back to zero and the window reconciles to nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from arq.connections import RedisSettings, create_pool

from coalition.platform import jobs as platform_jobs
from coalition.platform.db import SessionMaker
from coalition.platform.jobs import JobDispatcher
from coalition.platform.settings import Settings
from coalition.settlement.gateway import statement_transfer_group
from coalition.settlement.simulator import SimulatorServer
from coalition.settlement.simulator.control import SimulatorControl
from coalition.settlement.stripe_gateway import StripeGateway
from tests.integration.campaign_helpers import Staff
from tests.integration.stripe_helpers import API_KEY, eventually
from tests.integration.test_payouts import approved_week, link_accounts, org_clearing, statement
from tests.integration.test_reconciliation import latest_attempt, reconcile, this_hour
from tests.integration.test_statements import Books, Client, books

__all__ = ["books"]  # a fixture

WORKER_STARTS_WITHIN = 60.0


@contextmanager
def worker_process(
    settings: Settings, stripe: SimulatorServer, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`coalition worker` in its own process group against the test's database, Redis and
    Stripe simulator. Killed (the whole group) when the block ends."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url or "",
        "COALITION_ENVIRONMENT": "test",
        "COALITION_LOG_LEVEL": "INFO",
        "COALITION_STRIPE_API_KEY": API_KEY,
        "COALITION_STRIPE_API_BASE": stripe.url,
    }
    with log.open("a") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "coalition.platform.cli", "worker"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole
        )
        try:
            yield worker
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


async def queue_payout(settings: Settings, sessionmaker: SessionMaker, statement_id: str) -> None:
    """Record the statement's pay job and hand it to Redis after the commit, as the API does."""
    queue = await create_pool(RedisSettings.from_dsn(settings.redis_url or ""))
    try:
        async with sessionmaker() as session:
            session.info["dispatcher"] = JobDispatcher(queue, sessionmaker)
            await platform_jobs.enqueue(session, "pay_statement", statement_id)
            await platform_jobs.commit(session)
        await platform_jobs.drain_dispatches()
    finally:
        await queue.aclose()


async def test_a_worker_killed_after_the_transfer_and_a_fresh_worker_pay_exactly_once(
    client: Client,
    books: Books,
    settings: Settings,
    sessionmaker: SessionMaker,
    stripe_server: SimulatorServer,
    gateway: StripeGateway,
    simulator: SimulatorControl,
    tmp_path: Path,
) -> None:
    await link_accounts(sessionmaker, books, gateway, simulator)
    cafe = (await approved_week(client, books, sessionmaker))["cafe"]
    cafe_id, net = str(cafe["id"]), int(str(cafe["net"]))
    group = statement_transfer_group(cafe_id)
    log = tmp_path / "worker.log"

    async def transfers() -> list[int]:
        return [t.amount for t in await gateway.find_transfers(transfer_group=group)]

    # Stripe makes the transfer, then never answers: the worker waits inside the call.
    await simulator.add_fault("/v1/transfers", method="POST", mode="hang", count=1)
    with worker_process(settings, stripe_server, log) as worker:
        await queue_payout(settings, sessionmaker, cafe_id)

        async def transfer_made() -> bool:
            return await transfers() == [net]

        await eventually(transfer_made, within=WORKER_STARTS_WITHIN)
        assert [f["hits"] for f in await simulator.faults()] == [1]
        assert worker.poll() is None, log.read_text()  # still waiting for Stripe's answer
        os.killpg(worker.pid, signal.SIGKILL)
        assert worker.wait() == -signal.SIGKILL

    attempt = await latest_attempt(sessionmaker, cafe_id)
    assert (attempt.status, attempt.stripe_id) == ("in_flight", None), log.read_text()
    assert (await statement(sessionmaker, cafe_id)).status == "approved"
    # The hold was committed before the call: the money is in transit.
    assert await org_clearing(sessionmaker, books.cafe, "payout_clearing") == -net

    with worker_process(settings, stripe_server, log):
        await queue_payout(settings, sessionmaker, cafe_id)

        async def paid() -> bool:
            return (await statement(sessionmaker, cafe_id)).status == "paid"

        await eventually(paid, within=WORKER_STARTS_WITHIN)

    assert await transfers() == [net]  # exactly one transfer for the statement
    [transfer] = await gateway.find_transfers(transfer_group=group)
    paid_statement = await statement(sessionmaker, cafe_id)
    assert paid_statement.settlement_reference == transfer.id
    retried = await latest_attempt(sessionmaker, cafe_id)
    assert (retried.id, retried.status, retried.stripe_id) == (
        attempt.id,
        "succeeded",
        transfer.id,
    )
    assert await org_clearing(sessionmaker, books.cafe, "payout_clearing") == 0
    run = await reconcile(client, Staff(client), sessionmaker, gateway, this_hour())
    assert run["discrepancies"] == 0
