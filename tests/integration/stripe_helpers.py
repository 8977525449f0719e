"""The Stripe simulator on a loopback port, a gateway pointed at it, and a webhook receiver.

Import the fixtures into a test module: `from tests.integration.stripe_helpers import *`-style
explicit imports (pytest finds fixtures imported into the module).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from coalition.settlement.gateway import ConnectedAccount
from coalition.settlement.simulator import SimulatorConfig, SimulatorServer
from coalition.settlement.simulator.control import SimulatorControl
from coalition.settlement.simulator.server import BackgroundServer
from coalition.settlement.stripe_gateway import StripeGateway

API_KEY = "sk_test_coalition_tests"
SEED = 20261201
WEBHOOK_SECRET = "whsec_coalition_tests"


@dataclass
class ReceivedWebhook:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """An ASGI app recording every POST; answers the statuses queued in `answers`, then 200."""

    received: list[ReceivedWebhook] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    else:
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(ReceivedWebhook(scope["path"], headers, body))
        status = self.answers.pop(0) if self.answers else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        seed=SEED,
        api_keys=frozenset({API_KEY}),
        webhook_retry_delays=[0.05, 0.1],
        webhook_timeout=5.0,
    )
    with SimulatorServer(config) as server:
        yield server


@pytest.fixture
async def simulator(stripe_server: SimulatorServer) -> AsyncIterator[SimulatorControl]:
    """The simulator, reset to an empty state with deterministic ids, and its control API."""
    async with SimulatorControl(stripe_server.url) as control:
        await control.reset(seed=SEED)
        yield control


def make_gateway(
    server: SimulatorServer, *, webhook_secret: str | None = None, **options: Any
) -> StripeGateway:
    options.setdefault("max_network_retries", 2)
    options.setdefault("timeout_seconds", 10.0)
    return StripeGateway(API_KEY, api_base=server.url, webhook_secret=webhook_secret, **options)


@pytest.fixture
async def gateway(
    stripe_server: SimulatorServer, simulator: SimulatorControl
) -> AsyncIterator[StripeGateway]:
    client = make_gateway(stripe_server)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def webhook_server() -> Iterator[tuple[BackgroundServer, WebhookReceiver]]:
    receiver = WebhookReceiver()
    with BackgroundServer(receiver) as server:
        yield server, receiver


@pytest.fixture
def webhook_receiver(
    webhook_server: tuple[BackgroundServer, WebhookReceiver],
) -> tuple[str, WebhookReceiver]:
    server, receiver = webhook_server
    receiver.received.clear()
    receiver.answers.clear()
    return f"{server.url}/stripe/webhooks", receiver


async def onboarded_account(
    gateway: StripeGateway, simulator: SimulatorControl, name: str = "cafe"
) -> ConnectedAccount:
    account = await gateway.create_connected_account(
        email=f"finance@{name}.test",
        country="CN",
        idempotency_key=f"account-{name}",
        metadata={"org": name},
    )
    await simulator.complete_onboarding(account.id)
    return await gateway.get_connected_account(account.id)


@dataclass
class SignedWebhooks:
    """Stripe's webhooks (every event, platform and Connect) to the receiver, signed with a
    secret the app's gateway knows: `forward_webhooks` hands them to our endpoint."""

    gateway: StripeGateway
    receiver: WebhookReceiver


@pytest.fixture
async def signed_webhooks(
    app: Litestar,
    stripe_server: SimulatorServer,
    simulator: SimulatorControl,
    webhook_receiver: tuple[str, WebhookReceiver],
) -> AsyncIterator[SignedWebhooks]:
    url, receiver = webhook_receiver
    for connect in (False, True):
        await simulator.register_webhook_endpoint(url, secret=WEBHOOK_SECRET, connect=connect)
    verifier = make_gateway(stripe_server, webhook_secret=WEBHOOK_SECRET)
    app.state["settlement_gateway"] = verifier
    yield SignedWebhooks(verifier, receiver)
    app.state.pop("settlement_gateway", None)
    await verifier.aclose()


async def forward_webhooks(
    client: AsyncTestClient[Litestar], receiver: WebhookReceiver, event_type: str | None = None
) -> list[bool]:
    """Hand what the simulator delivered (of `event_type`, or all) to our endpoint, byte for
    byte, and forget it; each answer's `duplicate`."""
    chosen = [r for r in receiver.received if event_type is None or event_type.encode() in r.body]
    answers = []
    for delivery in chosen:
        receiver.received.remove(delivery)
        response = await client.post(
            "/api/v1/stripe/webhooks",
            content=delivery.body,
            headers={"Stripe-Signature": delivery.headers["stripe-signature"]},
        )
        assert response.status_code == 200, response.text
        answers.append(bool(response.json()["duplicate"]))
    return answers


async def eventually(predicate: Any, within: float = 5.0) -> None:
    """Wait until `predicate()` (or, when it answers an awaitable, its result) is true
    (background deliveries, another process's work); fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        answer = predicate()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
