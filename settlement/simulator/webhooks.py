"""Signed webhook deliveries to the registered endpoints, exactly as Stripe signs them.

`Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key=the whole "whsec_..." secret,
message="<t>." + raw body)>`, which `stripe.Webhook.construct_event` verifies. Platform events go
to endpoints registered without `connect`; events of connected accounts (with `account`) go to
endpoints registered with `connect=true`. A failed delivery (no 2xx) is retried after each delay
of the retry schedule, then given up.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from coalition.settlement.simulator.events import event_matches
from coalition.settlement.simulator.store import Store, StripeObject

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def signature_header(payload: str | bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` value for `payload` signed with `secret` at `timestamp`."""
    body = payload if isinstance(payload, bytes) else payload.encode("utf-8")
    moment = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(
        secret.encode("utf-8"), f"{moment}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return f"t={moment},v1={digest}"


@dataclass
class WebhookFault:
    mode: str  # "drop" (never delivered) or "duplicate" (delivered twice)
    remaining: int
    event_type: str | None = None

    def applies(self, event: StripeObject) -> bool:
        return self.remaining > 0 and (
            self.event_type is None or event_matches(self.event_type, event["type"])
        )


@dataclass
class Delivery:
    event_id: str
    event_type: str
    endpoint_id: str
    url: str
    attempts: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "pending"  # pending | delivered | failed | dropped
    duplicate: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "event": self.event_id,
            "type": self.event_type,
            "endpoint": self.endpoint_id,
            "url": self.url,
            "outcome": self.outcome,
            "duplicate": self.duplicate,
            "attempts": self.attempts,
        }


class WebhookDispatcher:
    """Delivers each new event to the matching endpoints in the background."""

    def __init__(self, store: Store, *, retry_delays: list[float], timeout: float = 10.0) -> None:
        self.store = store
        self.retry_delays = retry_delays
        self.timeout = timeout
        self.faults: list[WebhookFault] = []
        self.deliveries: list[Delivery] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def endpoints_for(self, event: StripeObject) -> list[StripeObject]:
        connect_event = "account" in event
        return [
            endpoint
            for endpoint in self.store.of_kind("webhook_endpoint", self.store.platform_id)
            if endpoint["status"] == "enabled"
            and bool(self.store.hidden.get(endpoint["id"], {}).get("connect")) == connect_event
            and any(event_matches(p, event["type"]) for p in endpoint["enabled_events"])
        ]

    def on_event(self, event: StripeObject) -> None:
        endpoints = self.endpoints_for(event)
        event["pending_webhooks"] = len(endpoints)
        for endpoint in endpoints:
            self.schedule(event, endpoint)

    def schedule(self, event: StripeObject, endpoint: StripeObject) -> None:
        fault = next((f for f in self.faults if f.applies(event)), None)
        copies = 1
        if fault is not None:
            fault.remaining -= 1
            if fault.mode == "drop":
                delivery = Delivery(event["id"], event["type"], endpoint["id"], endpoint["url"])
                delivery.outcome = "dropped"
                self.deliveries.append(delivery)
                return
            copies = 2
        for index in range(copies):
            delivery = Delivery(event["id"], event["type"], endpoint["id"], endpoint["url"])
            delivery.duplicate = index > 0
            self.deliveries.append(delivery)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a unit test driving the store directly)
                continue
            task = loop.create_task(self._deliver(event, endpoint, delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, event: StripeObject, endpoint: StripeObject, delivery: Delivery
    ) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        payload = json.dumps(event, indent=2, ensure_ascii=False).encode("utf-8")
        delays = [0.0, *self.retry_delays]
        for attempt, delay in enumerate(delays, start=1):
            if delay:
                await asyncio.sleep(delay)
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": USER_AGENT,
                "Stripe-Signature": signature_header(payload, endpoint["secret"]),
            }
            record: dict[str, Any] = {"attempt": attempt, "at": time.time()}
            try:
                response = await self._client.post(
                    endpoint["url"], content=payload, headers=headers
                )
                record["status"] = response.status_code
                ok = 200 <= response.status_code < 300
            except httpx.HTTPError as exc:
                record["error"] = type(exc).__name__
                ok = False
            delivery.attempts.append(record)
            if ok:
                delivery.outcome = "delivered"
                stored = self.store.objects.get(event["id"])
                if stored is not None and stored["pending_webhooks"] > 0 and not delivery.duplicate:
                    stored["pending_webhooks"] -= 1
                return
        delivery.outcome = "failed"

    def redeliver(self, event: StripeObject) -> int:
        endpoints = self.endpoints_for(event)
        for endpoint in endpoints:
            self.schedule(event, endpoint)
        return len(endpoints)

    async def flush(self, within: float = 30.0) -> bool:
        """Wait until no delivery is in progress; False when `within` seconds ran out first."""
        deadline = time.monotonic() + within
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return True

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
