"""Outgoing webhooks against a real HTTP receiver on 127.0.0.1: signed deliveries, retries on
the configured schedule, the delivery log and replays, disabled endpoints, exactly one attempt
per job across workers, audit, and tenant isolation."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import WebhookDelivery
from coalition.merchants.services import webhook_delivery, webhooks
from coalition.platform import jobs
from coalition.platform.audit import AuditEntry
from coalition.platform.db import SessionMaker
from coalition.platform.jobs import JobOutbox
from coalition.platform.settings import Settings
from coalition.platform.worker import build_worker
from tests.integration.conftest import World, auth_headers

Client = AsyncTestClient[Litestar]
SIGNATURE = re.compile(r"^t=(\d+),v1=([0-9a-f]{64})$")


# --- a real receiver ---------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int


@dataclass
class Receiver:
    """A tiny threaded HTTP server: answers each POST with the next of `statuses` (then 200)."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else 200
            self.requests.append(Received(headers=headers, body=body, status=status))
        return status


def _serve(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = receiver.answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/coalition/webhooks"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve(Receiver())


@pytest.fixture
def other_receiver() -> Iterator[Receiver]:
    yield from _serve(Receiver())


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/nobody-listens"


# --- helpers -----------------------------------------------------------------------------------


def fast(settings: Settings, schedule: list[int]) -> Settings:
    return settings.model_copy(
        update={"webhook_retry_schedule_seconds": schedule, "webhook_timeout_seconds": 3.0}
    )


async def settle_dispatches(limit_s: float = 5.0) -> None:
    """Wait until post-commit hand-overs still in flight are done. The app under test runs on
    the test client's own event loop, so its tasks are waited for here, not gathered."""
    for _ in range(int(limit_s / 0.01)):
        if all(t.done() for t in list(jobs._background)):
            return
        await asyncio.sleep(0.01)


async def run_worker(settings: Settings, sessionmaker: SessionMaker, rounds: int = 10) -> None:
    """Run a real arq worker in burst mode until every recorded job has run.

    Burst mode stops when the queue is empty, which can happen between a job's commit and the
    post-commit hand-over of the retry it scheduled; the next round's relay picks that up."""
    await settle_dispatches()
    for _ in range(rounds):
        worker = build_worker(settings, burst=True, handle_signals=False, poll_delay=0.05)
        try:
            await worker.main()
        finally:
            await worker.close()
        assert worker.jobs_failed == 0
        async with sessionmaker() as session:
            left = (
                await session.execute(
                    select(func.count()).where(
                        col(JobOutbox.completed_at).is_(None),
                        col(JobOutbox.abandoned_at).is_(None),
                    )
                )
            ).scalar_one()
        if left == 0:
            return
    raise AssertionError(f"{left} jobs still pending after {rounds} worker runs")


async def emit(
    sessionmaker: SessionMaker,
    org_ids: list[uuid.UUID],
    event_type: str = "campaign.approved",
    data: dict[str, Any] | None = None,
) -> uuid.UUID:
    async with sessionmaker() as session:
        event_id = await webhooks.emit_event(
            session,
            event_type=event_type,
            org_ids=org_ids,
            data=data or {"campaign": {"id": str(uuid.uuid4()), "name": "咖啡 + 流量 joint offer"}},
        )
        await jobs.commit(session)
    return event_id


async def register(
    client: Client,
    headers: dict[str, str],
    org_id: uuid.UUID,
    url: str,
    event_types: list[str] | None = None,
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/organizations/{org_id}/webhooks",
        json={"url": url, "event_types": event_types or ["*"]},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def deliveries_of(session: AsyncSession, endpoint_id: str) -> list[WebhookDelivery]:
    rows = await session.execute(
        select(WebhookDelivery)
        .where(col(WebhookDelivery.endpoint_id) == uuid.UUID(endpoint_id))
        .order_by(col(WebhookDelivery.created_at))
        .execution_options(populate_existing=True)
    )
    return list(rows.scalars())


def independent_hmac(secret: str, header: str, body: bytes) -> bool:
    """The documented scheme, recomputed here without the service's helpers."""
    match = SIGNATURE.match(header)
    assert match, header
    timestamp, signature = match.groups()
    expected = hmac.new(
        secret.encode("utf-8"), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, signature)


# --- endpoints ---------------------------------------------------------------------------------


async def test_register_endpoint_validates_and_returns_the_secret(
    client: Client, world: World, session: AsyncSession
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    path = f"/api/v1/organizations/{world.cafe.id}/webhooks"
    for body, field_name in (
        ({"url": "http://hooks.cafe.example/in", "event_types": ["*"]}, "url"),
        ({"url": "ftp://127.0.0.1/in", "event_types": ["*"]}, "url"),
        ({"url": "https://user:pw@hooks.cafe.example/in", "event_types": ["*"]}, "url"),
        ({"url": "https://hooks.cafe.example/in", "event_types": []}, "event_types"),
        (
            {"url": "https://hooks.cafe.example/in", "event_types": ["coupon.redeemed", "nope"]},
            "event_types",
        ),
        ({"url": "https://hooks.cafe.example/in", "event_types": ["*"], "x": 1}, "x"),
    ):
        response = await client.post(path, json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field_name, response.json()

    created = await register(
        client,
        admin,
        world.cafe.id,
        "https://hooks.cafe.example/in",
        ["coupon.redeemed", "campaign.approved", "coupon.redeemed"],
    )
    assert created["event_types"] == ["campaign.approved", "coupon.redeemed"]
    assert created["secret"].startswith("whsec_") and created["enabled"] is True
    await register(client, admin, world.cafe.id, "http://localhost:8080/hook", ["*"])
    await register(client, admin, world.cafe.id, "http://127.0.0.1:9/hook", ["*", "payout.paid"])

    shown = await client.get(f"/api/v1/webhooks/{created['id']}", headers=admin)
    assert shown.status_code == 200 and shown.json()["secret"] == created["secret"]
    listed = await client.get(path, headers=admin)
    assert listed.json()["total"] == 3
    assert [e["event_types"] for e in listed.json()["items"]][2] == ["*"]
    assert all("secret" not in e for e in listed.json()["items"])

    entries = (
        (
            await session.execute(
                select(AuditEntry).where(col(AuditEntry.action) == "webhook.created")
            )
        )
        .scalars()
        .all()
    )
    assert len(entries) == 3
    assert created["secret"] not in json.dumps([e.after for e in entries])


async def test_an_organization_has_at_most_20_endpoints(client: Client, world: World) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    for i in range(webhooks.MAX_ENDPOINTS_PER_ORG):
        await register(client, admin, world.cafe.id, f"https://hooks.cafe.example/{i}")
    refused = await client.post(
        f"/api/v1/organizations/{world.cafe.id}/webhooks",
        json={"url": "https://hooks.cafe.example/one-more", "event_types": ["*"]},
        headers=admin,
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "too_many_webhook_endpoints"
    bank_admin = await auth_headers(client, "admin@bank.test")
    await register(client, bank_admin, world.bank.id, "https://hooks.bank.example/in")


# --- delivery ----------------------------------------------------------------------------------


async def test_delivery_is_signed_with_the_documented_scheme(
    client: Client,
    world: World,
    settings: Settings,
    sessionmaker: SessionMaker,
    session: AsyncSession,
    receiver: Receiver,
    other_receiver: Receiver,
) -> None:
    cafe_admin = await auth_headers(client, "admin@cafe.test")
    endpoint = await register(
        client, cafe_admin, world.cafe.id, receiver.url, ["campaign.approved"]
    )
    await register(client, cafe_admin, world.cafe.id, other_receiver.url, ["coupon.redeemed"])
    bank_admin = await auth_headers(client, "admin@bank.test")
    await register(client, bank_admin, world.bank.id, other_receiver.url, ["*"])

    data = {
        "campaign": {"id": "c-1", "name": "咖啡 + 流量", "budget": {"amount": 100, "cur": "CNY"}}
    }
    event_id = await emit(sessionmaker, [world.cafe.id], "campaign.approved", data)
    await run_worker(fast(settings, [0]), sessionmaker)

    assert other_receiver.requests == []  # not subscribed, or another organization
    (received,) = receiver.requests
    (delivery,) = await deliveries_of(session, endpoint["id"])
    headers = received.headers
    assert headers["content-type"] == "application/json"
    assert headers["coalition-event-id"] == str(event_id)
    assert headers["coalition-event-type"] == "campaign.approved"
    assert headers["coalition-delivery-id"] == str(delivery.id)
    # The body is the stored payload, serialised compactly with sorted keys.
    assert received.body == json.dumps(
        delivery.payload, separators=(",", ":"), sort_keys=True
    ).encode("utf-8")
    event = json.loads(received.body)
    assert event["id"] == str(event_id) and event["type"] == "campaign.approved"
    assert event["data"] == data

    header = headers["coalition-signature"]
    timestamp, v1 = SIGNATURE.match(header).groups()  # type: ignore[union-attr]
    assert abs(int(timestamp) - time.time()) < 60
    assert independent_hmac(endpoint["secret"], header, received.body)
    assert webhook_delivery.sign(endpoint["secret"], int(timestamp), received.body) == v1
    assert webhook_delivery.verify_signature(endpoint["secret"], header, received.body)
    assert not webhook_delivery.verify_signature(endpoint["secret"], header, received.body + b" ")
    assert not webhook_delivery.verify_signature("whsec_wrong", header, received.body)
    assert not webhook_delivery.verify_signature(
        endpoint["secret"], header, received.body, now=int(timestamp) + 301
    )
    assert webhook_delivery.verify_signature(
        endpoint["secret"], header, received.body, tolerance=None, now=int(timestamp) + 3600
    )
    assert not webhook_delivery.verify_signature(endpoint["secret"], "v1=" + v1, received.body)

    shown = await client.get(f"/api/v1/webhook-deliveries/{delivery.id}", headers=cafe_admin)
    assert shown.status_code == 200
    detail = shown.json()
    assert detail["status"] == "succeeded" and detail["attempts"] == 1
    assert detail["last_status_code"] == 200 and detail["delivered_at"] is not None
    assert detail["payload"] == event
    assert [a["status_code"] for a in detail["attempt_log"]] == [200]


async def test_failing_receiver_is_retried_until_it_accepts(
    client: Client,
    world: World,
    settings: Settings,
    sessionmaker: SessionMaker,
    session: AsyncSession,
    receiver: Receiver,
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    endpoint = await register(client, admin, world.cafe.id, receiver.url, ["campaign.approved"])
    receiver.statuses = [500, 500]
    event_id = await emit(sessionmaker, [world.cafe.id])

    await run_worker(fast(settings, [0, 0, 0]), sessionmaker)

    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert len({r.body for r in receiver.requests}) == 1  # the same bytes every time
    assert {r.headers["coalition-event-id"] for r in receiver.requests} == {str(event_id)}
    assert len({r.headers["coalition-delivery-id"] for r in receiver.requests}) == 1
    for request in receiver.requests:
        assert independent_hmac(
            endpoint["secret"], request.headers["coalition-signature"], request.body
        )
    (delivery,) = await deliveries_of(session, endpoint["id"])
    assert delivery.status == "succeeded" and delivery.attempts == 3
    assert delivery.next_attempt_at is None and delivery.delivered_at is not None
    shown = await client.get(f"/api/v1/webhook-deliveries/{delivery.id}", headers=admin)
    log = shown.json()["attempt_log"]
    assert [a["status_code"] for a in log] == [500, 500, 200]
    assert all(a["error"] is None and a["duration_ms"] >= 0 for a in log)


async def test_delivery_fails_once_the_schedule_is_exhausted(
    client: Client,
    world: World,
    settings: Settings,
    sessionmaker: SessionMaker,
    session: AsyncSession,
    receiver: Receiver,
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    refusing = await register(client, admin, world.cafe.id, receiver.url)
    unreachable = await register(client, admin, world.cafe.id, closed_port_url())
    receiver.statuses = [503] * 10
    await emit(sessionmaker, [world.cafe.id])

    await run_worker(fast(settings, [0, 0]), sessionmaker)

    assert [r.status for r in receiver.requests] == [503, 503, 503]
    (refused,) = await deliveries_of(session, refusing["id"])
    assert refused.status == "failed" and refused.attempts == 3
    assert refused.last_status_code == 503 and refused.next_attempt_at is None
    (lost,) = await deliveries_of(session, unreachable["id"])
    assert lost.status == "failed" and lost.attempts == 3 and lost.last_status_code is None
    shown = await client.get(f"/api/v1/webhook-deliveries/{lost.id}", headers=admin)
    log = shown.json()["attempt_log"]
    assert len(log) == 3
    assert all(a["status_code"] is None and "ConnectError" in a["error"] for a in log)


async def test_delivery_log_and_replay(
    client: Client,
    world: World,
    settings: Settings,
    sessionmaker: SessionMaker,
    session: AsyncSession,
    receiver: Receiver,
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    endpoint = await register(client, admin, world.cafe.id, receiver.url)
    receiver.statuses = [500]  # one of the three deliveries fails, with no retry scheduled
    event_ids = [await emit(sessionmaker, [world.cafe.id]) for _ in range(3)]
    await run_worker(fast(settings, []), sessionmaker)
    assert sorted(r.status for r in receiver.requests) == [200, 200, 500]

    path = f"/api/v1/webhooks/{endpoint['id']}/deliveries"
    page = await client.get(path, headers=admin)
    assert page.status_code == 200
    assert page.json()["total"] == 3
    assert [d["event_id"] for d in page.json()["items"]] == [str(e) for e in reversed(event_ids)]
    first_two = await client.get(path, params={"limit": 2}, headers=admin)
    rest = await client.get(path, params={"limit": 2, "offset": 2}, headers=admin)
    assert [d["id"] for d in first_two.json()["items"] + rest.json()["items"]] == [
        d["id"] for d in page.json()["items"]
    ]
    succeeded = await client.get(path, params={"status": "succeeded"}, headers=admin)
    assert succeeded.json()["total"] == 2
    failed = (await client.get(path, params={"status": "failed"}, headers=admin)).json()
    assert failed["total"] == 1
    (original,) = failed["items"]
    assert original["attempts"] == 1 and original["last_status_code"] == 500
    bad = await client.get(path, params={"status": "lost"}, headers=admin)
    assert bad.status_code == 422

    replayed = await client.post(
        f"/api/v1/webhook-deliveries/{original['id']}/replay", headers=admin
    )
    assert replayed.status_code == 201, replayed.text
    replay = replayed.json()
    assert replay["replay_of"] == original["id"] and replay["id"] != original["id"]
    assert replay["event_id"] == original["event_id"] and replay["status"] == "pending"
    assert replay["attempts"] == 0 and replay["attempt_log"] == []
    shown_original = await client.get(f"/api/v1/webhook-deliveries/{original['id']}", headers=admin)
    assert replay["payload"] == shown_original.json()["payload"]

    await run_worker(fast(settings, []), sessionmaker)

    last = receiver.requests[-1]
    assert len(receiver.requests) == 4 and last.status == 200
    assert last.headers["coalition-event-id"] == original["event_id"]
    assert last.headers["coalition-delivery-id"] == replay["id"]
    failed_body = next(r.body for r in receiver.requests if r.status == 500)
    assert last.body == failed_body
    done = await client.get(f"/api/v1/webhook-deliveries/{replay['id']}", headers=admin)
    assert done.json()["status"] == "succeeded"
    assert (await client.get(path, headers=admin)).json()["total"] == 4
    entry = (
        await session.execute(
            select(AuditEntry).where(col(AuditEntry.action) == "webhook.delivery_replayed")
        )
    ).scalar_one()
    assert str(entry.subject_id) == replay["id"]


async def test_disabled_endpoint_receives_nothing(
    client: Client,
    world: World,
    settings: Settings,
    sessionmaker: SessionMaker,
    session: AsyncSession,
    receiver: Receiver,
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    off = await register(client, admin, world.cafe.id, receiver.url)
    late = await register(client, admin, world.cafe.id, receiver.url)
    disabled = await client.patch(
        f"/api/v1/webhooks/{off['id']}", json={"enabled": False}, headers=admin
    )
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False and disabled.json()["disabled_at"] is not None

    await emit(sessionmaker, [world.cafe.id])  # `late` is still enabled: a delivery is queued
    assert await deliveries_of(session, off["id"]) == []
    assert (
        await client.patch(f"/api/v1/webhooks/{late['id']}", json={"enabled": False}, headers=admin)
    ).status_code == 200
    await run_worker(fast(settings, [0]), sessionmaker)

    assert receiver.requests == []
    (skipped,) = await deliveries_of(session, late["id"])
    assert skipped.status == "failed" and skipped.attempts == 0
    assert skipped.last_error == "endpoint disabled"
    refused = await client.post(f"/api/v1/webhook-deliveries/{skipped.id}/replay", headers=admin)
    assert refused.status_code == 409
    assert refused.json()["code"] == "webhook_endpoint_disabled"

    enabled = await client.patch(
        f"/api/v1/webhooks/{late['id']}", json={"enabled": True}, headers=admin
    )
    assert enabled.json()["enabled"] is True and enabled.json()["disabled_at"] is None
    replayed = await client.post(f"/api/v1/webhook-deliveries/{skipped.id}/replay", headers=admin)
    assert replayed.status_code == 201
    await run_worker(fast(settings, [0]), sessionmaker)
    assert [r.headers["coalition-delivery-id"] for r in receiver.requests] == [
        replayed.json()["id"]
    ]


async def test_two_workers_never_send_the_same_attempt_twice(
    client: Client,
    world: World,
    settings: Settings,
    sessionmaker: SessionMaker,
    session: AsyncSession,
    receiver: Receiver,
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    endpoint = await register(client, admin, world.cafe.id, receiver.url)
    quick = fast(settings, [0, 0])

    # The same job picked up by two workers at once: one sends, the other skips.
    receiver.delay = 0.3
    await emit(sessionmaker, [world.cafe.id])
    (delivery,) = await deliveries_of(session, endpoint["id"])

    async def attempt() -> str:
        async with sessionmaker() as work:
            return await webhook_delivery.deliver(work, quick, delivery.id)

    outcomes = await asyncio.gather(attempt(), attempt())
    assert sorted(o.split(":")[0] for o in outcomes) == ["skipped", "succeeded"]
    assert len(receiver.requests) == 1

    # A job run again after its attempt was recorded (the relay re-sent it) sends nothing.
    receiver.delay, receiver.statuses = 0.0, [500]
    await emit(sessionmaker, [world.cafe.id])
    pending = next(d for d in await deliveries_of(session, endpoint["id"]) if d.id != delivery.id)

    async def outbox_ids() -> list[uuid.UUID]:
        rows = await session.execute(
            select(JobOutbox)
            .where(col(JobOutbox.function) == "deliver_webhook")
            .order_by(col(JobOutbox.created_at))
        )
        return [r.id for r in rows.scalars() if r.args == [str(pending.id)]]

    (first_job,) = await outbox_ids()
    async with sessionmaker() as work:
        outcome = await webhook_delivery.deliver(
            work, quick, pending.id, job_id=f"outbox:{first_job}"
        )
    assert outcome.startswith("retry 2")
    async with sessionmaker() as work:
        again = await webhook_delivery.deliver(
            work, quick, pending.id, job_id=f"outbox:{first_job}"
        )
    assert again == "skipped: this job already made its attempt"
    assert len(receiver.requests) == 2

    _, retry_job = await outbox_ids()
    async with sessionmaker() as work:
        outcome = await webhook_delivery.deliver(
            work, quick, pending.id, job_id=f"outbox:{retry_job}"
        )
    assert outcome == "succeeded"
    assert [r.status for r in receiver.requests] == [200, 500, 200]
    refreshed = await session.get_one(WebhookDelivery, pending.id, populate_existing=True)
    assert refreshed.status == "succeeded" and refreshed.attempts == 2


# --- management --------------------------------------------------------------------------------


async def test_update_rotate_and_delete_are_audited(
    client: Client,
    world: World,
    settings: Settings,
    sessionmaker: SessionMaker,
    session: AsyncSession,
    receiver: Receiver,
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    endpoint = await register(
        client, admin, world.cafe.id, "https://hooks.cafe.example/v1", ["coupon.redeemed"]
    )
    path = f"/api/v1/webhooks/{endpoint['id']}"

    bad = await client.patch(path, json={"url": "http://hooks.cafe.example/v2"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["field"] == "url"
    nothing = await client.patch(path, json={}, headers=admin)
    assert nothing.status_code == 200
    updated = await client.patch(
        path,
        json={"url": receiver.url, "event_types": ["*"], "description": "ERP bridge"},
        headers=admin,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["url"] == receiver.url and updated.json()["event_types"] == ["*"]

    rotated = await client.post(f"{path}/rotate-secret", headers=admin)
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != endpoint["secret"]
    assert (await client.get(path, headers=admin)).json()["secret"] == new_secret

    await emit(sessionmaker, [world.cafe.id], "payout.paid", {"payout": {"amount": 1200}})
    await run_worker(fast(settings, [0]), sessionmaker)
    (received,) = receiver.requests
    header = received.headers["coalition-signature"]
    assert webhook_delivery.verify_signature(new_secret, header, received.body)
    assert not webhook_delivery.verify_signature(endpoint["secret"], header, received.body)

    deleted = await client.delete(path, headers=admin)
    assert deleted.status_code == 204
    assert (await client.get(path, headers=admin)).status_code == 404
    assert (await client.get(f"{path}/deliveries", headers=admin)).status_code == 404
    assert await deliveries_of(session, endpoint["id"]) == []

    entries = (
        (
            await session.execute(
                select(AuditEntry)
                .where(col(AuditEntry.subject_id) == uuid.UUID(endpoint["id"]))
                .order_by(col(AuditEntry.at))
            )
        )
        .scalars()
        .all()
    )
    assert [e.action for e in entries] == [
        "webhook.created",
        "webhook.updated",
        "webhook.secret_rotated",
        "webhook.deleted",
    ]
    update_entry = entries[1]
    assert update_entry.before == {
        "url": "https://hooks.cafe.example/v1",
        "event_types": ["coupon.redeemed"],
        "description": None,
    }
    assert update_entry.after == {
        "url": receiver.url,
        "event_types": ["*"],
        "description": "ERP bridge",
    }
    logged = json.dumps([[e.before, e.after] for e in entries])
    assert endpoint["secret"] not in logged and new_secret not in logged


async def test_suspending_an_organization_notifies_it_and_the_carrier(
    client: Client,
    world: World,
    settings: Settings,
    sessionmaker: SessionMaker,
    receiver: Receiver,
) -> None:
    cafe_admin = await auth_headers(client, "admin@cafe.test")
    carrier_admin = await auth_headers(client, "admin@carrier.test")
    cafe_hook = await register(
        client, cafe_admin, world.cafe.id, receiver.url, ["organization.suspended"]
    )
    carrier_hook = await register(client, carrier_admin, world.carrier.id, receiver.url, ["*"])
    bank_admin = await auth_headers(client, "admin@bank.test")
    await register(client, bank_admin, world.bank.id, receiver.url, ["*"])

    suspended = await client.post(
        f"/api/v1/organizations/{world.cafe.id}/suspend",
        json={"reason": "chargebacks"},
        headers=carrier_admin,
    )
    assert suspended.status_code == 200, suspended.text
    await run_worker(fast(settings, [0]), sessionmaker)

    assert len(receiver.requests) == 2  # the bank is told nothing
    assert {r.headers["coalition-event-type"] for r in receiver.requests} == {
        "organization.suspended"
    }
    assert len({r.headers["coalition-event-id"] for r in receiver.requests}) == 1
    secrets = {cafe_hook["secret"], carrier_hook["secret"]}
    for request in receiver.requests:
        matching = [
            s
            for s in secrets
            if independent_hmac(s, request.headers["coalition-signature"], request.body)
        ]
        assert len(matching) == 1
        secrets -= set(matching)
        assert json.loads(request.body)["data"]["reason"] == "chargebacks"


async def test_webhooks_are_isolated_between_organizations(
    client: Client, world: World, sessionmaker: SessionMaker, session: AsyncSession
) -> None:
    cafe_admin = await auth_headers(client, "admin@cafe.test")
    endpoint = await register(client, cafe_admin, world.cafe.id, "https://hooks.cafe.example/in")
    await emit(sessionmaker, [world.cafe.id])
    (delivery,) = await deliveries_of(session, endpoint["id"])

    bank_admin = await auth_headers(client, "admin@bank.test")
    for method, path, body in (
        ("GET", f"/api/v1/organizations/{world.cafe.id}/webhooks", None),
        (
            "POST",
            f"/api/v1/organizations/{world.cafe.id}/webhooks",
            {"url": "https://evil.example/in", "event_types": ["*"]},
        ),
        ("GET", f"/api/v1/webhooks/{endpoint['id']}", None),
        ("PATCH", f"/api/v1/webhooks/{endpoint['id']}", {"enabled": False}),
        ("DELETE", f"/api/v1/webhooks/{endpoint['id']}", None),
        ("POST", f"/api/v1/webhooks/{endpoint['id']}/rotate-secret", None),
        ("GET", f"/api/v1/webhooks/{endpoint['id']}/deliveries", None),
        ("GET", f"/api/v1/webhook-deliveries/{delivery.id}", None),
        ("POST", f"/api/v1/webhook-deliveries/{delivery.id}/replay", None),
    ):
        response = await client.request(method, path, json=body, headers=bank_admin)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "not_found"
    own = await client.get(f"/api/v1/organizations/{world.bank.id}/webhooks", headers=bank_admin)
    assert own.json()["total"] == 0

    for email in ("marketing@cafe.test", "finance@cafe.test", "cashier@cafe.test"):
        headers = await auth_headers(client, email)
        response = await client.get(f"/api/v1/webhooks/{endpoint['id']}", headers=headers)
        assert response.status_code == 403, email

    carrier_admin = await auth_headers(client, "admin@carrier.test")
    seen = await client.get(f"/api/v1/webhooks/{endpoint['id']}", headers=carrier_admin)
    assert seen.status_code == 200
    # Nothing the bank tried changed the endpoint.
    unchanged = await client.get(f"/api/v1/webhooks/{endpoint['id']}", headers=cafe_admin)
    assert unchanged.json()["secret"] == endpoint["secret"] and unchanged.json()["enabled"]
