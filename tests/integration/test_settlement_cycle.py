"""The whole settlement cycle through the HTTP API, against real PostgreSQL, Redis and the
Stripe simulator: two joint campaigns across three partners, claims, redemptions at the tills
and refunds (full and partial), the week closed by the schedule, approved, paid and collected
through Stripe (a card-less bank debit settled by a signed webhook), and reconciled with no
discrepancy: the statements' nets equal the ledger and equal what Stripe moved."""

from __future__ import annotations

import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.platform.db import SessionMaker, utcnow
from coalition.platform.settings import Settings
from coalition.settlement import jobs
from coalition.settlement.models import LedgerAccount, LedgerPosting, StripeAccount
from coalition.settlement.services import statements
from coalition.settlement.simulator.control import SimulatorControl
from tests.integration.campaign_helpers import (
    OWNER,
    Staff,
    add_merchant,
    campaign_action,
    campaign_body,
    create_campaign,
)
from tests.integration.conftest import World
from tests.integration.stripe_helpers import SignedWebhooks, forward_webhooks
from tests.integration.test_pos_redemption import add_terminals, claim, redeem, reverse
from tests.integration.test_reconciliation import job_context, reconcile, this_hour
from tests.integration.test_statements import CARRIER_FINANCE, Client

DISCOUNT = 5_000  # "spend 100.00, get 50.00 off", on a basket of exactly 100.00


async def joint_campaign(
    client: Client, staff: Staff, world: World, accepting: dict[uuid.UUID, str], **body: Any
) -> SimpleNamespace:
    """Created by the carrier's marketing, accepted by each partner's, activated."""
    owner = await staff(OWNER)
    campaign = await create_campaign(client, owner, campaign_body(world, **body))
    campaign = await campaign_action(client, owner, campaign["id"], "propose")
    for participant in campaign["participants"]:
        email = accepting.get(uuid.UUID(participant["org_id"]))
        if email is not None:
            campaign = await campaign_action(
                client,
                await staff(email),
                campaign["id"],
                "accept",
                {"terms_version": campaign["terms_version"]},
            )
    campaign = await campaign_action(client, owner, campaign["id"], "activate")
    assert campaign["status"] == "active", campaign
    return SimpleNamespace(id=campaign["id"])


async def cash(sessionmaker: SessionMaker, org_id: uuid.UUID) -> int:
    async with sessionmaker() as session:
        total = await session.execute(
            select(func.coalesce(func.sum(col(LedgerPosting.amount)), 0))
            .join(LedgerAccount, col(LedgerAccount.id) == col(LedgerPosting.account_id))
            .where(col(LedgerAccount.purpose) == "cash", col(LedgerPosting.org_id) == org_id)
        )
        return int(total.scalar_one())


async def test_two_campaigns_three_partners_settle_and_reconcile_to_nothing(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    signed_webhooks: SignedWebhooks,
) -> None:
    gateway, receiver = signed_webhooks.gateway, signed_webhooks.receiver
    staff = Staff(client)
    window = this_hour()
    school = await add_merchant(session, "school")
    offer = {"kind": "threshold", "threshold": 10_000, "value": DISCOUNT}
    coffee = await joint_campaign(
        client,
        staff,
        world,
        {world.cafe.id: "marketing@cafe.test", world.bank.id: "marketing@bank.test"},
        offer={**offer, "valid_days_after_claim": 7},
    )
    study = await joint_campaign(
        client,
        staff,
        world,
        {school.id: "marketing@school.test", world.bank.id: "marketing@bank.test"},
        name="Study & Save 学习节",
        code_prefix="STUDY",
        offer={**offer, "valid_days_after_claim": 7},
        participants=[
            {"org_id": str(world.carrier.id), "share_bp": 3000},
            {"org_id": str(school.id), "share_bp": 4000},
            {"org_id": str(world.bank.id), "share_bp": 3000},
        ],
        fee={"bp": 200, "fixed": 0, "payer": "owner"},
    )

    # Redemptions at the partners' tills, and refunds.
    [(_, cafe_till)] = await add_terminals(session, world.cafe)
    [(_, school_till)] = await add_terminals(session, school)
    redeemed = []
    for campaign, till in [(coffee, cafe_till)] * 3 + [(study, school_till)] * 3:
        response = await redeem(client, till, await claim(client, settings, session, campaign))
        assert response.status_code == 201, response.text
        redeemed.append(response.json()["id"])
    full = await reverse(client, cafe_till, redeemed[0])
    assert full.status_code == 201, full.text
    part = await reverse(client, school_till, redeemed[3], refund_amount=4_000)
    assert part.json()["discount_reversed"] == 2_000

    # The week is closed by the schedule once it has ended (run here as of then).
    async with sessionmaker() as closing:
        assert await statements.close_due(closing, utcnow() + timedelta(days=8)) == 4
    finance = await staff(CARRIER_FINANCE)
    closed = await client.get("/api/v1/statements?status=closed", headers=finance)
    nets = {uuid.UUID(s["org_id"]): int(s["net"]) for s in closed.json()["items"]}
    assert set(nets) == {world.carrier.id, world.cafe.id, world.bank.id, school.id}
    assert sum(nets.values()) == 0  # what one owes, the others are owed
    assert nets[world.cafe.id] > 0 and nets[school.id] > 0 > nets[world.bank.id]
    for item in closed.json()["items"]:
        approved = await client.post(f"/api/v1/statements/{item['id']}/approve", headers=finance)
        assert approved.json()["status"] == "approved", approved.text

    # Stripe: the café and the school onboard through the API; the bank pays by debit.
    for org, admin in ((world.cafe, "admin@cafe.test"), (school, "admin@school.test")):
        connected = await client.post(
            f"/api/v1/organizations/{org.id}/stripe-account",
            json={"refresh_url": "https://x.test/r", "return_url": "https://x.test/done"},
            headers=await staff(admin),
        )
        assert connected.status_code == 200, connected.text
        await simulator.complete_onboarding(connected.json()["connected_account_id"])
    customer = await gateway.create_customer(idempotency_key="bank", name="Bank")
    debit = await gateway.sdk.v1.payment_methods.create_async(
        {"type": "sepa_debit", "sepa_debit": {"iban": "DE89370400440532013000"}}
    )
    method = await gateway.attach_payment_method(customer, debit.id)
    session.add(StripeAccount(org_id=world.bank.id, customer_id=customer, payment_method_id=method))
    await session.commit()
    await simulator.top_up(1_000_000, "cny")
    await simulator.flush_webhooks()
    assert await forward_webhooks(client, receiver)
    for org in (world.cafe, school):  # account.updated: onboarding complete
        account = await session.get_one(StripeAccount, org.id)
        await session.refresh(account)
        assert account.onboarding_status == "complete"

    ctx = job_context(sessionmaker, gateway)
    assert await jobs.pay_approved_statements(ctx) == 3  # the debit is still processing
    [intent] = await gateway.find_collections(customer_id=customer, metadata={})
    assert intent.status == "processing"
    await simulator.settle_payment_intent(intent.id)
    await simulator.flush_webhooks()
    assert await forward_webhooks(client, receiver, "payment_intent.succeeded") == [False]
    settled = await client.get("/api/v1/statements", headers=finance)
    assert {s["org_id"]: s["status"] for s in settled.json()["items"]} == {
        str(world.carrier.id): "collected" if nets[world.carrier.id] < 0 else "paid",
        str(world.cafe.id): "paid",
        str(school.id): "paid",
        str(world.bank.id): "collected",
    }

    run = await reconcile(client, staff, sessionmaker, gateway, window)
    assert run["discrepancies"] == 0
    [totals] = run["totals"]
    partners = (world.cafe.id, school.id, world.bank.id)
    owed = sum(nets[org] for org in partners)
    now = utcnow()
    transfers = await gateway.list_transfers(
        created_from=now - timedelta(hours=2), created_to=now + timedelta(hours=1)
    )
    collections = await gateway.list_collections(
        created_from=now - timedelta(hours=2), created_to=now + timedelta(hours=1)
    )
    moved = sum(t.amount for t in transfers) - sum(c.amount_received for c in collections)
    ledger = -sum([await cash(sessionmaker, org) for org in partners])
    assert owed == ledger == moved  # the statements' nets, the ledger, Stripe
    assert totals["ledger_amount"] == totals["stripe_amount"] == -owed
    assert (totals["ledger_count"], totals["matched_ledger"], totals["matched_stripe"]) == (
        3,
        3,
        3,
    )
    assert await cash(sessionmaker, world.carrier.id) == owed
