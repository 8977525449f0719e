"""Reconciliation through the HTTP API, against real PostgreSQL and the Stripe simulator: a
settled week reconciles to nothing; each injected fault (a worker killed between Stripe's
answer and the commit, a webhook delivered twice or never, a 500 then success, a transfer
altered, deleted, unknown or made twice) is reported exactly once in its category, and is gone
once repaired; a window run twice or concurrently keeps one run's items and announces each
once; tenancy and window validation."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from coalition.merchants.models import WebhookDelivery
from coalition.platform.db import SessionMaker, utcnow
from coalition.platform.jobs import JobOutbox
from coalition.platform.settings import Settings
from coalition.platform.worker import registries
from coalition.settlement import jobs
from coalition.settlement.gateway import (
    GatewayNotConfigured,
    SettlementGateway,
    Transfer,
    TransferRequest,
    payout_idempotency_key,
    statement_transfer_group,
)
from coalition.settlement.models import (
    PayoutAttempt,
    ReconciliationItem,
    ReconciliationRun,
    StripeAccount,
)
from coalition.settlement.services import payouts, reconciliation
from coalition.settlement.simulator import SimulatorServer
from coalition.settlement.simulator.control import SimulatorControl
from coalition.settlement.stripe_gateway import StripeGateway
from tests.integration.campaign_helpers import Staff
from tests.integration.stripe_helpers import SignedWebhooks, forward_webhooks
from tests.integration.test_payouts import approved_week, link_accounts, statement
from tests.integration.test_statements import CARRIER_FINANCE, Books, Client, books

__all__ = ["books"]  # a fixture

CAFE_FINANCE, BANK_FINANCE = "finance@cafe.test", "finance@bank.test"


def this_hour() -> dict[str, str]:
    """A window around now, where the tests' payouts happen (whole seconds)."""
    now = utcnow().replace(microsecond=0)
    return {
        "window_start": (now - timedelta(hours=1)).isoformat(),
        "window_end": (now + timedelta(hours=1)).isoformat(),
    }


def job_context(sessionmaker: SessionMaker, gateway: SettlementGateway) -> dict[str, Any]:
    return {"sessionmaker": sessionmaker, "dispatcher": None, "settlement_gateway": gateway}


async def reconcile(
    client: Client,
    staff: Staff,
    sessionmaker: SessionMaker,
    gateway: SettlementGateway,
    window: dict[str, str],
) -> dict[str, Any]:
    """Ask for the window's run as the carrier's finance, run its job, read the run."""
    headers = await staff(CARRIER_FINANCE)
    asked = await client.post("/api/v1/reconciliation/runs", json=window, headers=headers)
    assert asked.status_code == 202, asked.text
    assert asked.json()["status"] == "queued"
    await jobs.reconcile(job_context(sessionmaker, gateway), asked.json()["id"])
    run = await client.get(f"/api/v1/reconciliation/runs/{asked.json()['id']}", headers=headers)
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "completed", run.json()
    return run.json()  # type: ignore[no-any-return]


async def items(
    client: Client, staff: Staff, run: dict[str, Any], email: str = CARRIER_FINANCE, **params: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/api/v1/reconciliation/runs/{run['id']}/items",
        params=params,
        headers=await staff(email),
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


async def settled_week(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> tuple[dict[str, dict[str, Any]], PayoutAttempt]:
    """Week 1 closed, approved and settled: the café paid (its attempt), the bank collected."""
    await link_accounts(sessionmaker, books, gateway, simulator)
    week = await approved_week(client, books, sessionmaker)
    assert await jobs.pay_approved_statements(job_context(sessionmaker, gateway)) == 3
    return week, await latest_attempt(sessionmaker, week["cafe"]["id"])


async def latest_attempt(sessionmaker: SessionMaker, statement_id: object) -> PayoutAttempt:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(PayoutAttempt)
            .where(col(PayoutAttempt.statement_id) == uuid.UUID(str(statement_id)))
            .order_by(col(PayoutAttempt.generation).desc())
        )
        return rows.scalars().first()  # type: ignore[return-value]


async def test_a_settled_week_reconciles_to_nothing_and_the_totals_are_the_nets(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> None:
    week, _ = await settled_week(client, books, sessionmaker, gateway, simulator)
    cafe_net, bank_net = int(week["cafe"]["net"]), int(week["bank"]["net"])
    run = await reconcile(client, Staff(client), sessionmaker, gateway, this_hour())
    assert (run["discrepancies"], run["matched"]) == (0, 4)  # a transfer and a collection
    [totals] = run["totals"]
    # Seen from the platform's balance: the café's net went out, the bank's debt came in.
    assert totals == {
        "currency": "CNY",
        "ledger_count": 2,
        "ledger_amount": -cafe_net - bank_net,
        "stripe_count": 2,
        "stripe_amount": -cafe_net - bank_net,
        "matched_ledger": 2,
        "matched_stripe": 2,
        "discrepancies": 0,
    }
    assert await items(client, Staff(client), run) == []


class KilledAfterTheCall(StripeGateway):
    """A worker killed once Stripe made the transfer, before its transaction committed."""

    async def create_transfer(self, request: TransferRequest) -> Transfer:
        await super().create_transfer(request)
        raise asyncio.CancelledError


async def test_a_worker_killed_after_the_transfer_is_a_status_mismatch_until_retried(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    stripe_server: SimulatorServer,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> None:
    await link_accounts(sessionmaker, books, gateway, simulator)
    cafe = (await approved_week(client, books, sessionmaker))["cafe"]
    killed = KilledAfterTheCall(
        "sk_test_coalition_tests", api_base=stripe_server.url, max_network_retries=0
    )
    try:
        async with sessionmaker() as session:
            with pytest.raises(asyncio.CancelledError):
                await payouts.pay_statement(session, killed, uuid.UUID(str(cafe["id"])))
    finally:
        await killed.aclose()
    attempt = await latest_attempt(sessionmaker, cafe["id"])
    assert (attempt.status, attempt.stripe_id) == ("in_flight", None)  # nothing committed

    staff = Staff(client)
    window = this_hour()
    run = await reconcile(client, staff, sessionmaker, gateway, window)
    [found] = await items(client, staff, run)
    assert found["category"] == "status_mismatch" and found["suggested_action"] == "retry_payout"
    assert (found["ledger_id"], found["ledger_status"]) == (str(attempt.id), "pending")
    assert (found["stripe_status"], found["org_id"]) == ("settled", str(books.cafe))
    assert found["stripe_amount"] == found["ledger_amount"] == cafe["net"]
    assert found["stripe_id"].startswith("tr_") and found["statement_id"] == cafe["id"]

    async with sessionmaker() as session:  # the suggested action: the retry adopts it
        retried = await payouts.pay_statement(session, gateway, uuid.UUID(str(cafe["id"])))
    assert retried is not None and retried.stripe_id == found["stripe_id"]
    again = await reconcile(client, staff, sessionmaker, gateway, window)
    assert again["id"] == run["id"] and again["discrepancies"] == 0
    assert await items(client, staff, again) == []
    transfers = await gateway.find_transfers(transfer_group=statement_transfer_group(cafe["id"]))
    assert [t.amount for t in transfers] == [cafe["net"]]  # paid once


async def test_a_500_then_success_pays_once_and_reconciles(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> None:
    await simulator.add_fault("/v1/transfers", method="POST", count=1, status=500)
    week, _ = await settled_week(client, books, sessionmaker, gateway, simulator)
    assert [f["hits"] for f in await simulator.faults()] == [1]
    run = await reconcile(client, Staff(client), sessionmaker, gateway, this_hour())
    assert run["discrepancies"] == 0
    transfers = await gateway.find_transfers(
        transfer_group=statement_transfer_group(week["cafe"]["id"])
    )
    assert [t.amount for t in transfers] == [week["cafe"]["net"]]


async def test_a_reversal_delivered_twice_or_never_is_matched_once_recorded(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    simulator: SimulatorControl,
    signed_webhooks: SignedWebhooks,
) -> None:
    verifier, receiver = signed_webhooks.gateway, signed_webhooks.receiver
    staff, window = Staff(client), this_hour()
    week, paid = await settled_week(client, books, sessionmaker, verifier, simulator)
    # The first reversal's webhook is delivered twice, the second's never.
    await simulator.webhook_fault("duplicate", event_type="transfer.reversed")
    first = await verifier.reverse_transfer(str(paid.stripe_id), amount=500, idempotency_key="r1")
    await simulator.flush_webhooks()
    assert await forward_webhooks(client, receiver, "transfer.reversed") == [False, True]
    await simulator.webhook_fault("drop", event_type="transfer.reversed")
    second = await verifier.reverse_transfer(str(paid.stripe_id), amount=300, idempotency_key="r2")
    await simulator.flush_webhooks()

    run = await reconcile(client, staff, sessionmaker, verifier, window)
    [lost] = await items(client, staff, run)
    assert (lost["category"], lost["kind"], lost["stripe_id"]) == (
        "missing_in_ledger",
        "transfer_reversal",
        second.id,
    )
    assert (lost["suggested_action"], lost["stripe_amount"]) == ("ingest_stripe_events", 300)
    assert lost["org_id"] == str(books.cafe) and lost["statement_id"] == week["cafe"]["id"]

    ctx = job_context(sessionmaker, verifier)
    assert await jobs.ingest_stripe_events(ctx) >= 1  # the backstop records the second
    assert await jobs.pay_statement(ctx, str(week["cafe"]["id"])) == "succeeded"
    again = await reconcile(client, staff, sessionmaker, verifier, window)
    assert again["discrepancies"] == 0
    [totals] = again["totals"]
    # Both reversals and the new transfer of what they took back are matched.
    assert (totals["matched_ledger"], totals["matched_stripe"]) == (5, 5)
    transfers = await verifier.find_transfers(
        transfer_group=statement_transfer_group(week["cafe"]["id"])
    )
    assert sum(t.amount - t.amount_reversed for t in transfers) == week["cafe"]["net"]
    assert first.id != second.id


async def test_a_bank_debit_whose_webhook_never_came_is_a_status_mismatch_until_polled(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> None:
    await link_accounts(sessionmaker, books, gateway, simulator, bank_card=None)
    debit = await gateway.sdk.v1.payment_methods.create_async(
        {"type": "sepa_debit", "sepa_debit": {"iban": "DE89370400440532013000"}}
    )
    async with sessionmaker() as session:
        account = await session.get_one(StripeAccount, books.bank)
        assert account.customer_id
        account.payment_method_id = await gateway.attach_payment_method(
            account.customer_id, debit.id
        )
        await session.commit()
    bank = (await approved_week(client, books, sessionmaker))["bank"]
    ctx = job_context(sessionmaker, gateway)
    assert await jobs.pay_statement(ctx, str(bank["id"])) == "processing"
    staff, window = Staff(client), this_hour()
    run = await reconcile(client, staff, sessionmaker, gateway, window)
    assert run["discrepancies"] == 0  # both sides say the debit is still processing

    await simulator.webhook_fault("drop", event_type="payment_intent.succeeded")
    collecting = await latest_attempt(sessionmaker, bank["id"])
    await simulator.settle_payment_intent(str(collecting.stripe_id))
    run = await reconcile(client, staff, sessionmaker, gateway, window)
    [found] = await items(client, staff, run)
    assert (found["category"], found["kind"], found["suggested_action"]) == (
        "status_mismatch",
        "collection",
        "ingest_stripe_events",
    )
    assert (found["ledger_status"], found["stripe_status"], found["org_id"]) == (
        "pending",
        "settled",
        str(books.bank),
    )
    assert found["stripe_balance_amount"] == found["ledger_amount"] == -bank["net"]

    assert await jobs.ingest_stripe_events(ctx) >= 1
    assert (await statement(sessionmaker, bank["id"])).status == "collected"
    assert (await reconcile(client, staff, sessionmaker, gateway, window))["discrepancies"] == 0


@pytest.mark.parametrize(
    ("change", "category"),
    [
        ({"amount": 1}, "amount_mismatch"),
        ({"amount": -1, "balance_transaction": False}, "amount_mismatch"),
        ({"currency": "usd"}, "currency_mismatch"),
    ],
)
async def test_a_transfer_altered_in_stripe_is_one_mismatch(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
    change: dict[str, Any],
    category: str,
) -> None:
    _, paid = await settled_week(client, books, sessionmaker, gateway, simulator)
    if "amount" in change:
        change = {**change, "amount": paid.amount + change["amount"]}
    await simulator.alter_transfer(str(paid.stripe_id), **change)
    staff = Staff(client)
    run = await reconcile(client, staff, sessionmaker, gateway, this_hour())
    [found] = await items(client, staff, run)
    assert (found["category"], found["side"], found["suggested_action"]) == (
        category,
        "both",
        "investigate",
    )
    assert (found["ledger_id"], found["stripe_id"]) == (str(paid.id), paid.stripe_id)
    assert found["ledger_amount"] == paid.amount
    if category == "currency_mismatch":
        assert (found["ledger_currency"], found["stripe_currency"]) == ("CNY", "USD")
    elif change.get("balance_transaction") is False:  # the transfer says one, its money another
        assert (found["stripe_amount"], found["stripe_balance_amount"]) == (
            paid.amount - 1,
            paid.amount,
        )
    else:
        assert found["stripe_amount"] == found["stripe_balance_amount"] == paid.amount + 1
    # Counted once, in the ledger's currency (a currency mismatch has Stripe's side in USD).
    assert next((t["currency"], t["discrepancies"]) for t in run["totals"]) == ("CNY", 1)
    assert sum(t["discrepancies"] for t in run["totals"]) == 1


async def test_unknown_deleted_and_twice_made_transfers_are_each_reported_once(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> None:
    _, paid = await settled_week(client, books, sessionmaker, gateway, simulator)
    staff, window = Staff(client), this_hour()

    # Someone pays the café from the platform's Stripe account, outside Coalition.
    stranger = await gateway.create_transfer(
        TransferRequest(
            amount=777,
            currency="CNY",
            destination=paid.destination,
            transfer_group="manual",
            idempotency_key="by-hand",
        )
    )
    run = await reconcile(client, staff, sessionmaker, gateway, window)
    [unknown] = await items(client, staff, run)
    assert (unknown["category"], unknown["stripe_id"], unknown["ledger_id"]) == (
        "missing_in_ledger",
        stranger.id,
        None,
    )
    assert (unknown["suggested_action"], unknown["org_id"]) == ("investigate", str(books.cafe))
    await gateway.reverse_transfer(stranger.id, idempotency_key="undo-by-hand")
    await simulator.delete_transfer(stranger.id)  # (and its reversal, as if it never was)

    # A day later Stripe has forgotten the key and a blind retry pays the statement twice.
    await simulator.expire_idempotency_keys()
    twice = await gateway.create_transfer(
        TransferRequest(
            amount=paid.amount,
            currency="CNY",
            destination=paid.destination,
            transfer_group=statement_transfer_group(paid.statement_id),
            idempotency_key=payout_idempotency_key(paid.statement_id, 1),
            metadata={
                **payouts.statement_metadata(await statement(sessionmaker, paid.statement_id)),
                "generation": "1",
            },
        )
    )
    run = await reconcile(client, staff, sessionmaker, gateway, window)
    categories = Counter(i["category"] for i in await items(client, staff, run))
    assert categories == {"duplicate": 1, "missing_in_ledger": 1}  # the stranger's reversal
    [duplicate] = await items(client, staff, run, category="duplicate")
    assert (duplicate["stripe_id"], duplicate["ledger_id"], duplicate["side"]) == (
        twice.id,
        str(paid.id),
        "stripe",
    )
    assert duplicate["suggested_action"] == "reverse_duplicate"

    # The statement's own transfer vanishes from Stripe.
    await simulator.delete_transfer(twice.id)
    await simulator.delete_transfer(str(paid.stripe_id))
    run = await reconcile(client, staff, sessionmaker, gateway, window)
    assert Counter(i["category"] for i in await items(client, staff, run)) == {
        "missing_in_stripe": 1,
        "missing_in_ledger": 1,
    }
    [missing] = await items(client, staff, run, category="missing_in_stripe")
    assert (missing["ledger_id"], missing["stripe_id"], missing["ledger_status"]) == (
        str(paid.id),
        None,
        "settled",
    )


async def register(client: Client, staff: Staff, email: str, org_id: uuid.UUID) -> str:
    response = await client.post(
        f"/api/v1/organizations/{org_id}/webhooks",
        json={
            "url": "https://hooks.example.test/in",
            "event_types": ["reconciliation.discrepancy"],
        },
        headers=await staff(email),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def deliveries(sessionmaker: SessionMaker) -> Counter[uuid.UUID]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(col(WebhookDelivery.org_id)).where(
                col(WebhookDelivery.event_type) == "reconciliation.discrepancy"
            )
        )
        return Counter(rows.scalars())


async def test_a_window_run_twice_and_concurrently_keeps_one_runs_items_and_alerts_once(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> None:
    staff = Staff(client)
    for email, org in (
        ("admin@carrier.test", books.carrier),
        ("admin@cafe.test", books.cafe),
        ("admin@bank.test", books.bank),
    ):
        await register(client, staff, email, org)
    _, paid = await settled_week(client, books, sessionmaker, gateway, simulator)
    await simulator.alter_transfer(str(paid.stripe_id), amount=paid.amount + 5)
    window = this_hour()
    headers = await staff(CARRIER_FINANCE)

    asked = await asyncio.gather(
        *(
            client.post("/api/v1/reconciliation/runs", json=window, headers=headers)
            for _ in range(4)
        )
    )
    assert {a.status_code for a in asked} == {202}
    assert len({a.json()["id"] for a in asked}) == 1
    run_id = asked[0].json()["id"]
    async with sessionmaker() as session:
        jobs_queued = await session.execute(
            select(func.count())
            .select_from(JobOutbox)
            .where(col(JobOutbox.function) == "reconcile")
        )
        assert jobs_queued.scalar_one() == 1  # asking again while it waits joins it

    ctx = job_context(sessionmaker, gateway)
    results = await asyncio.gather(*(jobs.reconcile(ctx, run_id) for _ in range(3)))
    assert results == [1, 1, 1]
    await jobs.reconcile(ctx, run_id)  # and once more, after
    async with sessionmaker() as session:
        stored = (await session.execute(select(ReconciliationItem))).scalars().all()
        runs = (await session.execute(select(ReconciliationRun))).scalars().all()
    assert [i.category for i in stored] == ["amount_mismatch"]
    assert len(runs) == 1 and runs[0].status == "completed"
    # One alert to the carrier and one to the café, whatever the number of runs; none to the bank.
    assert await deliveries(sessionmaker) == {books.carrier: 1, books.cafe: 1}

    # Repaired, the item goes; broken again, it is a new item and a new alert.
    await simulator.alter_transfer(str(paid.stripe_id), amount=paid.amount)
    assert await jobs.reconcile(ctx, run_id) == 0
    await simulator.alter_transfer(str(paid.stripe_id), amount=paid.amount - 5)
    assert await jobs.reconcile(ctx, run_id) == 1
    assert await deliveries(sessionmaker) == {books.carrier: 2, books.cafe: 2}


async def test_partners_see_their_own_items_only_and_no_platform_totals(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> None:
    _, paid = await settled_week(client, books, sessionmaker, gateway, simulator)
    await simulator.alter_transfer(str(paid.stripe_id), amount=paid.amount + 1)
    staff = Staff(client)
    run = await reconcile(client, staff, sessionmaker, gateway, this_hour())
    [item] = await items(client, staff, run)
    path = f"/api/v1/reconciliation/runs/{run['id']}"

    cafe = await client.get(path, headers=await staff(CAFE_FINANCE))
    assert cafe.status_code == 200
    assert (cafe.json()["totals"], cafe.json()["matched"], cafe.json()["discrepancies"]) == (
        None,
        None,
        1,
    )
    assert [i["id"] for i in await items(client, staff, run, CAFE_FINANCE)] == [item["id"]]
    own = await client.get(f"{path}/items/{item['id']}", headers=await staff(CAFE_FINANCE))
    assert own.status_code == 200 and own.json() == item

    bank = await staff(BANK_FINANCE)
    assert (await client.get(path, headers=bank)).json()["discrepancies"] == 0
    assert await items(client, staff, run, BANK_FINANCE) == []
    other = await client.get(f"{path}/items/{item['id']}", headers=bank)
    assert other.status_code == 404 and other.json()["code"] == "reconciliation_item_not_found"
    filtered = await client.get(f"{path}/items", params={"org_id": str(books.cafe)}, headers=bank)
    assert filtered.status_code == 404
    listed = await client.get("/api/v1/reconciliation/runs", headers=bank)
    assert listed.json()["total"] == 1 and listed.json()["items"][0]["totals"] is None

    for email, status in (
        (CAFE_FINANCE, 403),  # only the carrier asks for runs
        ("admin@cafe.test", 403),
        ("cashier@carrier.test", 403),
        ("marketing@carrier.test", 403),
    ):
        response = await client.post(
            "/api/v1/reconciliation/runs", json=this_hour(), headers=await staff(email)
        )
        assert response.status_code == status, (email, response.text)
    cashier = await client.get(path, headers=await staff("cashier@cafe.test"))
    assert cashier.status_code == 403
    missing = await client.get(
        f"/api/v1/reconciliation/runs/{uuid.uuid4()}", headers=await staff(CARRIER_FINANCE)
    )
    assert missing.status_code == 404 and missing.json()["code"] == "reconciliation_run_not_found"
    by_category = await items(client, staff, run, category="duplicate")
    assert by_category == []
    wrong = await client.get(
        f"{path}/items", params={"category": "nonsense"}, headers=await staff(CARRIER_FINANCE)
    )
    assert wrong.status_code == 422 and wrong.json()["field"] == "category"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"window_start": "2026-11-16T00:00:00+00:00"}, "window_end"),
        ({"window_end": "2026-11-16T00:00:00+00:00"}, "window_start"),
        (
            {"window_start": "2026-11-16T00:00:00+00:00", "window_end": "2026-11-16T00:00:00Z"},
            "window_end",
        ),
        (
            {"window_start": "2026-11-16T00:00:00", "window_end": "2026-11-17T00:00:00"},
            "window_start",
        ),
        (
            {
                "window_start": "2026-10-01T00:00:00+08:00",
                "window_end": "2026-11-16T00:00:00+08:00",
            },
            "window_end",
        ),
        (
            {
                "window_start": "2999-01-01T00:00:00+00:00",
                "window_end": "2999-01-02T00:00:00+00:00",
            },
            "window_start",
        ),
    ],
)
async def test_windows_that_cannot_be_reconciled_are_refused_and_nothing_is_written(
    client: Client, books: Books, sessionmaker: SessionMaker, body: dict[str, str], field: str
) -> None:
    response = await client.post(
        "/api/v1/reconciliation/runs", json=body, headers=await Staff(client)(CARRIER_FINANCE)
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "reconciliation_window_invalid"
    assert response.json()["field"] == field
    async with sessionmaker() as session:
        assert (await session.execute(select(ReconciliationRun))).scalars().all() == []


async def test_the_default_window_is_the_current_utc_day_and_the_schedule_takes_the_day_before(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    gateway: StripeGateway,
    simulator: SimulatorControl,
) -> None:
    await settled_week(client, books, sessionmaker, gateway, simulator)
    asked = await client.post(
        "/api/v1/reconciliation/runs", headers=await Staff(client)(CARRIER_FINANCE)
    )
    assert asked.status_code == 202, asked.text
    today = utcnow().date().isoformat()
    assert asked.json()["window_start"].startswith(today)
    assert asked.json()["window_end"] == asked.json()["window_start"].replace(
        today, (utcnow().date() + timedelta(days=1)).isoformat()
    )
    async with sessionmaker() as session:  # the schedule, tomorrow, reconciles today
        run = await reconciliation.reconcile_previous_day(
            session, gateway, utcnow() + timedelta(days=1)
        )
    assert str(run.id) == asked.json()["id"]
    assert (run.status, run.discrepancies, run.matched, run.requests) == ("completed", 0, 4, 2)


async def test_the_daily_schedule_skips_while_stripe_is_not_configured(
    client: Client,
    books: Books,
    sessionmaker: SessionMaker,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crons = {c.name: c for r in registries() for c in r.cron_jobs}
    daily = crons["cron:reconcile_previous_day"]  # once a day, unique across workers
    assert (daily.hour, daily.minute, daily.unique) == (1, 10, True)
    unconfigured = settings.model_copy(update={"stripe_api_key": None, "stripe_api_base": None})
    monkeypatch.setattr(jobs, "get_settings", lambda: unconfigured)
    ctx: dict[str, Any] = {"sessionmaker": sessionmaker, "dispatcher": None}
    assert await jobs.reconcile_previous_day(ctx) == 0
    asked = await client.post(
        "/api/v1/reconciliation/runs", headers=await Staff(client)(CARRIER_FINANCE)
    )
    with pytest.raises(GatewayNotConfigured):  # asked for explicitly: it fails loudly
        await jobs.reconcile(ctx, asked.json()["id"])
    async with sessionmaker() as session:
        [run] = (await session.execute(select(ReconciliationRun))).scalars().all()
    assert run.status == "failed" and run.error
