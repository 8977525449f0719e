"""Customers for tests: a subscriber row and the bearer header of their customer token."""

from __future__ import annotations

import secrets

from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.models import Customer
from coalition.campaigns.services.customer_tokens import external_id_hash, issue_customer_token
from coalition.platform.db import utcnow
from coalition.platform.settings import DEV_CUSTOMER_ID_KEY, Settings


async def new_customer(
    session: AsyncSession, *, tier: int = 1, tags: list[str] | None = None, on_network: bool = True
) -> Customer:
    phone = "+86139" + "".join(secrets.choice("0123456789") for _ in range(8))
    customer = Customer(
        external_id_hash=external_id_hash(DEV_CUSTOMER_ID_KEY, phone),
        phone_hint="*******" + phone[-4:],
        tier=tier,
        tags=tags or [],
        on_network=on_network,
    )
    session.add(customer)
    await session.commit()
    return customer


async def customer_headers(settings: Settings, customer: Customer) -> dict[str, str]:
    token, _ = issue_customer_token(settings, customer_id=customer.id, now=utcnow())
    return {"Authorization": f"Bearer {token}"}
