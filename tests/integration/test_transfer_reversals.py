"""A transfer Stripe reverses: the ledger's mirror entry, once per reversal, in the event's
transaction; the statement back to approved; what was taken back paid again by the next
attempt. Through signed webhooks (delivered twice), the polling backstop, and concurrent
handling, against real PostgreSQL and the Stripe simulator."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func
from sqlmodel import col, select

from coalition.platform.db import SessionMaker
from coalition.settlement import jobs
from coalition.settlement.gateway import Transfer, TransferRequest, statement_transfer_group
from coalition.settlement.models import JournalEntry, PayoutAttempt, PayoutReversal, StripeEvent
from coalition.settlement.services import payouts, stripe_events
from coalition.settlement.simulator import SimulatorServer
from coalition.settlement.simulator.control import SimulatorControl
from coalition.settlement.stripe_gateway import StripeGateway
from tests.integration.stripe_helpers import API_KEY, SignedWebhooks, forward_webhooks
from tests.integration.test_payouts import org_clearing, paid_cafe, statement
from tests.integration.test_statements import Books, Client, books

__all__ = ["books"]  # a fixture


async def reversals_of(sessionmaker: SessionMaker, statement_id: uuid.UUID) -> list[int]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(PayoutReversal).where(col(PayoutReversal.statement_id) == statement_id)
        )
        return sorted(r.amount for r in rows.scalars())


async def mirror_entries(sessionmaker: SessionMaker) -> int:
    async with sessionmaker() as session:
        found = await session.execute(
            select(func.count())
            .select_from(JournalEntry)
            .where(col(JournalEntry.idempotency_key).like("payout:%:reversal:%"))
        )
        return int(found.scalar_one())


async def test_a_full_reversal_delivered_twice_is_recorded_once_and_paid_again(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    signed_webhooks: SignedWebhooks,
) -> None:
    verifier, receiver = signed_webhooks.gateway, signed_webhooks.receiver
    attempt = await paid_cafe(client, books, sessionmaker, simulator, verifier)
    net = attempt.amount
    await simulator.webhook_fault("duplicate", event_type="transfer.reversed")
    await verifier.reverse_transfer(str(attempt.stripe_id), idempotency_key="reverse-all")
    await simulator.flush_webhooks()
    assert await forward_webhooks(client, receiver, "transfer.reversed") == [False, True]

    assert await reversals_of(sessionmaker, attempt.statement_id) == [net]
    assert await mirror_entries(sessionmaker) == 1
    reopened = await statement(sessionmaker, attempt.statement_id)
    assert (reopened.status, reopened.settlement_reference) == ("approved", None)
    assert await org_clearing(sessionmaker, books.cafe, "cash") == 0  # the money came back

    ctx = {"sessionmaker": sessionmaker, "dispatcher": None, "settlement_gateway": verifier}
    assert await jobs.pay_statement(ctx, str(attempt.statement_id)) == "succeeded"
    async with sessionmaker() as session:
        attempts = (
            await session.execute(select(PayoutAttempt).order_by(col(PayoutAttempt.generation)))
        ).scalars()
        assert [(a.generation, a.status, a.amount) for a in attempts] == [
            (1, "reversed", net),
            (2, "succeeded", net),
        ]
    paid = await statement(sessionmaker, attempt.statement_id)
    assert paid.status == "paid" and paid.settlement_reference != attempt.stripe_id
    assert await org_clearing(sessionmaker, books.cafe, "cash") == -net
    transfers = await verifier.find_transfers(
        transfer_group=statement_transfer_group(attempt.statement_id)
    )
    assert sorted((t.amount, t.amount_reversed) for t in transfers) == [(net, 0), (net, net)]


async def test_a_partial_reversal_seen_only_by_the_backstop_pays_back_the_part(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    gateway: StripeGateway,
) -> None:
    attempt = await paid_cafe(client, books, sessionmaker, simulator, gateway)
    net, part = attempt.amount, 1_234
    await gateway.reverse_transfer(str(attempt.stripe_id), amount=part, idempotency_key="r-1")

    ctx = {"sessionmaker": sessionmaker, "dispatcher": None, "settlement_gateway": gateway}
    assert await jobs.ingest_stripe_events(ctx) == 1
    assert await reversals_of(sessionmaker, attempt.statement_id) == [part]
    assert await org_clearing(sessionmaker, books.cafe, "cash") == -(net - part)
    assert (await statement(sessionmaker, attempt.statement_id)).status == "approved"

    for _ in range(2):  # the second run finds it paid
        assert await jobs.pay_statement(ctx, str(attempt.statement_id)) == "succeeded"
    async with sessionmaker() as session:
        second = (
            await session.execute(
                select(PayoutAttempt).where(
                    col(PayoutAttempt.statement_id) == attempt.statement_id,
                    col(PayoutAttempt.generation) == 2,
                )
            )
        ).scalar_one()
    assert (second.amount, second.status) == (part, "succeeded")
    assert await org_clearing(sessionmaker, books.cafe, "cash") == -net
    assert await org_clearing(sessionmaker, books.carrier, "payout_clearing") == 0
    transfers = await gateway.find_transfers(
        transfer_group=statement_transfer_group(attempt.statement_id)
    )
    # What Stripe moved, less what it took back, is the statement's net: nothing twice.
    assert sum(t.amount - t.amount_reversed for t in transfers) == net


async def test_events_of_two_reversals_handled_concurrently_record_each_once(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    gateway: StripeGateway,
) -> None:
    attempt = await paid_cafe(client, books, sessionmaker, simulator, gateway)
    await gateway.reverse_transfer(str(attempt.stripe_id), amount=100, idempotency_key="r-1")
    await gateway.reverse_transfer(str(attempt.stripe_id), amount=200, idempotency_key="r-2")
    events = await gateway.list_events(types=["transfer.reversed"])
    assert len(events) == 2  # the second lists both reversals

    async def handle(event_index: int, source: str) -> bool:
        async with sessionmaker() as session:
            return await stripe_events.handle_event(session, events[event_index], source=source)

    handled = await asyncio.gather(
        *(handle(i, source) for i in (0, 1) for source in ("webhook", "poll", "webhook"))
    )
    assert sorted(handled) == [False] * 4 + [True] * 2
    assert await reversals_of(sessionmaker, attempt.statement_id) == [100, 200]
    assert await mirror_entries(sessionmaker) == 2
    async with sessionmaker() as session:
        assert len((await session.execute(select(StripeEvent))).scalars().all()) == 2
    assert await org_clearing(sessionmaker, books.cafe, "cash") == -(attempt.amount - 300)


async def test_a_reversal_while_the_repayment_is_in_flight_is_paid_by_the_next_generation(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    stripe_server: SimulatorServer,
    simulator: SimulatorControl,
    gateway: StripeGateway,
) -> None:
    attempt = await paid_cafe(client, books, sessionmaker, simulator, gateway)
    first = str(attempt.stripe_id)
    await gateway.reverse_transfer(first, amount=1_000, idempotency_key="r-1")
    ctx = {"sessionmaker": sessionmaker, "dispatcher": None, "settlement_gateway": gateway}
    assert await jobs.ingest_stripe_events(ctx) == 1

    class ReversedMeanwhile(StripeGateway):
        """While the repayment is being made, Stripe takes back more of the first transfer
        and the event is handled (its own transaction)."""

        async def create_transfer(self, request: TransferRequest) -> Transfer:
            await gateway.reverse_transfer(first, amount=400, idempotency_key="r-2")
            assert await jobs.ingest_stripe_events(ctx) == 1
            return await super().create_transfer(request)

    meanwhile = ReversedMeanwhile(API_KEY, api_base=stripe_server.url)
    try:
        async with sessionmaker() as session:
            repaid = await payouts.pay_statement(session, meanwhile, attempt.statement_id)
    finally:
        await meanwhile.aclose()
    assert repaid is not None and (repaid.generation, repaid.amount) == (2, 1_000)
    # Paid, but 400 more was taken back meanwhile: approved again, for generation 3.
    assert (await statement(sessionmaker, attempt.statement_id)).status == "approved"
    assert await jobs.pay_statement(ctx, str(attempt.statement_id)) == "succeeded"
    async with sessionmaker() as session:
        rows = await session.execute(
            select(PayoutAttempt).where(col(PayoutAttempt.statement_id) == attempt.statement_id)
        )
        assert sorted((a.generation, a.amount, a.status) for a in rows.scalars()) == [
            (1, attempt.amount, "reversed"),
            (2, 1_000, "succeeded"),
            (3, 400, "succeeded"),
        ]
    assert (await statement(sessionmaker, attempt.statement_id)).status == "paid"
    assert await org_clearing(sessionmaker, books.cafe, "cash") == -attempt.amount
    transfers = await gateway.find_transfers(
        transfer_group=statement_transfer_group(attempt.statement_id)
    )
    assert sum(t.amount - t.amount_reversed for t in transfers) == attempt.amount
