"""Sending outgoing webhooks: the signature, and one attempt of a delivery at a time (`deliver`,
run by the worker's `deliver_webhook` job) with its retries.

Every delivery is a POST of the event's JSON, serialised once and deterministically
(`payload_bytes`), with these headers:

    Content-Type: application/json
    Coalition-Event-Id: <event id>          (the same for every endpoint and every replay)
    Coalition-Event-Type: <event type>
    Coalition-Delivery-Id: <delivery id>    (one per endpoint; a replay is a new delivery)
    Coalition-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}." + raw body)>

The HMAC key is the endpoint's whole secret (`whsec_...`) as UTF-8. Receivers recompute it
over the raw body bytes, compare in constant time and refuse timestamps older than a few minutes
(`verify_signature` does all three). A 2xx answer within `webhook_timeout_seconds` is success;
anything else is retried on `webhook_retry_schedule_seconds`, then the delivery is failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from coalition.merchants.services.webhooks import DELIVER_JOB
from coalition.platform.db import utcnow
from coalition.platform.jobs import OUTBOX_JOB_PREFIX, JobOutbox, commit, enqueue
from coalition.platform.settings import Settings

# --- signing -----------------------------------------------------------------------------------

SIGNATURE_HEADER = "Coalition-Signature"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
USER_AGENT = "Coalition-Webhooks/1"


def payload_bytes(payload: dict[str, Any]) -> bytes:
    """The exact body sent: compact, key-sorted JSON, so every attempt sends the same bytes."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def sign(secret: str, timestamp: int, body: bytes | str) -> str:
    """Hex HMAC-SHA256, keyed with the whole secret (UTF-8), of `f"{timestamp}."` + raw body."""
    raw = body.encode() if isinstance(body, str) else body
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes | str) -> str:
    """The `Coalition-Signature` value: `t=<unix seconds>,v1=<hex signature>`."""
    return f"t={timestamp},{SIGNATURE_VERSION}={sign(secret, timestamp, body)}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes | str,
    tolerance: int | None = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: int | None = None,
) -> bool:
    """Check a `Coalition-Signature` header the way a receiver should.

    True when one of its `v1` signatures matches the raw `body` under `secret` (compared in
    constant time) and its timestamp `t` is within `tolerance` seconds of `now` (the current
    time by default; `tolerance=None` skips the time check, e.g. for stored payloads).
    """
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and timestamp is None:
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif name == SIGNATURE_VERSION and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = int(time.time()) if now is None else now
    if tolerance is not None and abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected.encode(), s.encode()) for s in signatures)


# --- sending -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendResult:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def delivery_headers(
    delivery: WebhookDelivery, secret: str, body: bytes, timestamp: int
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Coalition-Event-Id": str(delivery.event_id),
        "Coalition-Event-Type": delivery.event_type,
        "Coalition-Delivery-Id": str(delivery.id),
        SIGNATURE_HEADER: signature_header(secret, timestamp, body),
    }


async def post_signed(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str],
    body: bytes,
    time_limit: float,
) -> SendResult:
    """POST once; never raises for network trouble: the outcome is the status code or error.

    `time_limit` (seconds) bounds the whole exchange. Redirects are not followed and the
    response body is never read (a receiver answers with its status code).
    """
    started = time.monotonic()
    status_code: int | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(time_limit):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                status_code = response.status_code
    except TimeoutError:
        error = f"timed out after {time_limit:g} s"
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    duration_ms = int((time.monotonic() - started) * 1000)
    return SendResult(status_code=status_code, error=error and error[:500], duration_ms=duration_ms)


def _outbox_id(job_id: str | None) -> uuid.UUID | None:
    if not job_id or not job_id.startswith(OUTBOX_JOB_PREFIX):
        return None
    try:
        return uuid.UUID(job_id.removeprefix(OUTBOX_JOB_PREFIX))
    except ValueError:
        return None


async def _job_already_ran(session: AsyncSession, outbox_id: uuid.UUID | None) -> bool:
    if outbox_id is None:
        return False
    completed_at = (
        await session.execute(
            select(col(JobOutbox.completed_at)).where(col(JobOutbox.id) == outbox_id)
        )
    ).scalar_one_or_none()
    return completed_at is not None


async def _mark_job_done(session: AsyncSession, outbox_id: uuid.UUID | None) -> None:
    """Mark the running job done in the same transaction as its attempt, so a duplicate of the
    job (re-sent by the relay) can tell that this attempt was already made."""
    if outbox_id is not None:
        await session.execute(
            update(JobOutbox).where(col(JobOutbox.id) == outbox_id).values(completed_at=utcnow())
        )


async def deliver(
    session: AsyncSession,
    settings: Settings,
    delivery_id: uuid.UUID,
    *,
    job_id: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> str:
    """Make one attempt of a delivery and record it; returns what happened.

    The delivery row is locked (`FOR UPDATE SKIP LOCKED`) for the whole attempt, so a second
    worker holding the same job skips it instead of sending twice; a delivery no longer pending
    and a job (`job_id` = `outbox:<id>`) whose attempt was already recorded are skipped too.
    A failed attempt schedules the next one on `webhook_retry_schedule_seconds`, in the same
    transaction as the attempt record; when the schedule is exhausted the delivery has failed.
    """
    delivery = (
        await session.execute(
            select(WebhookDelivery)
            .where(col(WebhookDelivery.id) == delivery_id)
            .with_for_update(skip_locked=True)
        )
    ).scalar_one_or_none()
    if delivery is None:
        return "skipped: gone, or being delivered by another worker"
    if delivery.status != "pending":
        return f"skipped: already {delivery.status}"
    outbox_id = _outbox_id(job_id)
    if await _job_already_ran(session, outbox_id):
        return "skipped: this job already made its attempt"
    endpoint = await session.get_one(WebhookEndpoint, delivery.endpoint_id)
    if not endpoint.enabled:
        delivery.status, delivery.next_attempt_at = "failed", None
        delivery.last_error = "endpoint disabled"
        await _mark_job_done(session, outbox_id)
        await commit(session)
        return "skipped: endpoint disabled"

    body = payload_bytes(delivery.payload)
    attempted_at = utcnow()
    headers = delivery_headers(delivery, endpoint.secret, body, int(attempted_at.timestamp()))
    timeout = settings.webhook_timeout_seconds
    if client is None:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as own_client:
            result = await post_signed(
                own_client, endpoint.url, headers=headers, body=body, time_limit=timeout
            )
    else:
        result = await post_signed(
            client, endpoint.url, headers=headers, body=body, time_limit=timeout
        )

    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            attempted_at=attempted_at,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
        )
    )
    delivery.attempts += 1
    delivery.last_status_code, delivery.last_error = result.status_code, result.error
    schedule = settings.webhook_retry_schedule_seconds
    if result.ok:
        delivery.status, delivery.next_attempt_at = "succeeded", None
        delivery.delivered_at = utcnow()
        outcome = "succeeded"
    elif delivery.attempts <= len(schedule):
        next_attempt_at = utcnow() + timedelta(seconds=schedule[delivery.attempts - 1])
        delivery.next_attempt_at = next_attempt_at
        await enqueue(session, DELIVER_JOB, str(delivery.id), defer_until=next_attempt_at)
        outcome = f"retry {delivery.attempts + 1} at {next_attempt_at.isoformat()}"
    else:
        delivery.status, delivery.next_attempt_at = "failed", None
        outcome = "failed"
    await _mark_job_done(session, outbox_id)
    await commit(session)
    return outcome
