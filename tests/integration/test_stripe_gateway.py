"""The settlement gateway over the real `stripe` SDK, against the simulator on a loopback port."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import stripe

from coalition.settlement.gateway import (
    CollectionRequest,
    GatewayNotConfigured,
    GatewayNotFound,
    GatewayRejected,
    IdempotencyKeyReused,
    TransferRequest,
    payout_idempotency_key,
    statement_transfer_group,
)
from coalition.settlement.simulator import SimulatorServer
from coalition.settlement.simulator.control import SimulatorControl
from coalition.settlement.stripe_gateway import StripeGateway
from tests.integration.stripe_helpers import API_KEY, make_gateway, onboarded_account


def transfer_request(destination: str, statement: str, amount: int = 1_250) -> TransferRequest:
    return TransferRequest(
        amount=amount,
        currency="CNY",
        destination=destination,
        transfer_group=statement_transfer_group(statement),
        idempotency_key=payout_idempotency_key(statement, 1),
        metadata={"statement_id": statement, "generation": "1"},
    )


async def platform_balance(gateway: StripeGateway, account: str | None = None) -> dict[str, int]:
    options = {"stripe_account": account} if account else {}
    balance = await gateway.sdk.v1.balance.retrieve_async(options=options)  # type: ignore[arg-type]
    return {item.currency: item.amount for item in balance.available}


# ---------------------------------------------------------------------- Connect


async def test_connected_account_onboarding_link_and_status(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    account = await gateway.create_connected_account(
        email="finance@cafe.test", country="CN", idempotency_key="acct-cafe", metadata={"org": "7"}
    )
    assert account.id.startswith("acct_")
    assert not account.charges_enabled and not account.payouts_enabled
    assert not account.can_receive_transfers
    assert "external_account" in account.currently_due
    assert account.metadata == {"org": "7"}

    again = await gateway.create_connected_account(
        email="finance@cafe.test", country="CN", idempotency_key="acct-cafe", metadata={"org": "7"}
    )
    assert again.id == account.id  # the same key replays the first answer

    link = await gateway.create_onboarding_link(
        account.id, refresh_url="http://portal.test/refresh", return_url="http://portal.test/done"
    )
    assert link.expires_at > datetime.now(UTC)
    async with httpx.AsyncClient() as browser:
        visit = await browser.get(link.url)
        assert visit.status_code == 302
        assert visit.headers["location"] == "http://portal.test/done"
        used = await browser.get(link.url)  # a link works once, then sends to refresh_url
        assert used.headers["location"] == "http://portal.test/refresh"

    status = await gateway.get_connected_account(account.id)
    assert status.charges_enabled and status.payouts_enabled and status.details_submitted
    assert status.can_receive_transfers and status.currently_due == ()

    events = await gateway.list_events(account=account.id)
    assert [e.type for e in events] == ["account.updated"]
    assert events[0].account == account.id
    assert events[0].object["payouts_enabled"] is True
    assert events[0].previous_attributes is not None
    assert events[0].previous_attributes["payouts_enabled"] is False
    assert await gateway.list_events() == []  # connected-account events stay in that account


# ---------------------------------------------------------------------- transfers


async def test_transfer_found_by_group_and_metadata(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await onboarded_account(gateway, simulator)
    await simulator.top_up(100_000, "cny")
    transfer = await gateway.create_transfer(transfer_request(cafe.id, "st-1"))
    assert transfer.id.startswith("tr_")
    assert (transfer.amount, transfer.currency, transfer.destination) == (1_250, "CNY", cafe.id)
    assert transfer.transfer_group == "statement_st-1"
    assert transfer.metadata == {"statement_id": "st-1", "generation": "1"}
    assert transfer.balance_transaction_id is not None
    await gateway.create_transfer(transfer_request(cafe.id, "st-2", 99))

    found = await gateway.find_transfers(transfer_group="statement_st-1")
    assert [t.id for t in found] == [transfer.id]
    assert await gateway.find_transfers(
        transfer_group="statement_st-1", metadata={"statement_id": "st-1"}
    ) == [transfer]
    assert (
        await gateway.find_transfers(transfer_group="statement_st-1", metadata={"generation": "2"})
        == []
    )
    assert await gateway.get_transfer(transfer.id) == transfer

    updated = await gateway.update_transfer_metadata(transfer.id, {"ledger_entry": "e-9"})
    assert updated.metadata == {"statement_id": "st-1", "generation": "1", "ledger_entry": "e-9"}

    assert await platform_balance(gateway) == {"cny": 100_000 - 1_250 - 99}
    assert await platform_balance(gateway, cafe.id) == {"cny": 1_250 + 99}
    types = [e.type for e in await gateway.list_events()]
    assert types == ["transfer.created", "transfer.created", "transfer.updated"]


async def test_transfer_refused_without_funds_or_capability(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    new = await gateway.create_connected_account(
        email=None, country="CN", idempotency_key="acct-new"
    )
    await simulator.top_up(10_000, "cny")
    with pytest.raises(GatewayRejected) as refused:
        await gateway.create_transfer(transfer_request(new.id, "st-1"))
    assert refused.value.code == "insufficient_capabilities_for_transfer"
    assert not refused.value.retryable

    cafe = await onboarded_account(gateway, simulator)
    with pytest.raises(GatewayRejected) as poor:
        await gateway.create_transfer(transfer_request(cafe.id, "st-2", 10_001))
    assert poor.value.code == "balance_insufficient"

    with pytest.raises(GatewayRejected) as unknown:
        await gateway.create_transfer(transfer_request("acct_1NoSuchAccount00", "st-3"))
    assert unknown.value.code == "resource_missing"
    assert unknown.value.param == "destination"

    with pytest.raises(GatewayNotFound):
        await gateway.get_transfer("tr_doesnotexist")
    assert await gateway.find_transfers(transfer_group="statement_st-2") == []


async def test_reversals_partial_then_full(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await onboarded_account(gateway, simulator)
    await simulator.top_up(5_000, "cny")
    transfer = await gateway.create_transfer(transfer_request(cafe.id, "st-1", 1_000))

    part = await gateway.reverse_transfer(
        transfer.id, amount=300, idempotency_key="rev-1", metadata={"reason": "late refund"}
    )
    assert part.id.startswith("trr_")
    assert (part.transfer_id, part.amount, part.currency) == (transfer.id, 300, "CNY")
    replay = await gateway.reverse_transfer(
        transfer.id, amount=300, idempotency_key="rev-1", metadata={"reason": "late refund"}
    )
    assert replay == part

    after_part = await gateway.get_transfer(transfer.id)
    assert (after_part.amount_reversed, after_part.reversed) == (300, False)

    with pytest.raises(GatewayRejected) as too_much:
        await gateway.reverse_transfer(transfer.id, amount=701, idempotency_key="rev-2")
    assert too_much.value.param == "amount"

    rest = await gateway.reverse_transfer(transfer.id, idempotency_key="rev-3")
    assert rest.amount == 700
    final = await gateway.get_transfer(transfer.id)
    assert (final.amount_reversed, final.reversed) == (1_000, True)
    # The transfer lists its reversals (newest first), each with its balance transaction.
    assert [(r.id, r.amount, r.transfer_id) for r in final.reversals] == [
        (rest.id, 700, transfer.id),
        (part.id, 300, transfer.id),
    ]
    assert all(r.balance_transaction_id for r in final.reversals)
    assert await platform_balance(gateway) == {"cny": 5_000}
    assert await platform_balance(gateway, cafe.id) == {"cny": 0}

    reversed_events = [e for e in await gateway.list_events() if e.type == "transfer.reversed"]
    assert [e.object["amount_reversed"] for e in reversed_events] == [300, 1_000]
    assert reversed_events[0].previous_attributes == {"amount_reversed": 0, "reversed": False}


# ---------------------------------------------------------------------- idempotency


async def test_replay_returns_the_stored_response_with_the_replayed_header(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await onboarded_account(gateway, simulator)
    await simulator.top_up(10_000, "cny")
    params = {"amount": 700, "currency": "cny", "destination": cafe.id, "transfer_group": "g"}
    first = await gateway.sdk.v1.transfers.create_async(
        params,  # type: ignore[arg-type]
        {"idempotency_key": "same-key"},
    )
    second = await gateway.sdk.v1.transfers.create_async(
        params,  # type: ignore[arg-type]
        {"idempotency_key": "same-key"},
    )
    assert first.last_response is not None and second.last_response is not None
    assert "idempotent-replayed" not in first.last_response.headers
    assert second.last_response.headers["idempotent-replayed"] == "true"
    assert second.last_response.headers["original-request"] == first.last_response.request_id
    assert second.last_response.body == first.last_response.body
    assert len(await gateway.find_transfers(transfer_group="g")) == 1
    assert await platform_balance(gateway) == {"cny": 10_000 - 700}


async def test_replay_returns_stored_errors_too(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await gateway.create_connected_account(
        email=None, country="CN", idempotency_key="acct-cafe"
    )
    await simulator.top_up(10_000, "cny")
    request = transfer_request(cafe.id, "st-1")
    with pytest.raises(GatewayRejected) as first:
        await gateway.create_transfer(request)
    await simulator.complete_onboarding(cafe.id)
    # The account can now receive transfers, but the key's stored answer is the error.
    with pytest.raises(GatewayRejected) as replayed:
        await gateway.create_transfer(request)
    assert replayed.value.code == first.value.code == "insufficient_capabilities_for_transfer"
    assert replayed.value.message == first.value.message
    assert await gateway.find_transfers(transfer_group=request.transfer_group) == []
    # The next attempt generation has its own key and goes through.
    retry = TransferRequest(
        **{**request.__dict__, "idempotency_key": payout_idempotency_key("st-1", 2)}
    )
    transfer = await gateway.create_transfer(retry)
    assert await gateway.find_transfers(transfer_group=request.transfer_group) == [transfer]


async def test_same_key_with_other_parameters_is_an_idempotency_error(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await onboarded_account(gateway, simulator)
    await simulator.top_up(10_000, "cny")
    request = transfer_request(cafe.id, "st-1", 500)
    await gateway.create_transfer(request)
    other = TransferRequest(**{**request.__dict__, "amount": 501})
    with pytest.raises(IdempotencyKeyReused) as reused:
        await gateway.create_transfer(other)
    assert reused.value.http_status == 400
    assert "same parameters" in reused.value.message
    try:
        await gateway.sdk.v1.transfers.create_async(
            {"amount": 501, "currency": "cny", "destination": cafe.id},
            {"idempotency_key": request.idempotency_key},
        )
    except stripe.IdempotencyError as exc:
        assert exc.json_body is not None
        assert exc.json_body["error"]["type"] == "idempotency_error"
    else:
        raise AssertionError("the reused key was accepted")
    assert len(await gateway.find_transfers(transfer_group=request.transfer_group)) == 1


async def test_requests_refused_before_execution_store_nothing(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await onboarded_account(gateway, simulator)
    await simulator.top_up(10_000, "cny")
    with pytest.raises(stripe.InvalidRequestError) as bad:
        await gateway.sdk.v1.transfers.create_async(
            {"amount": 500, "currency": "cny", "destination": cafe.id, "colour": "red"},  # type: ignore[typeddict-unknown-key]
            {"idempotency_key": "k-1"},
        )
    assert bad.value.code == "parameter_unknown" and bad.value.param == "colour"
    # Not stored: the same key with corrected parameters runs (no idempotency error).
    fixed = await gateway.sdk.v1.transfers.create_async(
        {"amount": 500, "currency": "cny", "destination": cafe.id}, {"idempotency_key": "k-1"}
    )
    assert fixed.amount == 500


async def test_authentication_and_connect_scoping(
    stripe_server: SimulatorServer, gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await onboarded_account(gateway, simulator)
    bank = await onboarded_account(gateway, simulator, "bank")
    await simulator.top_up(10_000, "cny")
    transfer = await gateway.create_transfer(transfer_request(cafe.id, "st-1", 400))

    # A connected account sees its own side: the payment, not the platform's transfer.
    cafe_side = await gateway.list_balance_transactions(
        created_from=datetime.now(UTC) - timedelta(hours=1),
        created_to=datetime.now(UTC) + timedelta(hours=1),
        account=cafe.id,
    )
    assert [(t.type, t.amount) for t in cafe_side] == [("payment", 400)]
    assert await platform_balance(gateway, bank.id) == {}
    with pytest.raises(stripe.InvalidRequestError) as hidden:
        await gateway.sdk.v1.transfers.retrieve_async(
            transfer.id, options={"stripe_account": cafe.id}
        )
    assert hidden.value.http_status == 404
    with pytest.raises(stripe.PermissionError):
        await gateway.sdk.v1.balance.retrieve_async(
            options={"stripe_account": "acct_1Unknown000000"}
        )

    wrong = StripeGateway("sk_test_wrong", api_base=stripe_server.url, max_network_retries=0)
    try:
        with pytest.raises(GatewayRejected) as unauthenticated:
            await wrong.get_transfer(transfer.id)
        assert unauthenticated.value.http_status == 401
    finally:
        await wrong.aclose()
    async with httpx.AsyncClient(base_url=stripe_server.url) as raw_client:
        raw = await raw_client.get(f"/v1/transfers/{transfer.id}")
        assert raw.status_code == 401
        assert raw.json()["error"]["type"] == "invalid_request_error"
        basic = await raw_client.get(f"/v1/transfers/{transfer.id}", auth=(API_KEY, ""))
        assert basic.json()["id"] == transfer.id


# ---------------------------------------------------------------------- collections


async def test_collect_from_saved_card(gateway: StripeGateway, simulator: SimulatorControl) -> None:
    customer = await gateway.create_customer(
        idempotency_key="cus-cafe", email="finance@cafe.test", name="Café", metadata={"org": "7"}
    )
    method = await gateway.attach_payment_method(customer, "pm_card_visa")
    request = CollectionRequest(
        customer_id=customer,
        amount=880,
        currency="CNY",
        idempotency_key="collect-st-9-1",
        metadata={"statement_id": "st-9"},
    )
    collection = await gateway.collect(request)  # the customer's default payment method
    assert collection.status == "succeeded"
    assert (collection.amount, collection.amount_received) == (880, 880)
    assert collection.payment_method_id == method
    assert collection.charge_id is not None and collection.charge_id.startswith("ch_")
    assert await gateway.collect(request) == collection  # replay: no second charge

    found = await gateway.find_collections(customer_id=customer, metadata={"statement_id": "st-9"})
    assert found == [collection]
    assert await platform_balance(gateway) == {"cny": 880}
    types = [e.type for e in await gateway.list_events(types=["payment_intent.*"])]
    assert types == ["payment_intent.created", "payment_intent.succeeded"]


async def test_declined_collection_is_an_answer_and_replays_the_same(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    customer = await gateway.create_customer(idempotency_key="cus-cafe")
    declined_card = await gateway.attach_payment_method(
        customer, "pm_card_chargeDeclinedInsufficientFunds"
    )
    request = CollectionRequest(
        customer_id=customer,
        amount=500,
        currency="CNY",
        idempotency_key="collect-1",
        payment_method_id=declined_card,
        metadata={"statement_id": "st-1"},
    )
    failed = await gateway.collect(request)
    assert failed.status == "failed"
    assert failed.failure_code == "card_declined"
    assert failed.failure_message == "Your card has insufficient funds."
    assert await gateway.collect(request) == failed
    intents = await gateway.find_collections(customer_id=customer, metadata={})
    assert [c.id for c in intents] == [failed.id]
    assert await platform_balance(gateway) == {}
    types = [e.type for e in await gateway.list_events(types=["payment_intent.payment_failed"])]
    assert types == ["payment_intent.payment_failed"]

    bare = await gateway.create_customer(idempotency_key="cus-bare")
    with pytest.raises(GatewayRejected) as no_default:
        await gateway.collect(
            CollectionRequest(customer_id=bare, amount=1, currency="CNY", idempotency_key="x")
        )
    assert no_default.value.code == "no_default_payment_method"


async def test_bank_debit_collection_settles_later(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    customer = await gateway.create_customer(idempotency_key="cus-edu")
    debit = await gateway.sdk.v1.payment_methods.create_async(
        {
            "type": "sepa_debit",
            "sepa_debit": {"iban": "DE89370400440532013000"},
            "billing_details": {"name": "Edu GmbH", "email": "finance@edu.test"},
        }
    )
    await gateway.attach_payment_method(customer, debit.id)
    collection = await gateway.collect(
        CollectionRequest(
            customer_id=customer, amount=12_000, currency="EUR", idempotency_key="collect-edu"
        )
    )
    assert collection.status == "processing"
    assert await platform_balance(gateway) == {}
    await simulator.settle_payment_intent(collection.id)
    settled = await gateway.get_collection(collection.id)
    assert settled.status == "succeeded" and settled.amount_received == 12_000
    assert await platform_balance(gateway) == {"eur": 12_000}
    types = [e.type for e in await gateway.list_events(types=["payment_intent.*"])]
    assert types == [
        "payment_intent.created",
        "payment_intent.processing",
        "payment_intent.succeeded",
    ]


# ---------------------------------------------------------------------- lists and pagination


async def test_period_lists_walk_every_page(
    stripe_server: SimulatorServer, simulator: SimulatorControl
) -> None:
    small_pages = make_gateway(stripe_server, page_size=3)
    try:
        cafe = await onboarded_account(small_pages, simulator)
        start = await simulator.freeze_clock(1_780_000_000)
        await simulator.top_up(1_000_000, "cny")
        ids = []
        for index in range(8):
            await simulator.advance_clock(60)
            transfer = await small_pages.create_transfer(
                transfer_request(cafe.id, f"st-{index}", 100 + index)
            )
            ids.append(transfer.id)
        window_from = datetime.fromtimestamp(start + 120, UTC)  # the 2nd transfer ...
        window_to = datetime.fromtimestamp(start + 420, UTC)  # ... up to, not with, the 7th
        transfers = await small_pages.list_transfers(created_from=window_from, created_to=window_to)
        assert [t.id for t in transfers] == list(reversed(ids[1:6]))  # newest first, 2 pages

        everything = await small_pages.list_balance_transactions(
            created_from=datetime.fromtimestamp(start, UTC),
            created_to=datetime.fromtimestamp(start + 10_000, UTC),
        )
        assert len(everything) == 9 and len({t.id for t in everything}) == 9
        assert sum(t.net for t in everything) == 1_000_000 - sum(100 + i for i in range(8))
        only_transfers = await small_pages.list_balance_transactions(
            created_from=datetime.fromtimestamp(start, UTC),
            created_to=datetime.fromtimestamp(start + 10_000, UTC),
            transaction_type="transfer",
        )
        assert sorted(t.source_id or "" for t in only_transfers) == sorted(ids)
        assert all(t.amount < 0 and t.reporting_category == "transfer" for t in only_transfers)

        payout = await simulator.automatic_payout(cafe.id, "cny")
        swept = await small_pages.list_balance_transactions(
            created_from=datetime.fromtimestamp(start, UTC),
            created_to=datetime.fromtimestamp(start + 10_000, UTC),
            payout=payout["id"],
            account=cafe.id,
        )
        assert sorted(t.type for t in swept) == ["payment"] * 8 + ["payout"]
        assert sum(t.net for t in swept) == 0
    finally:
        await small_pages.aclose()


async def test_collections_are_listed_by_period(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    start = await simulator.freeze_clock(1_780_000_000)
    customer = await gateway.create_customer(idempotency_key="cus-bank")
    await gateway.attach_payment_method(customer, "pm_card_visa")
    made = []
    for index in range(3):
        await simulator.advance_clock(60)
        collection = await gateway.collect(
            CollectionRequest(
                customer_id=customer,
                amount=100 + index,
                currency="CNY",
                idempotency_key=f"collect-{index}",
            )
        )
        made.append(collection.id)
    listed = await gateway.list_collections(
        created_from=datetime.fromtimestamp(start + 120, UTC),
        created_to=datetime.fromtimestamp(start + 10_000, UTC),
    )
    assert [(c.id, c.amount, c.status) for c in listed] == [
        (made[2], 102, "succeeded"),
        (made[1], 101, "succeeded"),
    ]


async def test_events_since_a_cursor_oldest_first(
    stripe_server: SimulatorServer, simulator: SimulatorControl
) -> None:
    small_pages = make_gateway(stripe_server, page_size=2)
    try:
        cafe = await onboarded_account(small_pages, simulator)
        await simulator.top_up(1_000_000, "cny")
        transfers = [
            await small_pages.create_transfer(transfer_request(cafe.id, f"st-{i}", 10 + i))
            for i in range(5)
        ]
        events = await small_pages.list_events(types=["transfer.created"])
        assert [e.object["id"] for e in events] == [t.id for t in transfers]
        newer = await small_pages.list_events(after=events[1].id, types=["transfer.created"])
        assert [e.id for e in newer] == [e.id for e in events[2:]]
        assert await small_pages.list_events(after=events[-1].id) == []
        since = await small_pages.list_events(since=events[0].created, types=["transfer.*"])
        assert [e.id for e in since] == [e.id for e in events]
    finally:
        await small_pages.aclose()


async def test_gateway_from_settings(
    stripe_server: SimulatorServer, simulator: SimulatorControl
) -> None:
    from coalition.platform.settings import Settings

    with pytest.raises(GatewayNotConfigured):
        StripeGateway.from_settings(Settings(environment="test"))
    configured = StripeGateway.from_settings(
        Settings(
            environment="test",
            stripe_api_key=API_KEY,
            stripe_api_base=stripe_server.url + "/",
            stripe_webhook_secret="whsec_from_settings",
            stripe_max_network_retries=0,
        )
    )
    try:
        account = await configured.create_connected_account(
            email=None, country="CN", idempotency_key="acct-settings"
        )
        assert (await configured.get_connected_account(account.id)).id == account.id
    finally:
        await configured.aclose()
