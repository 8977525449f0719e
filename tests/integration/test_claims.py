"""Claiming coupons: exactly once per key, never oversold, within every limit and budget."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
import zxingcpp
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import Image
from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns import codes
from coalition.campaigns.models import (
    Campaign,
    CampaignTarget,
    ClaimSlot,
    Coupon,
    Customer,
)
from coalition.campaigns.services import coupons
from coalition.platform.db import SessionMaker, utcnow
from coalition.platform.settings import Settings
from tests.integration.campaign_helpers import running_campaign
from tests.integration.conftest import World, auth_headers
from tests.integration.customer_helpers import customer_headers, new_customer

Client = AsyncTestClient[Litestar]
Claim = Callable[..., Awaitable[Any]]


@pytest.fixture
def claim(client: Client) -> Claim:
    async def do(campaign: Campaign, headers: dict[str, str], key: str | None = None) -> Any:
        return await client.post(
            f"/api/v1/campaigns/{campaign.id}/claims",
            headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
        )

    return do


async def test_claim_returns_a_coupon_with_code_validity_and_qr(
    client: Client, world: World, session: AsyncSession, settings: Settings, claim: Claim
) -> None:
    campaign = await running_campaign(session, world)
    customer = await new_customer(session)
    headers = await customer_headers(settings, customer)
    response = await claim(campaign, headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert codes.parse(body["code"]) == body["code"]
    assert codes.parse(body["display_code"]) == body["code"]
    assert body["status"] == "claimed" and body["max_discount"] == 500
    assert body["coupon_url"] == f"{settings.public_url}/c/{body['code']}"

    png = await client.get(body["qr_png"], headers=headers)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.content)))
    assert [r.text for r in decoded] == [body["coupon_url"]]
    assert codes.parse(decoded[0].text) == body["code"]  # a scanner's URL is a valid code
    svg = await client.get(body["qr_svg"], headers=headers)
    assert svg.status_code == 200 and b"<svg" in svg.content

    wallet = (await client.get("/api/v1/wallet/coupons?state=valid", headers=headers)).json()
    assert [c["id"] for c in wallet["items"]] == [body["id"]]
    other = await customer_headers(settings, await new_customer(session))
    assert (await client.get(body["qr_png"], headers=other)).status_code == 404


async def test_a_replayed_key_returns_the_first_coupon(
    world: World, session: AsyncSession, settings: Settings, claim: Claim
) -> None:
    campaign = await running_campaign(session, world, per_customer_limit=5)
    headers = await customer_headers(settings, await new_customer(session))
    first = await claim(campaign, headers, key="claim-key-0001")
    again = await claim(campaign, headers, key="claim-key-0001")
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    count = (await session.execute(select(func.count()).select_from(Coupon))).scalar_one()
    assert count == 1
    missing = await claim(campaign, headers, key="bad key!")
    assert missing.status_code == 422 and missing.json()["code"] == "idempotency_key_invalid"


async def test_concurrent_retries_of_one_key_make_one_coupon(
    world: World, session: AsyncSession, settings: Settings, claim: Claim
) -> None:
    campaign = await running_campaign(session, world, per_customer_limit=5)
    headers = await customer_headers(settings, await new_customer(session))
    results = await asyncio.gather(
        *(claim(campaign, headers, key="storm-key-42") for _ in range(20))
    )
    assert {r.status_code for r in results} == {201}
    assert len({r.json()["id"] for r in results}) == 1
    count = (await session.execute(select(func.count()).select_from(Coupon))).scalar_one()
    assert count == 1


async def test_100_concurrent_claims_for_the_last_10_coupons(
    world: World,
    session: AsyncSession,
    settings: Settings,
    claim: Claim,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world, quantity=10)
    customers = [await new_customer(session) for _ in range(100)]
    heads = [await customer_headers(settings, c) for c in customers]
    results = await asyncio.gather(*(claim(campaign, h) for h in heads))
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(201) == 10, [r.text for r in results if r.status_code not in (201, 409)]
    assert statuses.count(409) == 90
    assert {r.json()["code"] for r in results if r.status_code == 409} == {"sold_out"}
    async with sessionmaker() as fresh:
        issued = (await fresh.execute(select(func.count()).select_from(Coupon))).scalar_one()
        left = (
            await fresh.execute(select(func.sum(col(ClaimSlot.remaining_quantity))))
        ).scalar_one()
    assert (issued, left) == (10, 0)


async def test_per_customer_and_daily_limits(
    world: World, session: AsyncSession, settings: Settings, claim: Claim
) -> None:
    campaign = await running_campaign(
        session, world, per_customer_limit=3, per_customer_daily_limit=2
    )
    headers = await customer_headers(settings, await new_customer(session))
    assert (await claim(campaign, headers)).status_code == 201
    assert (await claim(campaign, headers)).status_code == 201
    third = await claim(campaign, headers)
    assert third.status_code == 409 and third.json()["code"] == "daily_claim_limit_reached"
    # tomorrow (move the first two claims to yesterday) the third is allowed, the fourth is not
    await session.execute(text("UPDATE coupon SET claim_day = claim_day - 1"))
    await session.commit()
    assert (await claim(campaign, headers)).status_code == 201
    fourth = await claim(campaign, headers)
    assert fourth.status_code == 409 and fourth.json()["code"] == "claim_limit_reached"


async def test_one_customer_storming_a_limit_of_one_gets_one(
    world: World, session: AsyncSession, settings: Settings, claim: Claim
) -> None:
    campaign = await running_campaign(session, world)
    headers = await customer_headers(settings, await new_customer(session))
    results = await asyncio.gather(*(claim(campaign, headers) for _ in range(25)))
    assert sorted(r.status_code for r in results) == [201] + [409] * 24


async def test_budget_and_funder_caps_bound_claims(
    world: World, session: AsyncSession, settings: Settings, claim: Claim
) -> None:
    # 500 off per coupon; the café funds 40% = 200 per coupon and caps its share at 1000
    campaign = await running_campaign(session, world, quantity=100, caps=(None, 1000))
    heads = [await customer_headers(settings, await new_customer(session)) for _ in range(8)]
    results = [await claim(campaign, h) for h in heads]
    assert [r.status_code for r in results] == [201] * 5 + [409] * 3
    assert results[-1].json()["code"] == "budget_exhausted"

    small = await running_campaign(session, world, quantity=100, budget=1200)
    got = [await claim(small, h) for h in heads[:3]]
    assert [r.status_code for r in got] == [201, 201, 409]


async def test_audiences(
    world: World, session: AsyncSession, settings: Settings, claim: Claim
) -> None:
    gold = await new_customer(session, tier=6, tags=["coffee", "student"])
    bronze = await new_customer(session, tier=2, tags=["coffee"])
    off_net = await new_customer(session, tier=7, tags=["coffee"], on_network=False)
    segment = await running_campaign(
        session,
        world,
        audience="segment",
        audience_min_tier=5,
        audience_tags=["student", "vip"],
        audience_on_network_only=True,
    )
    assert (await claim(segment, await customer_headers(settings, gold))).status_code == 201
    for customer in (bronze, off_net):
        refused = await claim(segment, await customer_headers(settings, customer))
        assert refused.status_code == 403 and refused.json()["code"] == "not_eligible"

    targeted = await running_campaign(session, world, audience="targeted")
    session.add(CampaignTarget(campaign_id=targeted.id, customer_id=bronze.id))
    await session.commit()
    assert (await claim(targeted, await customer_headers(settings, bronze))).status_code == 201
    assert (await claim(targeted, await customer_headers(settings, gold))).status_code == 403


async def test_paused_or_finished_campaigns_refuse_claims(
    world: World, session: AsyncSession, settings: Settings, claim: Claim
) -> None:
    campaign = await running_campaign(session, world)
    headers = await customer_headers(settings, await new_customer(session))
    campaign.status = "paused"
    await session.commit()
    paused = await claim(campaign, headers)
    assert paused.status_code == 409 and paused.json()["code"] == "campaign_not_active"
    campaign.status, campaign.ends_at = "active", utcnow() - timedelta(seconds=1)
    campaign.starts_at = utcnow() - timedelta(days=2)
    await session.commit()
    assert (await claim(campaign, headers)).json()["code"] == "campaign_not_active"


async def test_only_customers_claim(
    client: Client, world: World, session: AsyncSession, claim: Claim
) -> None:
    campaign = await running_campaign(session, world)
    staff = await claim(campaign, await auth_headers(client, "admin@cafe.test"))
    assert staff.status_code == 403
    anonymous = await client.post(f"/api/v1/campaigns/{campaign.id}/claims")
    assert anonymous.status_code == 401


async def test_void_and_expiry_hand_the_reservation_back(
    client: Client, world: World, session: AsyncSession, settings: Settings, claim: Claim
) -> None:
    campaign = await running_campaign(session, world, quantity=3)
    heads = [await customer_headers(settings, await new_customer(session)) for _ in range(3)]
    made = [(await claim(campaign, h)).json() for h in heads]

    owner = await auth_headers(client, "marketing@carrier.test")
    voided = await client.post(
        f"/api/v1/coupons/{made[0]['id']}/void", json={"reason": "issued by mistake"}, headers=owner
    )
    assert voided.status_code == 200 and voided.json()["status"] == "void"
    cafe = await auth_headers(client, "admin@cafe.test")  # a participant, not the owner
    assert (
        await client.post(
            f"/api/v1/coupons/{made[1]['id']}/void", json={"reason": "x"}, headers=cafe
        )
    ).status_code == 404

    # a void returns the unit: someone else can claim it
    assert (
        await claim(campaign, await customer_headers(settings, await new_customer(session)))
    ).status_code == 201

    await session.execute(
        text(
            "UPDATE coupon SET valid_until = now() - interval '1 second', "
            "valid_from = now() - interval '2 days' WHERE id = :id"
        ),
        {"id": made[1]["id"]},
    )
    await session.commit()
    assert await coupons.expire_due(session, utcnow()) == 1
    assert await coupons.expire_due(session, utcnow()) == 0  # a second sweep changes nothing

    stats = (await client.get(f"/api/v1/campaigns/{campaign.id}/stats", headers=owner)).json()
    assert (stats["claimed"], stats["voided"], stats["expired"]) == (4, 1, 1)
    assert stats["remaining_quantity"] == 0  # an expired coupon was given out
    assert stats["budget_reserved"] == 2 * 500
    assert [f["reserved"] for f in stats["funders"]] == [600, 400]
    assert sum(d["claimed"] for d in stats["by_day"]) == 4
    outsider = await auth_headers(client, "admin@bank.test")
    assert (
        await client.get(f"/api/v1/campaigns/{campaign.id}/stats", headers=outsider)
    ).status_code == 404


async def test_customers_rows_never_hold_a_phone_number(session: AsyncSession) -> None:
    customer = await new_customer(session)
    row = await session.get_one(Customer, customer.id)
    assert len(row.external_id_hash) == 64 and row.phone_hint and "*" in row.phone_hint


async def test_a_key_used_for_another_campaign_is_refused_even_at_once(
    world: World, session: AsyncSession, settings: Settings, claim: Claim
) -> None:
    first = await running_campaign(session, world)
    second = await running_campaign(session, world)
    headers = await customer_headers(settings, await new_customer(session))
    made = await claim(first, headers, key="one-key-two-campaigns")
    assert made.status_code == 201
    other = await claim(second, headers, key="one-key-two-campaigns")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    # both at once, from a fresh customer: one coupon, the other request refused
    headers = await customer_headers(settings, await new_customer(session))
    results = await asyncio.gather(
        *(claim(c, headers, key="raced-key-0001") for c in (first, second, first, second))
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(201) == 2 and statuses.count(422) == 2, [r.text for r in results]
    assert len({r.json()["id"] for r in results if r.status_code == 201}) == 1
    assert {r.json()["code"] for r in results if r.status_code == 422} == {"idempotency_key_reused"}
    count = (await session.execute(select(func.count()).select_from(Coupon))).scalar_one()
    assert count == 2


async def test_a_losing_claim_stores_nothing_and_its_key_may_win_later(
    client: Client, world: World, session: AsyncSession, settings: Settings, claim: Claim
) -> None:
    campaign = await running_campaign(session, world, quantity=1)
    winner = await claim(campaign, await customer_headers(settings, await new_customer(session)))
    assert winner.status_code == 201
    headers = await customer_headers(settings, await new_customer(session))
    lost = await claim(campaign, headers, key="late-comer-0001")
    assert lost.status_code == 409 and lost.json()["code"] == "sold_out"
    stored = (
        await session.execute(
            text("SELECT count(*) FROM idempotency_record WHERE scope LIKE 'claim:%'")
        )
    ).scalar_one()
    assert stored == 1  # the winner's reply only: a loser writes nothing
    owner = await auth_headers(client, "marketing@carrier.test")
    voided = await client.post(
        f"/api/v1/coupons/{winner.json()['id']}/void", json={"reason": "returned"}, headers=owner
    )
    assert voided.status_code == 200
    again = await claim(campaign, headers, key="late-comer-0001")  # the unit came back
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
