"""Fault injection: 500s, delays, dropped and hung answers, altered and deleted transfers.

Each test checks what the gateway reports and what Stripe (the simulator) really did, which is
what crash recovery relies on: look the transfer up by its group before any retry.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from coalition.settlement.gateway import (
    GatewayNotFound,
    GatewayUnavailable,
    TransferRequest,
    payout_idempotency_key,
    statement_transfer_group,
)
from coalition.settlement.simulator import SimulatorServer
from coalition.settlement.simulator.control import SimulatorControl
from coalition.settlement.stripe_gateway import StripeGateway
from tests.integration.stripe_helpers import make_gateway, onboarded_account


def request_for(destination: str, statement: str = "st-1", amount: int = 2_000) -> TransferRequest:
    return TransferRequest(
        amount=amount,
        currency="CNY",
        destination=destination,
        transfer_group=statement_transfer_group(statement),
        idempotency_key=payout_idempotency_key(statement, 1),
        metadata={"statement_id": statement},
    )


async def funded_account(gateway: StripeGateway, simulator: SimulatorControl) -> str:
    account = await onboarded_account(gateway, simulator)
    await simulator.top_up(1_000_000, "cny")
    return account.id


async def test_a_500_then_success_is_retried_by_the_sdk_with_the_same_key(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await funded_account(gateway, simulator)
    await simulator.add_fault("/v1/transfers", method="POST", count=1)
    transfer = await gateway.create_transfer(request_for(cafe))
    assert [f["hits"] for f in await simulator.faults()] == [1]
    assert await gateway.find_transfers(transfer_group="statement_st-1") == [transfer]


async def test_500s_beyond_the_retries_report_unavailable_and_do_nothing(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await funded_account(gateway, simulator)
    await simulator.add_fault("/v1/transfers", method="POST", count=3, status=503)
    with pytest.raises(GatewayUnavailable) as unavailable:
        await gateway.create_transfer(request_for(cafe))  # 1 try + 2 retries, all 503
    assert unavailable.value.retryable and unavailable.value.http_status == 503
    assert await gateway.find_transfers(transfer_group="statement_st-1") == []
    # An injected 500 happens before execution: nothing is stored under the key.
    transfer = await gateway.create_transfer(request_for(cafe))
    assert await gateway.find_transfers(transfer_group="statement_st-1") == [transfer]


async def test_a_500_after_the_work_is_replayed_so_only_a_lookup_tells(
    stripe_server: SimulatorServer, simulator: SimulatorControl
) -> None:
    gateway = make_gateway(stripe_server)
    try:
        cafe = await funded_account(gateway, simulator)
        await simulator.add_fault("/v1/transfers", method="POST", count=1, after=True)
        with pytest.raises(GatewayUnavailable):
            await gateway.create_transfer(request_for(cafe))  # retries replay the stored 500
        found = await gateway.find_transfers(
            transfer_group="statement_st-1", metadata={"statement_id": "st-1"}
        )
        assert len(found) == 1 and found[0].amount == 2_000
        # A day later Stripe has forgotten the key: a blind retry would pay twice.
        await simulator.expire_idempotency_keys()
        await gateway.create_transfer(request_for(cafe))
        assert len(await gateway.find_transfers(transfer_group="statement_st-1")) == 2
    finally:
        await gateway.aclose()


async def test_a_dropped_answer_after_the_work_is_the_crash_case(
    stripe_server: SimulatorServer, simulator: SimulatorControl
) -> None:
    no_retries = make_gateway(stripe_server, max_network_retries=0)
    try:
        cafe = await funded_account(no_retries, simulator)
        await simulator.add_fault("/v1/transfers", method="POST", mode="drop", count=1)
        with pytest.raises(GatewayUnavailable) as dropped:
            await no_retries.create_transfer(request_for(cafe))
        assert dropped.value.http_status is None  # a connection error, no answer at all
        found = await no_retries.find_transfers(transfer_group="statement_st-1")
        assert len(found) == 1  # the money moved although the caller never heard
        # Retrying with the same key replays the stored answer instead of paying again.
        replayed = await no_retries.create_transfer(request_for(cafe))
        assert [replayed] == found
    finally:
        await no_retries.aclose()


async def test_the_sdk_retry_after_a_dropped_answer_gets_the_replay(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await funded_account(gateway, simulator)
    await simulator.add_fault("/v1/transfers", method="POST", mode="drop", count=1)
    transfer = await gateway.create_transfer(request_for(cafe))
    assert await gateway.find_transfers(transfer_group="statement_st-1") == [transfer]


async def test_a_hung_call_times_out_but_the_transfer_exists(
    stripe_server: SimulatorServer, simulator: SimulatorControl
) -> None:
    impatient = make_gateway(stripe_server, max_network_retries=0, timeout_seconds=0.5)
    try:
        cafe = await funded_account(impatient, simulator)
        await simulator.add_fault("/v1/transfers", method="POST", mode="hang", count=1)
        with pytest.raises(GatewayUnavailable):
            await impatient.create_transfer(request_for(cafe))
        assert len(await impatient.find_transfers(transfer_group="statement_st-1")) == 1
    finally:
        await impatient.aclose()


async def test_a_delayed_call_holds_its_key_until_it_finishes(
    stripe_server: SimulatorServer, simulator: SimulatorControl
) -> None:
    patient = make_gateway(stripe_server, max_network_retries=0)
    impatient = make_gateway(stripe_server, max_network_retries=0, timeout_seconds=0.3)
    try:
        cafe = await funded_account(patient, simulator)
        await simulator.add_fault("/v1/transfers", method="POST", mode="delay", delay_ms=1_500)
        slow = asyncio.create_task(patient.create_transfer(request_for(cafe)))
        await asyncio.sleep(0.3)
        with pytest.raises(GatewayUnavailable) as in_use:  # the same key, still in progress
            await patient.create_transfer(request_for(cafe))
        assert in_use.value.http_status == 409 and in_use.value.code == "idempotency_key_in_use"
        transfer = await slow
        assert await patient.find_transfers(transfer_group="statement_st-1") == [transfer]

        await simulator.add_fault("/v1/transfers", method="POST", mode="delay", delay_ms=1_000)
        with pytest.raises(GatewayUnavailable):  # the caller gives up; the work goes on
            await impatient.create_transfer(request_for(cafe, "st-2"))
        await asyncio.sleep(1.2)
        assert len(await patient.find_transfers(transfer_group="statement_st-2")) == 1
    finally:
        await patient.aclose()
        await impatient.aclose()


async def test_faults_match_method_and_path_and_run_out(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await funded_account(gateway, simulator)
    transfer = await gateway.create_transfer(request_for(cafe))
    await simulator.add_fault("/v1/transfers/*/reversals", method="POST", count=5, status=500)
    # Reads and other paths are untouched.
    assert (await gateway.get_transfer(transfer.id)).id == transfer.id
    with pytest.raises(GatewayUnavailable):
        await gateway.reverse_transfer(transfer.id, idempotency_key="rev-1", amount=1)
    assert [f["remaining"] for f in await simulator.faults()] == [2]  # 3 tries used 3
    await simulator.clear_faults()
    reversal = await gateway.reverse_transfer(transfer.id, idempotency_key="rev-1", amount=1)
    assert reversal.amount == 1


async def test_an_altered_transfer_shows_in_both_lists(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await funded_account(gateway, simulator)
    transfer = await gateway.create_transfer(request_for(cafe))
    await simulator.alter_transfer(transfer.id, amount=1_999, currency="usd")
    altered = await gateway.get_transfer(transfer.id)
    assert (altered.amount, altered.currency) == (1_999, "USD")
    now = datetime.now(UTC)
    ledger_side = await gateway.list_balance_transactions(
        created_from=now - timedelta(hours=1),
        created_to=now + timedelta(hours=1),
        transaction_type="transfer",
    )
    assert [(t.source_id, t.amount, t.currency) for t in ledger_side] == [
        (transfer.id, -1_999, "USD")
    ]


async def test_a_deleted_transfer_is_gone(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await funded_account(gateway, simulator)
    transfer = await gateway.create_transfer(request_for(cafe))
    await simulator.delete_transfer(transfer.id)
    with pytest.raises(GatewayNotFound):
        await gateway.get_transfer(transfer.id)
    assert await gateway.find_transfers(transfer_group="statement_st-1") == []
    now = datetime.now(UTC)
    assert (
        await gateway.list_balance_transactions(
            created_from=now - timedelta(hours=1),
            created_to=now + timedelta(hours=1),
            transaction_type="transfer",
        )
        == []
    )


async def test_concurrent_calls_with_one_key_pay_exactly_once(
    gateway: StripeGateway, simulator: SimulatorControl
) -> None:
    cafe = await funded_account(gateway, simulator)
    # The first call holds the key for a while, so the others arrive while it is in progress.
    await simulator.add_fault("/v1/transfers", method="POST", mode="delay", delay_ms=300)
    outcomes = await asyncio.gather(
        *(gateway.create_transfer(request_for(cafe)) for _ in range(20)), return_exceptions=True
    )
    paid = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert paid, "no call succeeded"
    assert len({t.id for t in paid}) == 1  # every answer names the same transfer
    assert all(isinstance(e, GatewayUnavailable) and e.http_status == 409 for e in refused)
    assert len(await gateway.find_transfers(transfer_group="statement_st-1")) == 1
    balance = await gateway.sdk.v1.balance.retrieve_async()
    assert [(b.currency, b.amount) for b in balance.available] == [("cny", 1_000_000 - 2_000)]
