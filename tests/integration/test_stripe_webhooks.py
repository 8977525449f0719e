"""Signed webhook deliveries from the simulator, verified through the gateway and the SDK."""

from __future__ import annotations

import json
import time

import pytest
import stripe

from coalition.settlement.gateway import (
    GatewayNotConfigured,
    TransferRequest,
    WebhookSignatureInvalid,
)
from coalition.settlement.simulator import SimulatorServer, signature_header
from coalition.settlement.simulator.control import SimulatorControl
from coalition.settlement.stripe_gateway import StripeGateway
from tests.integration.stripe_helpers import (
    WebhookReceiver,
    eventually,
    make_gateway,
    onboarded_account,
)


async def register(gateway: StripeGateway, url: str, *, connect: bool = False) -> str:
    endpoint = await gateway.sdk.v1.webhook_endpoints.create_async(
        {
            "url": url,
            "enabled_events": ["transfer.created", "transfer.reversed", "account.updated"],
            "connect": connect,
        }
    )
    assert endpoint.secret is not None and endpoint.secret.startswith("whsec_")
    return endpoint.secret


async def pay(gateway: StripeGateway, destination: str, statement: str) -> str:
    transfer = await gateway.create_transfer(
        TransferRequest(
            amount=300,
            currency="CNY",
            destination=destination,
            transfer_group=f"statement_{statement}",
            idempotency_key=f"pay-{statement}",
            metadata={"statement_id": statement},
        )
    )
    return transfer.id


async def test_deliveries_verify_with_the_gateway_and_the_sdk(
    stripe_server: SimulatorServer,
    gateway: StripeGateway,
    simulator: SimulatorControl,
    webhook_receiver: tuple[str, WebhookReceiver],
) -> None:
    url, receiver = webhook_receiver
    secret = await register(gateway, url)
    verifier = make_gateway(stripe_server, webhook_secret=secret)
    try:
        cafe = await onboarded_account(gateway, simulator)
        await simulator.top_up(10_000, "cny")
        transfer_id = await pay(gateway, cafe.id, "st-1")
        await simulator.flush_webhooks()
        assert len(receiver.received) == 1  # account.updated goes to Connect endpoints only
        delivery = receiver.received[0]
        assert delivery.path == "/stripe/webhooks"
        assert delivery.headers["content-type"].startswith("application/json")
        header = delivery.headers["stripe-signature"]
        assert header.startswith("t=") and ",v1=" in header

        event = verifier.verify_webhook(delivery.body, header)
        assert event.type == "transfer.created"
        assert event.object["id"] == transfer_id
        assert event.object["metadata"] == {"statement_id": "st-1"}
        assert event.account is None
        sdk_event = stripe.Webhook.construct_event(delivery.body, header, secret)
        assert sdk_event.id == event.id
        polled = await gateway.list_events(types=["transfer.created"])
        assert [e.id for e in polled] == [event.id]  # the polling backstop sees the same event
    finally:
        await verifier.aclose()


async def test_tampered_stale_unsigned_and_foreign_payloads_are_refused(
    stripe_server: SimulatorServer,
    gateway: StripeGateway,
    simulator: SimulatorControl,
    webhook_receiver: tuple[str, WebhookReceiver],
) -> None:
    url, receiver = webhook_receiver
    secret = await register(gateway, url)
    verifier = make_gateway(stripe_server, webhook_secret=secret)
    stranger = make_gateway(stripe_server, webhook_secret="whsec_someone_else")
    try:
        cafe = await onboarded_account(gateway, simulator)
        await simulator.top_up(10_000, "cny")
        await pay(gateway, cafe.id, "st-1")
        await simulator.flush_webhooks()
        body, header = receiver.received[0].body, receiver.received[0].headers["stripe-signature"]
        assert verifier.verify_webhook(body, header).type == "transfer.created"

        payload = json.loads(body)
        payload["data"]["object"]["amount"] = 300_000
        tampered = json.dumps(payload, indent=2).encode()
        with pytest.raises(WebhookSignatureInvalid):
            verifier.verify_webhook(tampered, header)

        stale = signature_header(body, secret, timestamp=int(time.time()) - 3_600)
        with pytest.raises(WebhookSignatureInvalid):
            verifier.verify_webhook(body, stale)
        fresh = signature_header(body, secret, timestamp=int(time.time()) - 10)
        assert verifier.verify_webhook(body, fresh).type == "transfer.created"

        with pytest.raises(WebhookSignatureInvalid):
            verifier.verify_webhook(body, None)
        with pytest.raises(WebhookSignatureInvalid):
            verifier.verify_webhook(body, "garbage")
        with pytest.raises(WebhookSignatureInvalid):
            stranger.verify_webhook(body, header)
        with pytest.raises(GatewayNotConfigured):
            gateway.verify_webhook(body, header)  # this gateway has no signing secret
    finally:
        await verifier.aclose()
        await stranger.aclose()


async def test_connect_endpoints_get_connected_account_events(
    stripe_server: SimulatorServer,
    gateway: StripeGateway,
    simulator: SimulatorControl,
    webhook_receiver: tuple[str, WebhookReceiver],
) -> None:
    url, receiver = webhook_receiver
    secret = await register(gateway, url, connect=True)
    verifier = make_gateway(stripe_server, webhook_secret=secret)
    try:
        cafe = await onboarded_account(gateway, simulator)
        await simulator.top_up(10_000, "cny")
        await pay(gateway, cafe.id, "st-1")  # a platform event: not for a Connect endpoint
        await simulator.flush_webhooks()
        events = [
            verifier.verify_webhook(r.body, r.headers["stripe-signature"])
            for r in receiver.received
        ]
        assert [(e.type, e.account) for e in events] == [("account.updated", cafe.id)]
        assert events[0].object["charges_enabled"] is True
    finally:
        await verifier.aclose()


async def test_dropped_duplicated_and_retried_deliveries(
    gateway: StripeGateway,
    simulator: SimulatorControl,
    webhook_receiver: tuple[str, WebhookReceiver],
) -> None:
    url, receiver = webhook_receiver
    await register(gateway, url)
    cafe = await onboarded_account(gateway, simulator)
    await simulator.top_up(10_000, "cny")

    await simulator.webhook_fault("drop", event_type="transfer.created")
    dropped = await pay(gateway, cafe.id, "st-1")
    await simulator.webhook_fault("duplicate", event_type="transfer.created")
    doubled = await pay(gateway, cafe.id, "st-2")
    await simulator.flush_webhooks()
    receiver.answers.extend([503])  # the next delivery fails once, then the retry succeeds
    retried = await pay(gateway, cafe.id, "st-3")
    deliveries = await simulator.flush_webhooks()

    delivered_ids = [json.loads(r.body)["data"]["object"]["id"] for r in receiver.received]
    assert dropped not in delivered_ids
    assert delivered_ids.count(doubled) == 2
    assert delivered_ids.count(retried) == 2  # the failed attempt and its retry
    event_ids = [json.loads(r.body)["id"] for r in receiver.received]
    assert event_ids[0] == event_ids[1]  # a duplicate carries the same event id

    by_outcome = sorted((d["outcome"], len(d["attempts"])) for d in deliveries)
    assert by_outcome == [("delivered", 1), ("delivered", 1), ("delivered", 2), ("dropped", 0)]
    # The dropped event is still in /v1/events, and can be delivered again.
    events = await gateway.list_events(types=["transfer.created"])
    lost = next(e for e in events if e.object["id"] == dropped)
    assert await simulator.redeliver(lost.id) == 1
    await simulator.flush_webhooks()
    await eventually(lambda: any(json.loads(r.body)["id"] == lost.id for r in receiver.received))
