"""Online checkout with an organization's API key: reserve -> confirm or release, holds that
expire, exactly once against the till, reversals; and the velocity flags."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.domain import Offer
from coalition.campaigns.models import (
    Coupon,
    Customer,
    Redemption,
    RedemptionFlag,
    RedemptionHold,
)
from coalition.campaigns.services import online
from coalition.platform.app import create_app
from coalition.platform.db import SessionMaker, utcnow
from coalition.platform.idempotency import IdempotencyRecord
from coalition.platform.jobs import JobOutbox
from coalition.platform.settings import Settings
from coalition.settlement.models import JournalEntry
from tests.integration.campaign_helpers import Staff, running_campaign
from tests.integration.conftest import World
from tests.integration.customer_helpers import customer_headers, new_customer
from tests.integration.test_api_keys import bearer, issue
from tests.integration.test_pos_redemption import (
    BASKET,
    add_terminals,
    balances,
    claim,
    count,
    redeem,
    total_postings,
)

Client = AsyncTestClient[Litestar]
ONLINE = "/api/v1/online"


async def shop_key(
    client: Client,
    world: World,
    scopes: tuple[str, ...] = ("redemptions:write", "redemptions:read"),
) -> dict[str, str]:
    """The café's e-commerce: an API key with the redemption scopes."""
    admin = await Staff(client)("admin@cafe.test")
    issued = await issue(client, admin, world.cafe.id, list(scopes), name="web shop")
    return bearer(str(issued["key"]))


async def reserve(
    client: Client, key: dict[str, str], code: str, idem: str | None = None, **body: Any
) -> Any:
    payload = {
        "code": code,
        "basket_amount": BASKET,
        "currency": "CNY",
        "order_ref": "WEB-1",
        **body,
    }
    return await client.post(
        f"{ONLINE}/holds",
        json=payload,
        headers={**key, "Idempotency-Key": idem or uuid.uuid4().hex},
    )


async def confirm(
    client: Client, key: dict[str, str], hold_id: str, idem: str | None = None
) -> Any:
    return await client.post(
        f"{ONLINE}/holds/{hold_id}/confirm",
        headers={**key, "Idempotency-Key": idem or uuid.uuid4().hex},
    )


async def lapse(session: AsyncSession, hold_id: str) -> None:
    """Move a hold (and its coupon's `held_until`) into the past, as time would."""
    past = utcnow() - timedelta(seconds=1)
    hold = await session.get_one(RedemptionHold, uuid.UUID(hold_id))
    await session.execute(
        update(RedemptionHold)
        .where(col(RedemptionHold.id) == hold.id)
        .values(created_at=past - timedelta(minutes=15), expires_at=past)
    )
    await session.execute(
        update(Coupon).where(col(Coupon.id) == hold.coupon_id).values(held_until=past)
    )
    await session.commit()


def problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text


async def test_reserve_then_confirm_redeems_exactly_like_the_till(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world, fee_bp=100)
    [(_, till)] = await add_terminals(session, world.cafe)
    key = await shop_key(client, world)
    code = await claim(client, settings, session, campaign)

    held = await reserve(client, key, code, idem="reserve-key-001")
    assert held.status_code == 201, held.text
    hold = held.json()
    assert (hold["status"], hold["discount"], hold["payable"]) == ("held", 500, 9_500)
    replay = await reserve(client, key, code, idem="reserve-key-001")
    assert replay.json() == hold and replay.headers["idempotent-replayed"] == "true"
    problem(
        await reserve(client, key, code, idem="reserve-key-001", basket_amount=1),
        422,
        "idempotency_key_reused",
    )

    # While held: not at the till, not reserved twice, no quote at the till either.
    problem(await redeem(client, till, code), 409, "coupon_held")
    problem(await reserve(client, key, code), 409, "coupon_held")
    assert await count(sessionmaker, Redemption) == 0

    confirmed = await confirm(client, key, hold["id"], idem="confirm-key-001")
    assert confirmed.status_code == 201, confirmed.text
    body = confirmed.json()
    assert (body["channel"], body["store_id"], body["terminal_id"]) == ("online", None, None)
    assert (body["discount"], body["order_ref"], body["platform_fee"]) == (500, "WEB-1", 5)
    assert body["funding"] == [
        {"org_id": str(world.carrier.id), "amount": 300},
        {"org_id": str(world.cafe.id), "amount": 200},
    ]
    assert await balances(sessionmaker) == {  # the same entry as a POS redemption
        (world.cafe.id, "partner_receivable"): 300,
        (world.carrier.id, "partner_payable"): -300,
        (world.cafe.id, "fee_payable"): -5,
        (world.carrier.id, "fee_revenue"): 5,
    }
    again = await confirm(client, key, hold["id"], idem="confirm-key-001")
    assert again.json() == body and again.headers["idempotent-replayed"] == "true"
    problem(await confirm(client, key, hold["id"]), 409, "hold_confirmed")
    problem(
        await client.post(f"{ONLINE}/holds/{hold['id']}/release", headers=key),
        409,
        "hold_confirmed",
    )
    problem(await redeem(client, till, code), 409, "coupon_already_redeemed")

    read = await client.get(f"{ONLINE}/holds/{hold['id']}", headers=key)
    assert read.json()["status"] == "confirmed" and read.json()["redemption_id"] == body["id"]
    listed = (await client.get(f"{ONLINE}/redemptions", headers=key)).json()
    assert listed["total"] == 1 and listed["items"] == [body]
    assert (await client.get(f"{ONLINE}/redemptions/{body['id']}", headers=key)).json() == body

    # Reversal through the org API: in full, the coupon comes back, the ledger nets to zero.
    reversed_ = await client.post(
        f"{ONLINE}/redemptions/{body['id']}/reversals",
        json={"reason": "order cancelled"},
        headers={**key, "Idempotency-Key": "online-reversal-1"},
    )
    assert reversed_.status_code == 201, reversed_.text
    assert reversed_.json()["coupon_status"] == "claimed" and reversed_.json()["full"]
    assert reversed_.json()["redemption"]["status"] == "reversed"
    assert all(v == 0 for v in (await balances(sessionmaker)).values())
    assert await total_postings(sessionmaker) == 0
    assert (await redeem(client, till, code)).status_code == 201  # usable again


async def test_partial_online_reversal_is_pro_rata(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world)
    key = await shop_key(client, world)
    code = await claim(client, settings, session, campaign)
    hold = (await reserve(client, key, code)).json()
    body = (await confirm(client, key, hold["id"])).json()
    part = await client.post(
        f"{ONLINE}/redemptions/{body['id']}/reversals",
        json={"reason": "one item returned", "refund_amount": 2_500},
        headers={**key, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert part.status_code == 201, part.text
    assert part.json()["discount_reversed"] == 125
    assert part.json()["redemption"]["status"] == "partially_reversed"


async def test_release_gives_the_coupon_back_at_once(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world)
    [(_, till)] = await add_terminals(session, world.cafe)
    key = await shop_key(client, world)
    code = await claim(client, settings, session, campaign)
    hold = (await reserve(client, key, code)).json()
    released = await client.post(f"{ONLINE}/holds/{hold['id']}/release", headers=key)
    assert released.status_code == 200 and released.json()["status"] == "released"
    twice = await client.post(f"{ONLINE}/holds/{hold['id']}/release", headers=key)
    assert twice.status_code == 200 and twice.json() == released.json()
    problem(await confirm(client, key, hold["id"]), 409, "hold_released")
    assert (await redeem(client, till, code)).status_code == 201


async def test_many_concurrent_reserves_of_one_coupon_make_one_hold(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world)
    key = await shop_key(client, world)
    code = await claim(client, settings, session, campaign)
    results = await asyncio.gather(*(reserve(client, key, code) for _ in range(30)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201] + [409] * 29, [r.text for r in results if r.status_code >= 500]
    assert {r.json()["code"] for r in results if r.status_code == 409} == {"coupon_held"}
    assert await count(sessionmaker, RedemptionHold) == 1


async def test_a_confirm_racing_the_till_one_wins(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world)
    tills = await add_terminals(session, world.cafe, 10)
    key = await shop_key(client, world)

    # A live hold: the confirm wins, every till is refused.
    code = await claim(client, settings, session, campaign)
    hold = (await reserve(client, key, code)).json()
    results = await asyncio.gather(
        confirm(client, key, hold["id"]), *(redeem(client, h, code) for _, h in tills)
    )
    assert results[0].status_code == 201, results[0].text
    refusals = {(r.status_code, r.json()["code"]) for r in results[1:]}
    # held while the confirm runs, redeemed once it has committed: never a second redemption
    assert refusals <= {(409, "coupon_held"), (409, "coupon_already_redeemed")}, refusals

    # A lapsed hold the worker has not released yet: one till wins, the confirm is refused.
    code = await claim(client, settings, session, campaign)
    hold = (await reserve(client, key, code)).json()
    await lapse(session, hold["id"])
    results = await asyncio.gather(
        confirm(client, key, hold["id"]), *(redeem(client, h, code) for _, h in tills)
    )
    problem(results[0], 409, "hold_expired")
    tills_answers = sorted(r.status_code for r in results[1:])
    assert tills_answers == [201] + [409] * 9
    async with sessionmaker() as fresh:
        per_coupon = (
            await fresh.execute(select(col(Redemption.coupon_id), col(Redemption.channel)))
        ).all()
    assert len(per_coupon) == 2 and len({c for c, _ in per_coupon}) == 2
    assert await count(sessionmaker, JournalEntry) == 2


async def test_expired_holds_are_refused_and_released_by_the_worker(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world)
    [(_, till)] = await add_terminals(session, world.cafe)
    key = await shop_key(client, world)
    code = await claim(client, settings, session, campaign)
    hold = (await reserve(client, key, code, hold_seconds=60)).json()
    async with sessionmaker() as fresh:
        job = (
            await fresh.execute(
                select(JobOutbox).where(col(JobOutbox.function) == online.RELEASE_JOB)
            )
        ).scalar_one()
    assert job.args == [hold["id"]] and job.dedupe_key == f"hold-expiry:{hold['id']}"
    assert job.available_at.isoformat() == hold["expires_at"].replace("Z", "+00:00")

    async with sessionmaker() as work:  # before its time the job changes nothing
        assert await online.expire_hold(work, uuid.UUID(hold["id"]), utcnow()) is False
    await lapse(session, hold["id"])
    problem(await confirm(client, key, hold["id"]), 409, "hold_expired")
    async with sessionmaker() as work:
        assert await online.expire_due(work, utcnow()) == 1
    async with sessionmaker() as work:  # the per-hold job after the sweep: nothing to do
        assert await online.expire_hold(work, uuid.UUID(hold["id"]), utcnow()) is False
        assert await online.expire_due(work, utcnow()) == 0
    read = (await client.get(f"{ONLINE}/holds/{hold['id']}", headers=key)).json()
    assert read["status"] == "expired" and read["finished_at"] is not None
    async with sessionmaker() as fresh:
        coupon = (await fresh.execute(select(Coupon).where(col(Coupon.code) == code))).scalar_one()
    assert coupon.held_until is None and coupon.status == "claimed"
    problem(await confirm(client, key, hold["id"]), 409, "hold_expired")
    again = await reserve(client, key, code)  # reservable again
    assert again.status_code == 201, again.text
    assert (await client.post(f"{ONLINE}/holds/{again.json()['id']}/release", headers=key)).json()[
        "status"
    ] == "released"
    assert (await redeem(client, till, code)).status_code == 201


async def test_a_lapsed_hold_does_not_block_a_new_reservation(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world)
    key = await shop_key(client, world)
    code = await claim(client, settings, session, campaign)
    first = (await reserve(client, key, code)).json()
    await lapse(session, first["id"])
    second = await reserve(client, key, code)
    assert second.status_code == 201, second.text
    old = (await client.get(f"{ONLINE}/holds/{first['id']}", headers=key)).json()
    assert old["status"] == "expired"


async def test_online_refusals_scopes_and_tenancy(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world)
    pos_only = await running_campaign(
        session,
        world,
        offer=Offer(
            kind="amount_off",
            currency="CNY",
            value=500,
            valid_days_after_claim=7,
            channels=frozenset({"pos"}),
        ),
    )
    [(_, till)] = await add_terminals(session, world.cafe)
    key = await shop_key(client, world)
    reader = await shop_key(client, world, scopes=("redemptions:read",))
    bank_admin = await Staff(client)("admin@bank.test")
    bank = bearer(
        str(
            (
                await issue(
                    client, bank_admin, world.bank.id, ["redemptions:write", "redemptions:read"]
                )
            )["key"]
        )
    )
    code = await claim(client, settings, session, campaign)
    pos_only_code = await claim(client, settings, session, pos_only)
    before = [await count(sessionmaker, m) for m in (RedemptionHold, IdempotencyRecord)]

    problem(await reserve(client, key, pos_only_code), 409, "channel_not_allowed")
    problem(await reserve(client, key, code, currency="USD"), 409, "currency_mismatch")
    problem(await reserve(client, key, "NOT-A-CODE"), 422, "invalid_code")
    problem(await reserve(client, bank, code), 409, "not_redeemable_here")
    problem(await reserve(client, key, code, hold_seconds=7200), 422, "hold_too_long")
    for change in ({"basket_amount": 0}, {"basket_amount": -5}, {"surprise": 1}):
        problem(await reserve(client, key, code, **change), 422, "validation_error")
    problem(await reserve(client, reader, code), 403, "insufficient_scope")
    problem(await reserve(client, till, code), 403, "forbidden")
    customer = await customer_headers(settings, await new_customer(session))
    problem(await reserve(client, customer, code), 403, "forbidden")
    missing = await client.post(
        f"{ONLINE}/holds",
        json={"code": code, "basket_amount": BASKET, "currency": "CNY", "order_ref": "W"},
        headers=key,
    )
    problem(missing, 422, "idempotency_key_invalid")
    assert [await count(sessionmaker, m) for m in (RedemptionHold, IdempotencyRecord)] == before

    hold = (await reserve(client, key, code)).json()
    problem(await confirm(client, bank, hold["id"]), 404, "hold_not_found")
    problem(
        await client.post(f"{ONLINE}/holds/{hold['id']}/release", headers=bank),
        404,
        "hold_not_found",
    )
    assert (await client.get(f"{ONLINE}/holds/{hold['id']}", headers=bank)).status_code == 404
    body = (await confirm(client, key, hold["id"])).json()
    assert (await client.get(f"{ONLINE}/redemptions/{body['id']}", headers=bank)).status_code == 404
    assert (await client.get(f"{ONLINE}/redemptions", headers=bank)).json()["total"] == 0
    assert (
        await client.get(f"{ONLINE}/redemptions/{body['id']}", headers=reader)
    ).status_code == 200


# --- velocity flags ------------------------------------------------------------------------------


@pytest.fixture
async def strict_client(settings: Settings) -> AsyncIterator[Client]:
    """The app with a velocity rule of two partners within 30 minutes."""
    app = create_app(settings.model_copy(update={"velocity_partners": 2}))
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as test_client:
        yield test_client


async def claim_as(client: Client, settings: Settings, customer: Customer, campaign: Any) -> str:
    response = await client.post(
        f"/api/v1/campaigns/{campaign.id}/claims",
        headers={**await customer_headers(settings, customer), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["code"])


async def test_one_customer_at_several_partners_is_flagged_not_blocked(
    strict_client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    client = strict_client
    first_campaign = await running_campaign(session, world)
    second_campaign = await running_campaign(session, world)
    [(_, cafe_till)] = await add_terminals(session, world.cafe)
    [(_, carrier_till)] = await add_terminals(session, world.carrier)
    customer = await new_customer(session)
    other = await new_customer(session)
    at_cafe = (
        await redeem(client, cafe_till, await claim_as(client, settings, customer, first_campaign))
    ).json()
    # Another customer at the other partner: no flag (the rule is per customer).
    await redeem(client, carrier_till, await claim_as(client, settings, other, first_campaign))
    assert await count(sessionmaker, RedemptionFlag) == 0
    second = await redeem(
        client, carrier_till, await claim_as(client, settings, customer, second_campaign)
    )
    assert second.status_code == 201, second.text  # flagged, not blocked
    at_carrier = second.json()

    staff = Staff(client)
    carrier = await staff("finance@carrier.test")
    listed = (await client.get("/api/v1/redemption-flags?status=open", headers=carrier)).json()
    assert listed["total"] == 1
    [flag] = listed["items"]
    assert flag["rule"] == "velocity" and flag["redemption_id"] == at_carrier["id"]
    assert flag["org_ids"] == [str(world.carrier.id), str(world.cafe.id)]
    assert set(flag["redemption_ids"]) == {at_cafe["id"], at_carrier["id"]}
    assert flag["customer_id"] == str(customer.id)
    assert flag["detail"] == {"window_minutes": 30, "partners": 2, "threshold": 2}

    cafe = await staff("finance@cafe.test")
    mine = (await client.get("/api/v1/redemption-flags", headers=cafe)).json()
    assert mine["total"] == 1
    assert mine["items"][0]["redemption_ids"] == [at_cafe["id"]]
    assert mine["items"][0]["org_ids"] == [str(world.cafe.id)]
    assert mine["items"][0]["customer_id"] is None
    bank = await staff("finance@bank.test")
    assert (await client.get("/api/v1/redemption-flags", headers=bank)).json()["total"] == 0
    assert (
        await client.get(f"/api/v1/redemption-flags/{flag['id']}", headers=bank)
    ).status_code == 404
    refused = await client.post(
        f"/api/v1/redemption-flags/{flag['id']}/review", json={"note": "ok"}, headers=cafe
    )
    assert refused.status_code == 403
    assert (await client.get("/api/v1/redemption-flags", headers=cafe_till)).status_code == 403

    reviewed = await client.post(
        f"/api/v1/redemption-flags/{flag['id']}/review",
        json={"note": "family sharing one phone"},
        headers=carrier,
    )
    assert reviewed.status_code == 200, reviewed.text
    assert reviewed.json()["status"] == "reviewed" and reviewed.json()["reviewed_at"]
    assert reviewed.json()["review_note"] == "family sharing one phone"
    open_now = (await client.get("/api/v1/redemption-flags?status=open", headers=carrier)).json()
    assert open_now["total"] == 0
    closed = await client.get("/api/v1/redemption-flags?status=closed", headers=carrier)
    problem(closed, 422, "validation_error")
    assert closed.json()["field"] == "status"
