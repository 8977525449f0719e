"""Helpers for tests that need joint campaigns: a valid request body, the workflow through
the HTTP API (create, propose, accept, activate), and extra organizations and stores.

Logins are rate limited (per email and per client), so `Staff` logs each user in once per test:

    staff = Staff(client)
    campaign = await active_campaign(client, staff, world)   # carrier + café + bank, running
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.campaigns.domain import Offer, offer_to_json
from coalition.campaigns.models import Campaign, CampaignParticipant
from coalition.campaigns.services import slots
from coalition.merchants.models import Organization, Store
from coalition.merchants.services import organizations, staff
from coalition.platform.db import utcnow
from coalition.platform.security import hash_password
from tests.integration.conftest import PASSWORD, World, auth_headers

Client = AsyncTestClient[Litestar]
OWNER = "marketing@carrier.test"  # who creates and runs the default campaign
CAFE = "marketing@cafe.test"
BANK = "marketing@bank.test"


class Staff:
    """Authorization headers per email, logging each user in only once."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._headers: dict[str, dict[str, str]] = {}

    async def __call__(self, email: str) -> dict[str, str]:
        if email not in self._headers:
            self._headers[email] = await auth_headers(self.client, email)
        return self._headers[email]


def campaign_body(
    world: World,
    *,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A valid campaign owned by the carrier with the café and the bank: "spend 100, get 20
    off" in CNY, 1000 coupons, budget 20000.00; shares 50/30/20 %, café and bank capped.
    Starts an hour ago (so it can be activated at once) and runs 30 days."""
    now = utcnow()
    body: dict[str, Any] = {
        "name": "Coffee & Data 咖啡流量节",
        "description": "Spend 100, get 20 off at partner cafés",
        "currency": "CNY",
        "timezone": "Asia/Shanghai",
        "starts_at": (starts_at or now - timedelta(hours=1)).isoformat(),
        "ends_at": (ends_at or now + timedelta(days=30)).isoformat(),
        "code_prefix": "COFFEE",
        "offer": {
            "kind": "threshold",
            "threshold": 10_000,
            "value": 2_000,
            "valid_days_after_claim": 7,
        },
        "total_quantity": 1000,
        "per_customer_limit": 2,
        "participants": [
            {"org_id": str(world.carrier.id), "share_bp": 5000},
            {"org_id": str(world.cafe.id), "share_bp": 3000, "budget_cap": 600_000},
            {"org_id": str(world.bank.id), "share_bp": 2000, "budget_cap": 400_000},
        ],
        "total_budget": 2_000_000,
        "fee": {"bp": 100, "fixed": 0, "payer": "redeeming_merchant"},
        "settlement_cycle": "weekly",
    }
    body.update(overrides)
    return body


async def create_campaign(
    client: Client, headers: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post("/api/v1/campaigns", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def campaign_action(
    client: Client,
    headers: dict[str, str],
    campaign_id: str,
    action: str,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """POST /campaigns/{id}/{action} (propose, accept, decline, activate, pause, resume, end,
    cancel), expecting 200."""
    response = await client.post(
        f"/api/v1/campaigns/{campaign_id}/{action}", json=body, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def approved_campaign(
    client: Client, staff_headers: Staff, world: World, **overrides: Any
) -> dict[str, Any]:
    """Create (as the carrier's marketing), propose, and accept by every other participant
    (the café and the bank, by their marketing staff). `overrides` go to `campaign_body`."""
    owner = await staff_headers(OWNER)
    campaign = await create_campaign(client, owner, campaign_body(world, **overrides))
    campaign = await campaign_action(client, owner, campaign["id"], "propose")
    emails = {str(world.cafe.id): CAFE, str(world.bank.id): BANK}
    for participant in campaign["participants"]:
        if participant["acceptance"] != "accepted":
            headers = await staff_headers(emails[participant["org_id"]])
            campaign = await campaign_action(
                client,
                headers,
                campaign["id"],
                "accept",
                {"terms_version": campaign["terms_version"]},
            )
    assert campaign["status"] == "approved", campaign
    return campaign


async def active_campaign(
    client: Client, staff_headers: Staff, world: World, **overrides: Any
) -> dict[str, Any]:
    """An approved campaign activated by its owner (its claim slots are open)."""
    campaign = await approved_campaign(client, staff_headers, world, **overrides)
    return await campaign_action(client, await staff_headers(OWNER), campaign["id"], "activate")


async def add_merchant(
    session: AsyncSession, key: str, *, industry: str = "education", status: str = "active"
) -> Organization:
    """Another merchant with an admin and a marketing user (`admin@<key>.test`, PASSWORD)."""
    org = await organizations.create_organization(
        session, kind="merchant", name=f"{key.title()} Org", industry=industry, status=status
    )
    password_hash = hash_password(PASSWORD)
    for role in ("admin", "marketing"):
        user = await staff.create_user(
            session,
            org=org,
            email=f"{role}@{key}.test",
            display_name=f"{key} {role}",
            role=role,
            password=None,
        )
        user.password_hash, user.status = password_hash, "active"
    await session.commit()
    return org


async def add_store(
    session: AsyncSession, org_id: uuid.UUID, name: str = "Store", *, status: str = "active"
) -> Store:
    store = Store(org_id=org_id, name=name, address="1 Test Road", city="Shanghai", status=status)
    session.add(store)
    await session.commit()
    return store


# --- an active campaign written straight to the database -------------------------------------

AMOUNT_OFF = Offer(kind="amount_off", currency="CNY", value=500, valid_days_after_claim=7)


async def running_campaign(
    session: AsyncSession,
    world: World,
    *,
    quantity: int = 100,
    budget: int = 1_000_000,
    offer: Offer = AMOUNT_OFF,
    caps: tuple[int | None, int | None] = (None, None),
    **fields: Any,
) -> Campaign:
    """An active carrier + café campaign (60/40), written directly: the workflow is tested
    elsewhere; here only claiming matters."""
    now = utcnow()
    campaign = Campaign(
        owner_org_id=world.carrier.id,
        name="Coffee on us",
        status="active",
        currency="CNY",
        timezone="Asia/Shanghai",
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=30),
        offer=offer_to_json(offer),
        total_quantity=quantity,
        total_budget=budget,
        terms_version=1,
        **fields,
    )
    session.add(campaign)
    await session.flush()
    for position, (org, share, cap) in enumerate(
        ((world.carrier, 6000, caps[0]), (world.cafe, 4000, caps[1]))
    ):
        session.add(
            CampaignParticipant(
                campaign_id=campaign.id,
                org_id=org.id,
                position=position,
                share_bp=share,
                budget_cap=cap,
                accepted_version=1,
            )
        )
    await session.flush()
    await slots.open_slots(
        session, campaign.id, quantity=quantity, budget=budget, funder_caps=list(caps)
    )
    await session.commit()
    return campaign
