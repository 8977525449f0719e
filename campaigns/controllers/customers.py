"""HTTP API of customers: sign-in with a one-time code, the customer's own record, and the
carrier's subscriber records."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, get, post, put
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.schemas.customers import (
    CustomerBulkUpsert,
    CustomerBulkUpsertResult,
    CustomerMe,
    CustomerRead,
    CustomerToken,
    CustomerTokenRequest,
    OtpRequest,
    OtpSent,
)
from coalition.campaigns.services import customers
from coalition.merchants.controllers.identity import client_ip
from coalition.platform.auth import Principal, carrier_guard, role_guard
from coalition.platform.settings import Settings
from coalition.platform.sms import sms_gateway


class CustomerAuthController(Controller):
    """Public: a subscriber proves their number with a texted code and gets a customer token."""

    path = "/api/v1/customers"
    tags = ["customers"]

    @post("/otp", exclude_from_auth=True, status_code=HTTP_202_ACCEPTED)
    async def request_code(
        self,
        request: Request,  # type: ignore[type-arg]
        data: OtpRequest,
        session: AsyncSession,
        redis: Redis,
        settings: Settings,
    ) -> OtpSent:
        """Text a 6-digit code to the number (valid 5 minutes). The answer is the same whether
        or not the number is a known customer. Rate limited per number and per client."""
        return await customers.request_otp(
            session,
            redis,
            settings,
            sms_gateway(settings),
            phone=data.phone,
            client_ip=client_ip(request),
        )

    @post("/token", exclude_from_auth=True, status_code=HTTP_200_OK)
    async def exchange_code(
        self,
        request: Request,  # type: ignore[type-arg]
        data: CustomerTokenRequest,
        session: AsyncSession,
        redis: Redis,
        settings: Settings,
    ) -> CustomerToken:
        """Exchange the number and its newest code for a customer access token (1 hour).
        Wrong, used or exhausted codes answer 401 `otp_invalid`; expired ones `otp_expired`."""
        return await customers.exchange_otp(
            session,
            redis,
            settings,
            phone=data.phone,
            code=data.code,
            client_ip=client_ip(request),
        )


class CustomerController(Controller):
    path = "/api/v1/customers"
    tags = ["customers"]

    @put("/", guards=[carrier_guard("admin", "marketing")], status_code=HTTP_200_OK)
    async def upsert(
        self,
        data: CustomerBulkUpsert,
        session: AsyncSession,
        settings: Settings,
        principal: Principal,
    ) -> CustomerBulkUpsertResult:
        """Create or update up to 1000 subscribers (tier, tags, on-network), by phone number.
        Numbers are stored only as keyed hashes. Carrier admins and marketing."""
        return await customers.upsert_customers(session, settings, principal, data)

    @get("/me", guards=[role_guard(kinds=("customer",))])
    async def me(self, session: AsyncSession, principal: Principal) -> CustomerMe:
        """The signed-in customer (a customer token or a carrier identity token)."""
        return customers.customer_me(await customers.current_customer(session, principal))

    @get("/{customer_id:uuid}", guards=[role_guard()])
    async def get_customer(
        self, customer_id: uuid.UUID, session: AsyncSession, principal: Principal
    ) -> CustomerRead:
        """A customer record: carrier staff only (anybody else gets 404)."""
        customer = await customers.get_customer(session, principal, customer_id)
        return customers.customer_read(customer)


ROUTES = [CustomerAuthController, CustomerController]
