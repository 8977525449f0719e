"""Outgoing webhooks: endpoints an organization registers, events recorded with the change that
caused them (`emit_event`), signed deliveries sent by the worker with retries, the delivery log
and replays.

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
import ipaddress
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
from sqlalchemy import func, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import (
    Organization,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from coalition.merchants.schemas.integrations import (
    WebhookAttemptRead,
    WebhookDeliveryDetail,
    WebhookDeliveryRead,
    WebhookEndpointCreate,
    WebhookEndpointDetail,
    WebhookEndpointRead,
    WebhookEndpointUpdate,
)
from coalition.platform import audit
from coalition.platform.auth import Principal, get_in_tenant
from coalition.platform.db import utcnow
from coalition.platform.errors import Conflict, ValidationFailed
from coalition.platform.jobs import OUTBOX_JOB_PREFIX, JobOutbox, commit, enqueue
from coalition.platform.security import new_secret
from coalition.platform.settings import Settings

# Every event type an endpoint may subscribe to ("*" subscribes to all of them).
EVENT_TYPES = (
    "organization.activated",
    "organization.suspended",
    "terminal.revoked",
    "campaign.proposed",
    "campaign.approved",
    "campaign.activated",
    "campaign.ended",
    "coupon.redeemed",
    "redemption.reversed",
    "statement.closed",
    "payout.paid",
    "reconciliation.discrepancy",
)
DELIVER_JOB = "deliver_webhook"


async def emit_event(
    session: AsyncSession,
    *,
    event_type: str,
    org_ids: Iterable[uuid.UUID],
    data: dict[str, Any],
) -> uuid.UUID:
    """Record one event for every enabled endpoint of `org_ids` that subscribed to it.

    Runs inside the caller's transaction: deliveries exist exactly when the change committed,
    and the worker picks them up only after that commit.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type}")
    event_id = uuid.uuid4()
    now = utcnow()
    envelope = {
        "id": str(event_id),
        "type": event_type,
        "created_at": now.isoformat(),
        "data": data,
    }
    endpoints = (
        await session.execute(
            select(WebhookEndpoint).where(
                col(WebhookEndpoint.org_id).in_(set(org_ids)),
                col(WebhookEndpoint.enabled).is_(True),
                or_(
                    col(WebhookEndpoint.event_types).any(event_type),  # type: ignore[attr-defined,arg-type]
                    col(WebhookEndpoint.event_types).any("*"),  # type: ignore[attr-defined,arg-type]
                ),
            )
        )
    ).scalars()
    for endpoint in endpoints:
        delivery = WebhookDelivery(
            org_id=endpoint.org_id,
            endpoint_id=endpoint.id,
            event_id=event_id,
            event_type=event_type,
            payload=envelope,
            next_attempt_at=now,
        )
        session.add(delivery)
        await enqueue(session, DELIVER_JOB, str(delivery.id))
    return event_id


# --- signing -----------------------------------------------------------------------------------

SECRET_PREFIX = "whsec"  # noqa: S105 - a prefix, not a secret
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


# --- endpoints ---------------------------------------------------------------------------------

# Stripe allows 16; a few more leave room for staging receivers.
MAX_ENDPOINTS_PER_ORG = 20


class TooManyEndpoints(Conflict):
    code, title = "too_many_webhook_endpoints", "This organization has too many webhook endpoints"


class EndpointDisabled(Conflict):
    code, title = "webhook_endpoint_disabled", "The webhook endpoint is disabled"


def endpoint_read(endpoint: WebhookEndpoint) -> WebhookEndpointRead:
    return WebhookEndpointRead(
        id=endpoint.id,
        org_id=endpoint.org_id,
        url=endpoint.url,
        description=endpoint.description,
        event_types=list(endpoint.event_types),
        enabled=endpoint.enabled,
        created_at=endpoint.created_at,
        disabled_at=endpoint.disabled_at,
    )


def endpoint_detail(endpoint: WebhookEndpoint) -> WebhookEndpointDetail:
    return WebhookEndpointDetail(
        id=endpoint.id,
        org_id=endpoint.org_id,
        url=endpoint.url,
        description=endpoint.description,
        event_types=list(endpoint.event_types),
        enabled=endpoint.enabled,
        created_at=endpoint.created_at,
        disabled_at=endpoint.disabled_at,
        secret=endpoint.secret,
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def valid_url(url: str) -> str:
    """An absolute https URL; plain http only for loopback hosts (tests, local development)."""
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # `.port` raises on a malformed port
    except ValueError as exc:
        raise ValidationFailed("The webhook URL is not a valid URL", field="url") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationFailed("The webhook URL must be an absolute https:// URL", field="url")
    if parts.username is not None or parts.password is not None:
        raise ValidationFailed("The webhook URL must not contain credentials", field="url")
    if parts.fragment:
        raise ValidationFailed("The webhook URL must not contain a #fragment", field="url")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValidationFailed(
            "The webhook URL must use https (http is allowed only for localhost)", field="url"
        )
    return url


def valid_event_types(event_types: list[str]) -> list[str]:
    """Known event types (sorted, deduplicated), or `["*"]` for all of them."""
    for index, event_type in enumerate(event_types):
        if event_type != "*" and event_type not in EVENT_TYPES:
            raise ValidationFailed(
                f"Unknown event type {event_type!r}; use '*' or one of: {', '.join(EVENT_TYPES)}",
                field="event_types",
                errors=[
                    {
                        "field": f"event_types[{index}]",
                        "message": "unknown event type",
                        "source": "body",
                    }
                ],
            )
    return ["*"] if "*" in event_types else sorted(set(event_types))


def _snapshot(endpoint: WebhookEndpoint, fields: Iterable[str]) -> dict[str, Any]:
    """Audit view of an endpoint (never its secret)."""
    snapshot: dict[str, Any] = {}
    for name in fields:
        value = getattr(endpoint, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, list):
            value = list(value)
        snapshot[name] = value
    return snapshot


_AUDITED_FIELDS = ("url", "event_types", "enabled", "description")


async def list_endpoints(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[WebhookEndpoint], int]:
    await get_in_tenant(session, Organization, org_id, principal, org_attr="id")
    base = select(WebhookEndpoint).where(col(WebhookEndpoint.org_id) == org_id)
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(col(WebhookEndpoint.created_at), col(WebhookEndpoint.id))
        .limit(limit)
        .offset(offset)
    )
    return list(rows.scalars()), int(total)


async def get_endpoint(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> WebhookEndpoint:
    return await get_in_tenant(
        session, WebhookEndpoint, endpoint_id, principal, for_update=for_update
    )


async def create_endpoint(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, data: WebhookEndpointCreate
) -> WebhookEndpoint:
    """Register an endpoint; its signing secret is made here and stays readable to managers."""
    url = valid_url(data.url)
    event_types = valid_event_types(data.event_types)
    org = await get_in_tenant(session, Organization, org_id, principal, org_attr="id")
    # FOR NO KEY UPDATE: serialises endpoint creation per org (so the cap holds) without
    # blocking inserts of other rows that reference the organization.
    await session.execute(
        select(col(Organization.id))
        .where(col(Organization.id) == org.id)
        .with_for_update(key_share=True)
    )
    count = (
        await session.execute(
            select(func.count())
            .select_from(WebhookEndpoint)
            .where(col(WebhookEndpoint.org_id) == org.id)
        )
    ).scalar_one()
    if count >= MAX_ENDPOINTS_PER_ORG:
        raise TooManyEndpoints(f"At most {MAX_ENDPOINTS_PER_ORG} endpoints per organization")
    endpoint = WebhookEndpoint(
        org_id=org.id,
        url=url,
        description=data.description,
        event_types=event_types,
        secret=new_secret(SECRET_PREFIX),
    )
    session.add(endpoint)
    await session.flush()
    audit.record(
        session,
        principal,
        org_id=org.id,
        action="webhook.created",
        subject_type="webhook_endpoint",
        subject_id=endpoint.id,
        after=_snapshot(endpoint, _AUDITED_FIELDS),
    )
    await commit(session)
    return endpoint


async def update_endpoint(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: uuid.UUID,
    data: WebhookEndpointUpdate,
) -> WebhookEndpoint:
    changes = {
        name: value
        for name in data.__struct_fields__
        if (value := getattr(data, name)) is not msgspec.UNSET
    }
    if "url" in changes:
        changes["url"] = valid_url(changes["url"])
    if "event_types" in changes:
        changes["event_types"] = valid_event_types(changes["event_types"])
    endpoint = await get_endpoint(session, principal, endpoint_id, for_update=True)
    fields = tuple(changes)
    before = _snapshot(endpoint, fields)
    for name, value in changes.items():
        setattr(endpoint, name, value)
    if "enabled" in changes and before["enabled"] != endpoint.enabled:
        endpoint.disabled_at = None if endpoint.enabled else utcnow()
    after = _snapshot(endpoint, fields)
    if before != after:
        audit.record(
            session,
            principal,
            org_id=endpoint.org_id,
            action="webhook.updated",
            subject_type="webhook_endpoint",
            subject_id=endpoint.id,
            before=before,
            after=after,
        )
    await commit(session)
    return endpoint


async def rotate_secret(
    session: AsyncSession, principal: Principal, endpoint_id: uuid.UUID
) -> WebhookEndpoint:
    """A new signing secret, used from the next attempt on; the old one stops at once."""
    endpoint = await get_endpoint(session, principal, endpoint_id, for_update=True)
    endpoint.secret = new_secret(SECRET_PREFIX)
    audit.record(
        session,
        principal,
        org_id=endpoint.org_id,
        action="webhook.secret_rotated",
        subject_type="webhook_endpoint",
        subject_id=endpoint.id,
    )
    await commit(session)
    return endpoint


async def delete_endpoint(
    session: AsyncSession, principal: Principal, endpoint_id: uuid.UUID
) -> None:
    """Delete an endpoint with its delivery log (disable it instead to keep the log)."""
    endpoint = await get_endpoint(session, principal, endpoint_id, for_update=True)
    audit.record(
        session,
        principal,
        org_id=endpoint.org_id,
        action="webhook.deleted",
        subject_type="webhook_endpoint",
        subject_id=endpoint.id,
        before=_snapshot(endpoint, _AUDITED_FIELDS),
    )
    await session.delete(endpoint)
    await commit(session)


# --- delivery log and replay -------------------------------------------------------------------


def delivery_read(delivery: WebhookDelivery) -> WebhookDeliveryRead:
    return WebhookDeliveryRead(
        id=delivery.id,
        org_id=delivery.org_id,
        endpoint_id=delivery.endpoint_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        replay_of=delivery.replay_of,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
    )


def delivery_detail(
    delivery: WebhookDelivery, attempts: Iterable[WebhookAttempt]
) -> WebhookDeliveryDetail:
    read = delivery_read(delivery)
    return WebhookDeliveryDetail(
        **{name: getattr(read, name) for name in read.__struct_fields__},
        payload=dict(delivery.payload),
        attempt_log=[
            WebhookAttemptRead(
                id=a.id,
                attempted_at=a.attempted_at,
                status_code=a.status_code,
                error=a.error,
                duration_ms=a.duration_ms,
            )
            for a in attempts
        ],
    )


async def list_deliveries(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[WebhookDelivery], int]:
    """An endpoint's deliveries, newest first, optionally of one status."""
    endpoint = await get_endpoint(session, principal, endpoint_id)
    base = select(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint.id)
    if status:
        base = base.where(col(WebhookDelivery.status) == status)
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id).desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows.scalars()), int(total)


async def get_delivery(
    session: AsyncSession, principal: Principal, delivery_id: uuid.UUID
) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    """One delivery and its attempts, oldest first."""
    delivery = await get_in_tenant(session, WebhookDelivery, delivery_id, principal)
    attempts = await session.execute(
        select(WebhookAttempt)
        .where(col(WebhookAttempt.delivery_id) == delivery.id)
        .order_by(col(WebhookAttempt.attempted_at), col(WebhookAttempt.id))
    )
    return delivery, list(attempts.scalars())


async def replay_delivery(
    session: AsyncSession, principal: Principal, delivery_id: uuid.UUID
) -> WebhookDelivery:
    """Send an event again to the same endpoint: a new delivery with the same event id and
    payload (`replay_of` names the original), queued after this commit."""
    original = await get_in_tenant(session, WebhookDelivery, delivery_id, principal)
    endpoint = await session.get_one(WebhookEndpoint, original.endpoint_id)
    if not endpoint.enabled:
        raise EndpointDisabled("Enable the endpoint before replaying its deliveries")
    replay = WebhookDelivery(
        org_id=original.org_id,
        endpoint_id=original.endpoint_id,
        event_id=original.event_id,
        event_type=original.event_type,
        payload=dict(original.payload),
        next_attempt_at=utcnow(),
        replay_of=original.id,
    )
    session.add(replay)
    await session.flush()
    audit.record(
        session,
        principal,
        org_id=replay.org_id,
        action="webhook.delivery_replayed",
        subject_type="webhook_delivery",
        subject_id=replay.id,
        after={
            "replay_of": str(original.id),
            "endpoint_id": str(endpoint.id),
            "event_id": str(original.event_id),
            "event_type": original.event_type,
        },
    )
    await enqueue(session, DELIVER_JOB, str(replay.id))
    await commit(session)
    return replay


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
