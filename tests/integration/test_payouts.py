"""Payouts and collections of approved statements through the settlement gateway, against real
PostgreSQL and the Stripe simulator over HTTP: the full cycle (transfer, collection, the
carrier's own statement), the ledger hold and posting, and the faults: an answer dropped after
Stripe did the transfer, a 500 then success, and concurrent jobs for one statement."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from litestar import Litestar
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from coalition.campaigns import codes
from coalition.campaigns.models import Coupon, Redemption
from coalition.campaigns.services.redemptions import funding_to_json
from coalition.platform.db import SessionMaker
from coalition.platform.settings import Settings
from coalition.settlement import jobs
from coalition.settlement.domain import FundingShare, RedemptionFunding
from coalition.settlement.gateway import GatewayNotConfigured, statement_transfer_group
from coalition.settlement.models import (
    JournalEntry,
    LedgerAccount,
    LedgerPosting,
    PayoutAttempt,
    Statement,
    StripeAccount,
    StripeEvent,
)
from coalition.settlement.services import ledger, payouts
from coalition.settlement.simulator import SimulatorServer
from coalition.settlement.simulator.control import SimulatorControl
from coalition.settlement.stripe_gateway import StripeGateway
from tests.integration.campaign_helpers import Staff
from tests.integration.stripe_helpers import WebhookReceiver, make_gateway, onboarded_account
from tests.integration.test_statements import (
    CARRIER_FINANCE,
    IN_WEEK1,
    WEEK1,
    Books,
    Client,
    books,
    close,
)

__all__ = ["books"]  # a fixture


def three_way(books: Books, discount: int) -> RedemptionFunding:
    """Redeemed at the café; the carrier funds 40 %, the bank 40 %, the café 20 %."""
    return RedemptionFunding(
        discount=discount,
        currency="CNY",
        redeeming_org_id=books.cafe,
        owner_org_id=books.carrier,
        carrier_org_id=books.carrier,
        funders=(
            FundingShare(books.carrier, 4000),
            FundingShare(books.bank, 4000),
            FundingShare(books.cafe, 2000),
        ),
        fee_bp=books.fee_bp,
    )


async def redeem(
    sessionmaker: SessionMaker, books: Books, discount: int, at: datetime
) -> uuid.UUID:
    split = three_way(books, discount)
    async with sessionmaker() as session:
        coupon = Coupon(
            campaign_id=books.campaign,
            code=codes.new_code(),
            status="redeemed",
            valid_from=at - timedelta(days=1),
            valid_until=at + timedelta(days=7),
            redeemed_at=at,
        )
        session.add(coupon)
        await session.flush()
        redemption = Redemption(
            campaign_id=books.campaign,
            coupon_id=coupon.id,
            org_id=books.cafe,
            store_id=books.store,
            currency="CNY",
            basket_amount=discount * 5,
            discount=discount,
            funding=funding_to_json(split),
            redeemed_at=at,
        )
        session.add(redemption)
        await session.flush()
        await ledger.post_redemption(
            session,
            redemption_id=redemption.id,
            funding=split,
            occurred_at=at,
            campaign_id=books.campaign,
        )
        await session.commit()
        return redemption.id


async def reverse(
    sessionmaker: SessionMaker, books: Books, redemption_id: uuid.UUID, discount: int, now: int
) -> None:
    async with sessionmaker() as session:
        await ledger.post_reversal(
            session,
            redemption_id=redemption_id,
            reversal_id=uuid.uuid4(),
            funding=three_way(books, discount),
            reversed_before=0,
            reversing_now=now,
            occurred_at=IN_WEEK1,
            campaign_id=books.campaign,
        )
        await session.commit()


async def approved_week(
    client: Client, books: Books, sessionmaker: SessionMaker
) -> dict[str, dict[str, object]]:
    """Redemptions and a reversal in week 1, closed and approved for all three organizations."""
    first = await redeem(sessionmaker, books, 20_000, IN_WEEK1)
    await redeem(sessionmaker, books, 15_000, IN_WEEK1)
    await reverse(sessionmaker, books, first, 20_000, 5_000)
    staff = Staff(client)
    headers = await staff(CARRIER_FINANCE)
    closed: dict[str, dict[str, object]] = {}
    for name, org in (("cafe", books.cafe), ("bank", books.bank), ("carrier", books.carrier)):
        response = await close(client, headers, org, WEEK1)
        assert response.status_code == 200, response.text
        approved = await client.post(
            f"/api/v1/statements/{response.json()['id']}/approve", headers=headers
        )
        assert approved.json()["status"] == "approved", approved.text
        closed[name] = approved.json()
    return closed


async def link_accounts(
    sessionmaker: SessionMaker,
    books: Books,
    gateway: StripeGateway,
    simulator: SimulatorControl,
    *,
    bank_card: str | None = "pm_card_visa",
) -> str:
    """The café's onboarded connected account, the bank's customer with a saved card, and
    platform balance to pay from. The café's account id."""
    account = await onboarded_account(gateway, simulator, "cafe")
    async with sessionmaker() as session:
        session.add(
            StripeAccount(
                org_id=books.cafe, connected_account_id=account.id, onboarding_status="complete"
            )
        )
        customer = await gateway.create_customer(idempotency_key="customer-bank", name="Bank")
        method = await gateway.attach_payment_method(customer, bank_card) if bank_card else None
        session.add(
            StripeAccount(org_id=books.bank, customer_id=customer, payment_method_id=method)
        )
        await session.commit()
    await simulator.top_up(10_000_000, "cny")
    return account.id


async def statement(sessionmaker: SessionMaker, statement_id: object) -> Statement:
    async with sessionmaker() as session:
        return await session.get_one(Statement, uuid.UUID(str(statement_id)))


async def org_clearing(sessionmaker: SessionMaker, org_id: uuid.UUID, purpose: str) -> int:
    async with sessionmaker() as session:
        total = await session.execute(
            select(func.coalesce(func.sum(col(LedgerPosting.amount)), 0))
            .join(LedgerAccount, col(LedgerAccount.id) == col(LedgerPosting.account_id))
            .where(col(LedgerAccount.purpose) == purpose, col(LedgerPosting.org_id) == org_id)
        )
        return int(total.scalar_one())


async def stripe_transfers(gateway: StripeGateway, statement_id: object) -> list[int]:
    found = await gateway.find_transfers(transfer_group=statement_transfer_group(statement_id))
    return [t.amount for t in found]


async def test_a_week_is_paid_collected_and_settled_for_the_carrier_exactly_once(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> None:
    cafe_account = await link_accounts(sessionmaker, books, gateway, simulator)
    week = await approved_week(client, books, sessionmaker)
    cafe, bank, carrier = week["cafe"], week["bank"], week["carrier"]
    assert int(str(cafe["net"])) > 0 > int(str(bank["net"]))
    assert int(str(cafe["net"])) + int(str(bank["net"])) + int(str(carrier["net"])) == 0

    ctx = {"sessionmaker": sessionmaker, "dispatcher": None, "settlement_gateway": gateway}
    assert await jobs.pay_approved_statements(ctx) == 3
    assert await jobs.pay_approved_statements(ctx) == 0  # nothing approved is left

    paid = await statement(sessionmaker, cafe["id"])
    collected = await statement(sessionmaker, bank["id"])
    internal = await statement(sessionmaker, carrier["id"])
    assert paid.status == "paid" and paid.settlement_reference.startswith("tr_")  # type: ignore[union-attr]
    assert collected.status == "collected" and collected.settlement_reference.startswith("pi_")  # type: ignore[union-attr]
    assert (internal.status, internal.settlement_reference) == (
        "collected" if int(str(carrier["net"])) < 0 else "paid",
        f"carrier:{carrier['id']}",
    )
    # Stripe holds exactly one transfer of the café's net, to its account, naming the statement.
    [transfer] = await gateway.find_transfers(transfer_group=statement_transfer_group(cafe["id"]))
    assert (transfer.amount, transfer.currency, transfer.destination) == (
        cafe["net"],
        "CNY",
        cafe_account,
    )
    assert transfer.metadata["statement_id"] == cafe["id"]
    assert transfer.id == paid.settlement_reference
    # The ledger: no money left in transit; the café was paid its net, the bank paid its own.
    assert await org_clearing(sessionmaker, books.cafe, "payout_clearing") == 0
    assert await org_clearing(sessionmaker, books.carrier, "payout_clearing") == 0
    assert await org_clearing(sessionmaker, books.cafe, "cash") == -int(str(cafe["net"]))
    assert await org_clearing(sessionmaker, books.bank, "cash") == -int(str(bank["net"]))
    async with sessionmaker() as session:
        attempts = (await session.execute(select(PayoutAttempt))).scalars().all()
        kinds = (
            await session.execute(
                sa_select(col(JournalEntry.kind), func.count())
                .where(col(JournalEntry.kind).in_(["transfer", "collection"]))
                .group_by(col(JournalEntry.kind))
            )
        ).tuples()
        assert dict(list(kinds)) == {"transfer": 2, "collection": 2}  # a hold and a posting each
    assert sorted((a.direction, a.status, a.generation) for a in attempts) == [
        ("collection", "succeeded", 1),
        ("transfer", "succeeded", 1),
    ]


async def test_a_dropped_answer_then_a_retry_adopts_the_transfer_stripe_made(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    stripe_server: SimulatorServer,
    simulator: SimulatorControl,
    gateway: StripeGateway,
) -> None:
    await link_accounts(sessionmaker, books, gateway, simulator)
    cafe = (await approved_week(client, books, sessionmaker))["cafe"]
    cafe_id = uuid.UUID(str(cafe["id"]))
    impatient = make_gateway(stripe_server, max_network_retries=0)
    try:
        # Stripe makes the transfer, the answer never arrives: the crash case.
        await simulator.add_fault("/v1/transfers", method="POST", mode="drop", count=1)
        async with sessionmaker() as session:
            attempt = await payouts.pay_statement(session, impatient, cafe_id)
        assert attempt is not None and attempt.status == "in_flight"
        assert (await statement(sessionmaker, cafe_id)).status == "approved"
        # The hold is committed before the call: the money is in transit.
        assert await org_clearing(sessionmaker, books.cafe, "payout_clearing") == -int(
            str(cafe["net"])
        )
        assert await stripe_transfers(gateway, cafe_id) == [cafe["net"]]

        async with sessionmaker() as session:
            retried = await payouts.pay_statement(session, impatient, cafe_id)
        assert retried is not None and retried.status == "succeeded"
        assert (retried.generation, retried.tries) == (1, 2)
    finally:
        await impatient.aclose()
    assert await stripe_transfers(gateway, cafe_id) == [cafe["net"]]  # exactly one
    assert (await statement(sessionmaker, cafe_id)).settlement_reference == retried.stripe_id
    assert await org_clearing(sessionmaker, books.cafe, "payout_clearing") == 0


async def test_a_500_leaves_the_attempt_in_flight_and_the_next_run_pays_once(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    stripe_server: SimulatorServer,
    simulator: SimulatorControl,
    gateway: StripeGateway,
) -> None:
    await link_accounts(sessionmaker, books, gateway, simulator)
    cafe = (await approved_week(client, books, sessionmaker))["cafe"]
    cafe_id = uuid.UUID(str(cafe["id"]))
    impatient = make_gateway(stripe_server, max_network_retries=0)
    try:
        await simulator.add_fault("/v1/transfers", method="POST", mode="error", status=500)
        async with sessionmaker() as session:
            attempt = await payouts.pay_statement(session, impatient, cafe_id)
        assert attempt is not None and attempt.status == "in_flight"
        assert await stripe_transfers(gateway, cafe_id) == []
        async with sessionmaker() as session:
            attempt = await payouts.pay_statement(session, impatient, cafe_id)
        assert attempt is not None and attempt.status == "succeeded"
    finally:
        await impatient.aclose()
    assert await stripe_transfers(gateway, cafe_id) == [cafe["net"]]
    assert (await statement(sessionmaker, cafe_id)).status == "paid"


async def test_a_refused_transfer_releases_the_hold_and_the_next_generation_pays(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    stripe_server: SimulatorServer,
    simulator: SimulatorControl,
    gateway: StripeGateway,
) -> None:
    await link_accounts(sessionmaker, books, gateway, simulator)
    cafe = (await approved_week(client, books, sessionmaker))["cafe"]
    cafe_id = uuid.UUID(str(cafe["id"]))
    await simulator.add_fault("/v1/transfers", method="POST", mode="error", status=400)
    async with sessionmaker() as session:
        failed = await payouts.pay_statement(session, gateway, cafe_id)
    assert failed is not None and (failed.status, failed.generation) == ("failed", 1)
    assert await org_clearing(sessionmaker, books.cafe, "payout_clearing") == 0  # released
    async with sessionmaker() as session:
        paid = await payouts.pay_statement(session, gateway, cafe_id)
    assert paid is not None and (paid.status, paid.generation) == ("succeeded", 2)
    assert paid.idempotency_key != failed.idempotency_key
    assert await stripe_transfers(gateway, cafe_id) == [cafe["net"]]


async def test_concurrent_pay_jobs_for_one_statement_make_one_transfer(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    gateway: StripeGateway,
) -> None:
    await link_accounts(sessionmaker, books, gateway, simulator)
    cafe = (await approved_week(client, books, sessionmaker))["cafe"]

    async def run() -> str | None:
        ctx = {"sessionmaker": sessionmaker, "dispatcher": None, "settlement_gateway": gateway}
        return await jobs.pay_statement(ctx, str(cafe["id"]))

    results = await asyncio.gather(*(run() for _ in range(8)))
    assert results == ["succeeded"] * 8
    assert await stripe_transfers(gateway, cafe["id"]) == [cafe["net"]]
    async with sessionmaker() as session:
        count = await session.execute(select(func.count()).select_from(PayoutAttempt))
        assert count.scalar_one() == 1


async def test_a_debt_without_a_saved_payment_method_is_carried_forward(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    gateway: StripeGateway,
) -> None:
    await link_accounts(sessionmaker, books, gateway, simulator, bank_card=None)
    bank = (await approved_week(client, books, sessionmaker))["bank"]
    async with sessionmaker() as session:
        assert await payouts.pay_statement(session, gateway, uuid.UUID(str(bank["id"]))) is None
    assert (await statement(sessionmaker, bank["id"])).status == "carried_forward"


@pytest.fixture
def app_gateway(app: Litestar, gateway: StripeGateway) -> Iterator[StripeGateway]:
    app.state["settlement_gateway"] = gateway
    yield gateway
    app.state.pop("settlement_gateway", None)


async def test_finance_lists_and_retries_payouts_and_other_organizations_get_404(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    app_gateway: StripeGateway,
) -> None:
    await link_accounts(sessionmaker, books, app_gateway, simulator)
    week = await approved_week(client, books, sessionmaker)
    cafe_id = str(week["cafe"]["id"])
    await simulator.add_fault("/v1/transfers", method="POST", mode="error", status=400)
    async with sessionmaker() as session:
        await payouts.pay_statement(session, app_gateway, uuid.UUID(cafe_id))
    staff = Staff(client)

    own = await client.get(
        "/api/v1/payouts",
        params={"statement_id": cafe_id},
        headers=await staff("finance@cafe.test"),
    )
    assert own.status_code == 200, own.text
    [failed] = own.json()["items"]
    assert (failed["status"], failed["generation"]) == ("failed", 1)
    assert failed["amount"] == week["cafe"]["net"] and failed["failure_code"]
    bank_view = await client.get(
        f"/api/v1/payouts/{failed['id']}", headers=await staff("finance@bank.test")
    )
    assert bank_view.status_code == 404 and bank_view.json()["code"] == "payout_not_found"
    assert (await client.get("/api/v1/payouts", headers=await staff("finance@bank.test"))).json()[
        "total"
    ] == 0
    cashier = await client.post(
        f"/api/v1/payouts/{failed['id']}/retry", headers=await staff("cashier@cafe.test")
    )
    assert cashier.status_code == 403

    retried = await client.post(
        f"/api/v1/payouts/{failed['id']}/retry", headers=await staff(CARRIER_FINANCE)
    )
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["generation"]) == ("succeeded", 2)
    again = await client.post(
        f"/api/v1/payouts/{retried.json()['id']}/retry", headers=await staff(CARRIER_FINANCE)
    )
    assert again.json()["id"] == retried.json()["id"]
    assert await stripe_transfers(app_gateway, cafe_id) == [week["cafe"]["net"]]


async def test_a_merchant_admin_creates_its_connected_account_once_and_gets_a_link(
    client: Client, books: Books, sessionmaker: SessionMaker, app_gateway: StripeGateway
) -> None:
    staff = Staff(client)
    body = {"refresh_url": "https://cafe.test/refresh", "return_url": "https://cafe.test/done"}
    url = f"/api/v1/organizations/{books.cafe}/stripe-account"
    first = await client.post(url, json=body, headers=await staff("admin@cafe.test"))
    assert first.status_code == 200, first.text
    assert first.json()["connected_account_id"].startswith("acct_")
    assert first.json()["onboarding_status"] == "pending"
    assert first.json()["onboarding_url"].startswith("http")
    second = await client.post(url, json=body, headers=await staff("admin@cafe.test"))
    assert second.json()["connected_account_id"] == first.json()["connected_account_id"]
    other = await client.post(url, json=body, headers=await staff("admin@bank.test"))
    assert other.status_code == 404
    finance = await client.post(url, json=body, headers=await staff("finance@cafe.test"))
    assert finance.status_code == 403
    async with sessionmaker() as session:
        stored = await session.get_one(StripeAccount, books.cafe)
        assert stored.connected_account_id == first.json()["connected_account_id"]


# --- Stripe events: webhooks and the polling backstop ------------------------------------------


async def paid_cafe(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    gateway: StripeGateway,
) -> PayoutAttempt:
    await link_accounts(sessionmaker, books, gateway, simulator)
    cafe = (await approved_week(client, books, sessionmaker))["cafe"]
    async with sessionmaker() as session:
        attempt = await payouts.pay_statement(session, gateway, uuid.UUID(str(cafe["id"])))
    assert attempt is not None and attempt.status == "succeeded" and attempt.stripe_id
    return attempt


async def attempt_status(sessionmaker: SessionMaker, attempt_id: uuid.UUID) -> str:
    async with sessionmaker() as session:
        return (await session.get_one(PayoutAttempt, attempt_id)).status


async def test_a_webhook_delivered_twice_moves_the_payout_once_and_bad_signatures_are_refused(
    client: Client,
    app: Litestar,
    books: Books,
    sessionmaker: SessionMaker,
    stripe_server: SimulatorServer,
    simulator: SimulatorControl,
    webhook_receiver: tuple[str, WebhookReceiver],
) -> None:
    url, receiver = webhook_receiver
    endpoint = await simulator.register_webhook_endpoint(url, enabled_events=["transfer.reversed"])
    verifier = make_gateway(stripe_server, webhook_secret=str(endpoint["secret"]))
    app.state["settlement_gateway"] = verifier
    try:
        attempt = await paid_cafe(client, books, sessionmaker, simulator, verifier)
        await simulator.webhook_fault("duplicate", event_type="transfer.reversed")
        await verifier.reverse_transfer(str(attempt.stripe_id), idempotency_key="reverse-1")
        await simulator.flush_webhooks()
        deliveries = [r for r in receiver.received if b"transfer.reversed" in r.body]
        assert len(deliveries) == 2 and deliveries[0].body == deliveries[1].body

        answers = []
        for delivery in deliveries:  # what Stripe sent, byte for byte, to our endpoint
            response = await client.post(
                "/api/v1/stripe/webhooks",
                content=delivery.body,
                headers={
                    "Stripe-Signature": delivery.headers["stripe-signature"],
                    "Content-Type": "application/json",
                },
            )
            assert response.status_code == 200, response.text
            answers.append(response.json()["duplicate"])
        assert answers == [False, True]
        assert await attempt_status(sessionmaker, attempt.id) == "reversed"
        async with sessionmaker() as session:
            stored = (await session.execute(select(StripeEvent))).scalars().all()
        assert [(e.type, e.source) for e in stored] == [("transfer.reversed", "webhook")]

        forged = await client.post(
            "/api/v1/stripe/webhooks",
            content=deliveries[0].body.replace(b"transfer.reversed", b"transfer.reverseX"),
            headers={"Stripe-Signature": deliveries[0].headers["stripe-signature"]},
        )
        assert forged.status_code == 422
        assert forged.json()["code"] == "webhook_signature_invalid"
        assert forged.json()["field"] == "Stripe-Signature"
        unsigned = await client.post("/api/v1/stripe/webhooks", content=deliveries[0].body)
        assert unsigned.status_code == 422
    finally:
        app.state.pop("settlement_gateway", None)
        await verifier.aclose()


async def test_the_polling_backstop_handles_an_event_whose_webhook_never_came(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    gateway: StripeGateway,
    webhook_receiver: tuple[str, WebhookReceiver],
) -> None:
    url, receiver = webhook_receiver
    await simulator.register_webhook_endpoint(url, enabled_events=["transfer.reversed"])
    attempt = await paid_cafe(client, books, sessionmaker, simulator, gateway)
    await simulator.webhook_fault("drop", event_type="transfer.reversed")
    await gateway.reverse_transfer(str(attempt.stripe_id), idempotency_key="reverse-1")
    await simulator.flush_webhooks()
    assert not [r for r in receiver.received if b"transfer.reversed" in r.body]
    assert await attempt_status(sessionmaker, attempt.id) == "succeeded"

    ctx = {"sessionmaker": sessionmaker, "dispatcher": None, "settlement_gateway": gateway}
    assert await jobs.ingest_stripe_events(ctx) == 1
    assert await attempt_status(sessionmaker, attempt.id) == "reversed"
    assert await jobs.ingest_stripe_events(ctx) == 0  # the cursor moved on; nothing is new
    async with sessionmaker() as session:
        [event] = (await session.execute(select(StripeEvent))).scalars().all()
    assert (event.type, event.source) == ("transfer.reversed", "poll")


async def test_scheduled_stripe_jobs_skip_while_stripe_is_not_configured(
    sessionmaker: SessionMaker, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a Stripe key the schedules skip instead of failing every few minutes; a payout
    asked for explicitly still fails loudly."""
    unconfigured = settings.model_copy(update={"stripe_api_key": None, "stripe_api_base": None})
    monkeypatch.setattr(jobs, "get_settings", lambda: unconfigured)
    ctx = {"sessionmaker": sessionmaker, "dispatcher": None}
    assert await jobs.ingest_stripe_events(ctx) == 0
    assert await jobs.pay_approved_statements(ctx) == 0
    assert "settlement_gateway" not in ctx
    with pytest.raises(GatewayNotConfigured):
        await jobs.pay_statement(ctx, str(uuid.uuid4()))


async def test_without_stripe_configured_the_api_answers_503_stripe_not_configured(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    gateway: StripeGateway,
    app: Litestar,
) -> None:
    """The app has no Stripe key (and no gateway set): every API path that needs Stripe says
    so as a 503 problem with a stable code, and nothing is changed."""
    assert app.state.get("settlement_gateway") is None
    await link_accounts(sessionmaker, books, gateway, simulator)
    week = await approved_week(client, books, sessionmaker)
    await simulator.add_fault("/v1/transfers", method="POST", mode="error", status=400)
    async with sessionmaker() as session:
        failed = await payouts.pay_statement(session, gateway, uuid.UUID(str(week["cafe"]["id"])))
    assert failed is not None and failed.status == "failed"
    staff = Staff(client)
    answers = [
        await client.post(
            f"/api/v1/payouts/{failed.id}/retry", headers=await staff(CARRIER_FINANCE)
        ),
        await client.post(
            f"/api/v1/organizations/{books.cafe}/stripe-account",
            json={"refresh_url": "https://cafe.test/r", "return_url": "https://cafe.test/done"},
            headers=await staff("admin@cafe.test"),
        ),
        await client.post(
            "/api/v1/stripe/webhooks", content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"}
        ),
    ]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["code"] == "stripe_not_configured"
        assert answer.json()["type"] == "/problems/stripe_not_configured"
    async with sessionmaker() as session:
        rows = await session.execute(
            select(PayoutAttempt).where(col(PayoutAttempt.statement_id) == failed.statement_id)
        )
        assert [a.generation for a in rows.scalars()] == [1]  # nothing was tried again
