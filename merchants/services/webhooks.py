"""Outgoing webhooks: endpoints an organization registers (each with its signing secret),
events recorded with the change that caused them (`emit_event`), the delivery log and replays.

Signing and sending the deliveries, with their retries, is `webhook_delivery`.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import msgspec
from sqlalchemy import func
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
from coalition.platform import audit, jobs
from coalition.platform.api import fields_set
from coalition.platform.auth import Principal, get_in_tenant
from coalition.platform.db import driver_connection, utcnow
from coalition.platform.errors import Conflict, ValidationFailed
from coalition.platform.jobs import commit, enqueue
from coalition.platform.security import new_secret

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


SUBSCRIBED_ENDPOINTS = (
    "SELECT id, org_id FROM webhook_endpoint WHERE org_id = ANY($1::uuid[]) AND enabled "
    "AND ($2 = ANY(event_types) OR '*' = ANY(event_types)) ORDER BY org_id, id"
)


async def emit_event(
    session: AsyncSession,
    *,
    event_type: str,
    org_ids: Iterable[uuid.UUID],
    data: dict[str, Any],
    endpoints: Sequence[tuple[uuid.UUID, uuid.UUID]] | None = None,
) -> uuid.UUID:
    """Record one event for every enabled endpoint of `org_ids` that subscribed to it.

    Runs inside the caller's transaction: deliveries exist exactly when the change committed,
    and the worker picks them up only after that commit. `endpoints`: those endpoints as
    (id, organization), in `SUBSCRIBED_ENDPOINTS` order, when the caller read them in a
    statement of its own transaction already.
    """
    return await emit_event_on(
        await driver_connection(session),
        jobs.outbox_of(session),
        event_type=event_type,
        org_ids=org_ids,
        data=data,
        endpoints=endpoints,
    )


async def emit_event_on(
    connection: asyncpg.Connection,
    outbox: jobs.Outbox,
    *,
    event_type: str,
    org_ids: Iterable[uuid.UUID],
    data: dict[str, Any],
    endpoints: Sequence[tuple[uuid.UUID, uuid.UUID]] | None = None,
) -> uuid.UUID:
    """`emit_event` in the transaction open on an asyncpg connection (plain SQL, the hot
    paths): the delivery jobs go to `outbox`, to be dispatched once it committed."""
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
    if endpoints is None:
        rows = await connection.fetch(SUBSCRIBED_ENDPOINTS, list(set(org_ids)), event_type)
        endpoints = [(row["id"], row["org_id"]) for row in rows]
    if not endpoints:
        return event_id
    # A delivery per endpoint and its job, in one statement.
    delivery_ids = [uuid.uuid4() for _ in endpoints]
    outbox_ids = [uuid.uuid4() for _ in endpoints]
    arg_lists: list[list[Any]] = [[str(d)] for d in delivery_ids]
    await connection.fetchval(
        RECORD_DELIVERIES,
        delivery_ids,
        [org_id for _, org_id in endpoints],
        [endpoint_id for endpoint_id, _ in endpoints],
        event_id,
        event_type,
        json.dumps(envelope, separators=(",", ":")),
        now,
        outbox_ids,
        DELIVER_JOB,
        [json.dumps(args) for args in arg_lists],
    )
    jobs.will_dispatch(outbox, DELIVER_JOB, outbox_ids, arg_lists)
    return event_id


# The deliveries of one event and their delivery jobs (`$1` delivery ids, `$2` organizations,
# `$3` endpoints, `$4` the event, `$5` its type, `$6` the envelope, `$7` the time; then the
# outbox ids, the job's function and each job's arguments).
RECORD_DELIVERIES = f"""
WITH delivery AS (
  INSERT INTO webhook_delivery (id, org_id, endpoint_id, event_id, event_type, payload, status,
    attempts, next_attempt_at, created_at)
  SELECT d, o, e, $4, $5, $6::jsonb, 'pending', 0, $7, $7
  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS x(d, o, e)
  RETURNING 1
), job AS (
  {jobs.enqueue_many_sql(ids="$8", function="$9", args="$10", now="$7")}
  RETURNING 1)
SELECT (SELECT count(*) FROM delivery) + (SELECT count(*) FROM job)
"""  # noqa: S608 - placeholders only, no input


# --- endpoints ---------------------------------------------------------------------------------

SECRET_PREFIX = "whsec"  # noqa: S105 - a prefix, not a secret
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
        **msgspec.structs.asdict(endpoint_read(endpoint)), secret=endpoint.secret
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


_AUDITED_FIELDS = ("url", "event_types", "enabled", "description")  # never the secret


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
        after=audit.snapshot(endpoint, _AUDITED_FIELDS),
    )
    await commit(session)
    return endpoint


async def update_endpoint(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: uuid.UUID,
    data: WebhookEndpointUpdate,
) -> WebhookEndpoint:
    changes = fields_set(data)
    if "url" in changes:
        changes["url"] = valid_url(changes["url"])
    if "event_types" in changes:
        changes["event_types"] = valid_event_types(changes["event_types"])
    endpoint = await get_endpoint(session, principal, endpoint_id, for_update=True)
    fields = tuple(changes)
    before = audit.snapshot(endpoint, fields)
    for name, value in changes.items():
        setattr(endpoint, name, value)
    if "enabled" in changes and before["enabled"] != endpoint.enabled:
        endpoint.disabled_at = None if endpoint.enabled else utcnow()
    after = audit.snapshot(endpoint, fields)
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
        before=audit.snapshot(endpoint, _AUDITED_FIELDS),
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
        **msgspec.structs.asdict(read),
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
