"""Customers: the carrier's subscribers, known by a keyed hash of their phone number
(`customer_tokens`: the identity, the tokens and `resolve_customer_token`).

- **One-time codes.** `request_otp` texts a 6-digit code (stored as an HMAC bound to its row,
  5 minutes, 5 attempts, single use; only a number's newest code counts) and always answers the
  same; `exchange_otp` checks it in constant time under a row lock and returns a customer token.
- **The carrier's records.** `upsert_customers` creates or replaces subscribers (tier, tags,
  on-network) as the carrier knows them.
- **Visibility.** Customer records are read by the carrier's staff only (others get 404) and by
  the customer themself (`/customers/me`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import timedelta
from typing import Any

import structlog
from redis.asyncio import Redis
from sqlalchemy import Boolean, delete, literal_column, or_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import Customer, CustomerOtp
from coalition.campaigns.schemas.customers import (
    CustomerBulkUpsert,
    CustomerBulkUpsertResult,
    CustomerMe,
    CustomerRead,
    CustomerToken,
    CustomerUpserted,
    OtpSent,
)
from coalition.campaigns.services.customer_tokens import (
    customer_config,
    external_id_hash,
    find_or_create_customer,
    issue_customer_token,
)
from coalition.platform import audit, ratelimit
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import NotFound, Unauthorized, ValidationFailed
from coalition.platform.jobs import commit
from coalition.platform.security import constant_time_equals
from coalition.platform.settings import Settings
from coalition.platform.sms import SmsGateway, mask_phone, normalize_phone

log = structlog.get_logger("coalition.customers")

OTP_MESSAGE = "Your Coalition code is {code}. It expires in {minutes} minutes; do not share it."


class OtpInvalid(Unauthorized):
    code, title = "otp_invalid", "The code is not valid"


class OtpExpired(Unauthorized):
    code, title = "otp_expired", "The code has expired"


# --- one-time codes: pure rules ----------------------------------------------------------------


def otp_code_hash(key: str, otp_id: uuid.UUID, code: str) -> str:
    """A one-time code as stored: keyed and bound to its row, so a leaked table gives nothing
    (a million unkeyed candidates would be brute-forced in a moment)."""
    return hmac.new(key.encode(), f"otp:{otp_id}:{code}".encode(), hashlib.sha256).hexdigest()


def new_otp_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


# --- reads -------------------------------------------------------------------------------------


def customer_read(customer: Customer) -> CustomerRead:
    return CustomerRead(
        id=customer.id,
        phone_hint=customer.phone_hint,
        tier=customer.tier,
        tags=list(customer.tags),
        on_network=customer.on_network,
        created_at=customer.created_at,
        updated_at=customer.updated_at,
    )


def customer_me(customer: Customer) -> CustomerMe:
    return CustomerMe(
        id=customer.id,
        phone_hint=customer.phone_hint,
        tier=customer.tier,
        tags=list(customer.tags),
        on_network=customer.on_network,
    )


async def get_customer(
    session: AsyncSession, principal: Principal, customer_id: uuid.UUID
) -> Customer:
    """A customer record, for the carrier's cross-tenant staff; 404 for everybody else."""
    if not principal.sees_all_tenants:
        raise NotFound("Customer not found")
    customer = await session.get(Customer, customer_id)
    if customer is None:
        raise NotFound("Customer not found")
    return customer


async def current_customer(session: AsyncSession, principal: Principal) -> Customer:
    if principal.kind != "customer" or principal.subject_id is None:
        raise NotFound("Customer not found")
    customer = await session.get(Customer, principal.subject_id)
    if customer is None:
        raise NotFound("Customer not found")
    return customer


# --- one-time codes ----------------------------------------------------------------------------


async def request_otp(
    session: AsyncSession,
    redis: Redis,
    settings: Settings,
    gateway: SmsGateway,
    *,
    phone: str,
    client_ip: str,
) -> OtpSent:
    """Text a one-time code to `phone`. The answer never says whether the number is known."""
    config = customer_config(settings)
    e164 = normalize_phone(phone)
    external = external_id_hash(config.hash_key, e164)
    window = config.otp_window_seconds
    limit = config.otp_requests_per_window
    await ratelimit.hit(redis, f"otp:ip:{client_ip}", limit=limit * 10, window_seconds=window)
    await ratelimit.hit(redis, f"otp:phone:{external}", limit=limit, window_seconds=window)
    now = utcnow()
    # This number's spent codes go; a new code supersedes the older ones (only the newest counts).
    await session.execute(
        delete(CustomerOtp).where(
            col(CustomerOtp.external_id_hash) == external,
            or_(col(CustomerOtp.expires_at) <= now, col(CustomerOtp.used_at).is_not(None)),
        )
    )
    code = new_otp_code()
    otp = CustomerOtp(
        external_id_hash=external,
        code_hash="",
        created_at=now,
        expires_at=now + timedelta(seconds=config.otp_ttl_seconds),
    )
    otp.code_hash = otp_code_hash(config.hash_key, otp.id, code)
    session.add(otp)
    await commit(session)
    minutes = max(config.otp_ttl_seconds // 60, 1)
    await gateway.send(e164, OTP_MESSAGE.format(code=code, minutes=minutes))
    log.info("otp_sent", to=mask_phone(e164))
    return OtpSent(expires_in=config.otp_ttl_seconds)


async def exchange_otp(
    session: AsyncSession,
    redis: Redis,
    settings: Settings,
    *,
    phone: str,
    code: str,
    client_ip: str,
) -> CustomerToken:
    """Trade a number's newest one-time code for a customer token (creating the customer)."""
    config = customer_config(settings)
    e164 = normalize_phone(phone)
    per_ip = config.otp_requests_per_window * config.otp_max_attempts * 10
    await ratelimit.hit(
        redis, f"otp-verify:ip:{client_ip}", limit=per_ip, window_seconds=config.otp_window_seconds
    )
    external = external_id_hash(config.hash_key, e164)
    now = utcnow()
    otp = (
        await session.execute(
            select(CustomerOtp)
            .where(col(CustomerOtp.external_id_hash) == external)
            .order_by(col(CustomerOtp.created_at).desc(), col(CustomerOtp.id).desc())
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()
    invalid = "The code is wrong or was already used; request a new one if need be"
    if otp is None or otp.used_at is not None:
        raise OtpInvalid(invalid)
    if otp.attempts >= config.otp_max_attempts:
        raise OtpInvalid("Too many wrong attempts: request a new code")
    if otp.expires_at <= now:
        raise OtpExpired("The code has expired: request a new one")
    otp.attempts += 1
    if not constant_time_equals(otp.code_hash, otp_code_hash(config.hash_key, otp.id, code)):
        await commit(session)  # the attempt counts even though the request fails
        log.info("otp_rejected", to=mask_phone(e164), attempts=otp.attempts)
        raise OtpInvalid(invalid)
    otp.used_at = now
    customer = await find_or_create_customer(
        session,
        external,
        phone_hint=mask_phone(e164),
        # Receiving a text proves the number, not a subscription: only the carrier (its
        # segment upload or identity tokens) says a customer is on its network.
        tier=1,
        tags=[],
        on_network=False,
    )
    token, _ = issue_customer_token(settings, customer_id=customer.id, now=now)
    await commit(session)
    log.info("customer_signed_in", customer_id=str(customer.id), method="otp")
    return CustomerToken(
        access_token=token,
        token_type="Bearer",  # noqa: S106
        expires_in=config.token_ttl_seconds,
        customer_id=customer.id,
    )


async def purge_expired_otps(session: AsyncSession) -> int:
    """Delete codes that expired more than a day ago (a daily job)."""
    cutoff = utcnow() - timedelta(days=1)
    result = await session.execute(delete(CustomerOtp).where(col(CustomerOtp.expires_at) < cutoff))
    await commit(session)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- the carrier's subscriber records ----------------------------------------------------------


async def upsert_customers(
    session: AsyncSession, settings: Settings, principal: Principal, data: CustomerBulkUpsert
) -> CustomerBulkUpsertResult:
    """Create or replace subscribers (tier, tags, on-network) as the carrier knows them."""
    config = customer_config(settings)
    now = utcnow()
    rows: list[dict[str, Any]] = []
    position: dict[str, int] = {}
    for index, item in enumerate(data.customers):
        e164 = normalize_phone(item.phone, field=f"customers[{index}].phone")
        external = external_id_hash(config.hash_key, e164)
        if external in position:
            raise ValidationFailed(
                f"The same number as customers[{position[external]}]",
                field=f"customers[{index}].phone",
            )
        position[external] = index
        rows.append(
            {
                "id": uuid.uuid4(),
                "external_id_hash": external,
                "phone_hint": mask_phone(e164),
                "tier": item.tier,
                "tags": list(dict.fromkeys(item.tags)),
                "on_network": item.on_network,
                "created_at": now,
                "updated_at": now,
            }
        )
    # One lock order for every upload, so two overlapping uploads cannot deadlock.
    rows.sort(key=lambda row: str(row["external_id_hash"]))
    values = insert(Customer).values(rows)
    upsert = values.on_conflict_do_update(
        index_elements=[col(Customer.external_id_hash)],
        set_={
            "phone_hint": values.excluded.phone_hint,
            "tier": values.excluded.tier,
            "tags": values.excluded.tags,
            "on_network": values.excluded.on_network,
            "updated_at": now,
        },
    ).returning(
        col(Customer.id),
        col(Customer.external_id_hash),
        col(Customer.phone_hint),
        literal_column("(xmax = 0)", Boolean).label("created"),  # inserted, not updated
    )
    results = (await session.execute(upsert)).all()
    items: list[CustomerUpserted | None] = [None] * len(data.customers)
    for customer_id, external, hint, created in results:
        items[position[external]] = CustomerUpserted(
            id=customer_id, phone_hint=hint, created=bool(created)
        )
    upserted = [item for item in items if item is not None]
    created_count = sum(1 for item in upserted if item.created)
    audit.record(
        session,
        principal,
        org_id=principal.org_id,
        action="customers.upserted",
        subject_type="customer_upload",
        subject_id=uuid.uuid4(),
        after={"created": created_count, "updated": len(upserted) - created_count},
    )
    await commit(session)
    log.info("customers_upserted", created=created_count, updated=len(upserted) - created_count)
    return CustomerBulkUpsertResult(
        created=created_count, updated=len(upserted) - created_count, items=upserted
    )
