"""Redemption at the till: quotes, exactly-once redemption, reversals, ledger and tenancy."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col, select

from coalition.campaigns import codes
from coalition.campaigns.domain import Offer
from coalition.campaigns.models import (
    Campaign,
    CampaignDailyStat,
    ClaimSlot,
    Coupon,
    Redemption,
    RedemptionReversal,
)
from coalition.merchants.models import Organization, Store, Terminal
from coalition.merchants.services import stores, terminals
from coalition.platform.db import SessionMaker, utcnow
from coalition.platform.idempotency import IdempotencyRecord
from coalition.platform.settings import Settings
from coalition.settlement.models import JournalEntry, LedgerAccount, LedgerPosting
from tests.integration.campaign_helpers import running_campaign
from tests.integration.conftest import World, auth_headers
from tests.integration.customer_helpers import customer_headers, new_customer

Client = AsyncTestClient[Litestar]
BASKET = 10_000  # 100.00 CNY; the default offer takes 5.00 off


async def add_terminals(
    session: AsyncSession, org: Organization, count: int = 1
) -> list[tuple[Terminal, dict[str, str]]]:
    """A store of `org` with `count` terminals, and each terminal's bearer header."""
    store = await stores.create_store(
        session, None, org, name=f"{org.name} outlet", address="1 Till Road", city="Shanghai"
    )
    made = []
    for n in range(count):
        terminal, key = await terminals.register_terminal(session, None, store, f"Till {n}")
        made.append((terminal, {"Authorization": f"Bearer {key.full}"}))
    await session.commit()
    return made


async def claim(client: Client, settings: Settings, session: AsyncSession, campaign: Any) -> str:
    """A fresh customer claims a coupon of `campaign`; its code."""
    headers = await customer_headers(settings, await new_customer(session))
    response = await client.post(
        f"/api/v1/campaigns/{campaign.id}/claims",
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["code"])


async def quote(client: Client, headers: dict[str, str], code: str, **body: Any) -> Any:
    payload = {"code": code, "basket_amount": BASKET, "currency": "CNY", **body}
    return await client.post("/api/v1/pos/quotes", json=payload, headers=headers)


async def redeem(
    client: Client, headers: dict[str, str], code: str, key: str | None = None, **body: Any
) -> Any:
    payload = {
        "code": code,
        "basket_amount": BASKET,
        "currency": "CNY",
        "order_ref": "ORDER-1",
        **body,
    }
    return await client.post(
        "/api/v1/pos/redemptions",
        json=payload,
        headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def reverse(
    client: Client, headers: dict[str, str], redemption_id: str, key: str | None = None, **body: Any
) -> Any:
    return await client.post(
        f"/api/v1/pos/redemptions/{redemption_id}/reversals",
        json={"reason": "customer returned the goods", **body},
        headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def count(sessionmaker: SessionMaker, model: type[SQLModel]) -> int:
    async with sessionmaker() as fresh:
        return int((await fresh.execute(select(func.count()).select_from(model))).scalar_one())


async def balances(sessionmaker: SessionMaker) -> dict[tuple[uuid.UUID, str], int]:
    """Net postings per (organization, account purpose)."""
    async with sessionmaker() as fresh:
        rows = await fresh.execute(
            select(
                col(LedgerPosting.org_id),
                col(LedgerAccount.purpose),
                func.sum(col(LedgerPosting.amount)),
            )
            .join(LedgerAccount, col(LedgerAccount.id) == col(LedgerPosting.account_id))
            .group_by(col(LedgerPosting.org_id), col(LedgerAccount.purpose))
        )
        return {(org, purpose): int(total) for org, purpose, total in rows.tuples()}


async def total_postings(sessionmaker: SessionMaker) -> int:
    async with sessionmaker() as fresh:
        total = (await fresh.execute(select(func.sum(col(LedgerPosting.amount))))).scalar_one()
    return int(total or 0)


# --- quotes -----------------------------------------------------------------------------------


async def test_quote_gives_discount_and_payable_for_typed_or_scanned_codes(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world)
    code = await claim(client, settings, session, campaign)
    [(_, till)] = await add_terminals(session, world.cafe)
    for typed in (code, codes.display(code, "COFFEE").lower(), f"{settings.public_url}/c/{code}"):
        response = await quote(client, till, typed)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["discount"], body["payable"], body["coupon_code"]) == (500, 9_500, code)
    assert await count(sessionmaker, Redemption) == 0
    async with sessionmaker() as fresh:
        coupon = (await fresh.execute(select(Coupon))).scalar_one()
    assert coupon.status == "claimed"


async def test_quote_refusals_have_stable_codes(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world)
    [(_, till)] = await add_terminals(session, world.cafe)
    [(_, bank_till)] = await add_terminals(session, world.bank)
    code = await claim(client, settings, session, campaign)

    async def refused(response: Any, status: int, problem: str) -> None:
        assert response.status_code == status, response.text
        assert response.json()["code"] == problem, response.text

    await refused(await quote(client, till, "NOT-A-CODE"), 422, "invalid_code")
    typo = code[:-1] + ("0" if code[-1] != "0" else "1")
    await refused(await quote(client, till, typo), 422, "invalid_code")
    assert (await quote(client, till, "x")).json()["field"] == "code"
    await refused(await quote(client, till, codes.new_code()), 404, "coupon_not_found")
    await refused(await quote(client, bank_till, code), 409, "not_redeemable_here")
    await refused(await quote(client, till, code, currency="USD"), 409, "currency_mismatch")

    coupon = (await session.execute(select(Coupon).where(col(Coupon.code) == code))).scalar_one()
    now = utcnow()
    coupon.valid_from, coupon.valid_until = now - timedelta(days=3), now - timedelta(days=1)
    await session.commit()
    await refused(await quote(client, till, code), 409, "coupon_expired")
    coupon.valid_from, coupon.valid_until = now + timedelta(days=1), now + timedelta(days=3)
    await session.commit()
    await refused(await quote(client, till, code), 409, "coupon_not_yet_valid")
    coupon.valid_from, coupon.valid_until = now - timedelta(days=1), now + timedelta(days=3)
    coupon.status = "void"
    await session.commit()
    await refused(await quote(client, till, code), 409, "coupon_void")
    coupon.status = "claimed"
    await session.commit()

    paused = await session.get_one(Campaign, campaign.id)
    paused.status = "paused"
    await session.commit()
    await refused(await quote(client, till, code), 409, "campaign_not_active")
    paused.status = "active"
    await session.commit()

    # offer rules: minimum spend, weekdays, channels
    minimum = await running_campaign(
        session,
        world,
        offer=Offer(
            kind="threshold",
            currency="CNY",
            value=2_000,
            threshold=20_000,
            valid_days_after_claim=7,
        ),
    )
    await refused(
        await quote(client, till, await claim(client, settings, session, minimum)),
        409,
        "below_minimum_spend",
    )
    today = utcnow().astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")).weekday()
    other_days = frozenset(range(7)) - {today}
    closed = await running_campaign(
        session,
        world,
        offer=Offer(
            kind="amount_off",
            currency="CNY",
            value=500,
            valid_days_after_claim=7,
            weekdays=other_days,
        ),
    )
    await refused(
        await quote(client, till, await claim(client, settings, session, closed)),
        409,
        "outside_time_window",
    )
    online = await running_campaign(
        session,
        world,
        offer=Offer(
            kind="amount_off",
            currency="CNY",
            value=500,
            valid_days_after_claim=7,
            channels=frozenset({"online"}),
        ),
    )
    await refused(
        await quote(client, till, await claim(client, settings, session, online)),
        409,
        "channel_not_allowed",
    )

    response = await redeem(client, till, code)
    assert response.status_code == 201, response.text
    await refused(await quote(client, till, code), 409, "coupon_already_redeemed")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"basket_amount": 0}, "basket_amount"),
        ({"basket_amount": -100}, "basket_amount"),
        ({"basket_amount": 10**11 + 1}, "basket_amount"),
        ({"basket_amount": 99.5}, "basket_amount"),
        ({"basket_amount": "lots"}, "basket_amount"),
        ({"currency": "cny"}, "currency"),
        ({"order_ref": ""}, "order_ref"),
        ({"tip": 5}, "tip"),
    ],
)
async def test_bad_amounts_and_unknown_fields_are_refused_and_write_nothing(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
    change: dict[str, Any],
    field: str,
) -> None:
    campaign = await running_campaign(session, world)
    [(_, till)] = await add_terminals(session, world.cafe)
    code = await claim(client, settings, session, campaign)
    before = [await count(sessionmaker, m) for m in (Redemption, JournalEntry, IdempotencyRecord)]
    response = await redeem(client, till, code, **change)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    if "order_ref" not in change:
        quoted = await quote(client, till, code, **change)
        assert quoted.status_code == 422 and quoted.json()["field"] == field
    after = [await count(sessionmaker, m) for m in (Redemption, JournalEntry, IdempotencyRecord)]
    assert after == before
    missing_key = await client.post(
        "/api/v1/pos/redemptions",
        json={"code": code, "basket_amount": BASKET, "currency": "CNY", "order_ref": "X"},
        headers=till,
    )
    assert missing_key.status_code == 422
    assert missing_key.json()["code"] == "idempotency_key_invalid"


# --- redeem -----------------------------------------------------------------------------------


async def test_redeem_splits_the_discount_and_posts_a_balanced_entry(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world, fee_bp=100)
    [(terminal, till)] = await add_terminals(session, world.cafe)
    code = await claim(client, settings, session, campaign)
    response = await redeem(client, till, code, key="redeem-key-0001")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["discount"], body["payable"], body["status"]) == (500, 9_500, "completed")
    assert body["funding"] == [
        {"org_id": str(world.carrier.id), "amount": 300},
        {"org_id": str(world.cafe.id), "amount": 200},
    ]
    assert sum(p["amount"] for p in body["funding"]) == body["discount"]
    assert body["terminal_id"] == str(terminal.id) and body["platform_fee"] == 5
    assert body["campaign_id"] == str(campaign.id) and body["coupon_code"] == code

    assert await total_postings(sessionmaker) == 0
    assert await balances(sessionmaker) == {
        (world.cafe.id, "partner_receivable"): 300,  # the carrier owes the café its share
        (world.carrier.id, "partner_payable"): -300,
        (world.cafe.id, "fee_payable"): -5,
        (world.carrier.id, "fee_revenue"): 5,
    }
    async with sessionmaker() as fresh:
        coupon = (await fresh.execute(select(Coupon))).scalar_one()
        stats = (await fresh.execute(select(CampaignDailyStat))).scalars().all()
        entry = (await fresh.execute(select(JournalEntry))).scalar_one()
    assert coupon.status == "redeemed" and coupon.redeemed_at is not None
    assert sum(s.redeemed for s in stats) == 1 and sum(s.discount for s in stats) == 500
    assert entry.redemption_id == uuid.UUID(body["id"])

    replay = await redeem(client, till, code, key="redeem-key-0001")
    assert replay.status_code == 201 and replay.json() == body
    assert replay.headers["idempotent-replayed"] == "true"
    reused = await redeem(client, till, code, key="redeem-key-0001", basket_amount=20_000)
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    again = await redeem(client, till, code)
    assert again.status_code == 409 and again.json()["code"] == "coupon_already_redeemed"

    read = await client.get(f"/api/v1/pos/redemptions/{body['id']}", headers=till)
    assert read.status_code == 200 and read.json() == body
    listed = await client.get("/api/v1/pos/redemptions?limit=10", headers=till)
    assert listed.json()["total"] == 1 and listed.json()["items"] == [body]


async def test_fifty_terminals_redeeming_one_coupon_at_once_one_wins(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world)
    tills = await add_terminals(session, world.cafe, 50)
    code = await claim(client, settings, session, campaign)
    results = await asyncio.gather(*(redeem(client, headers, code) for _, headers in tills))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201] + [409] * 49, [
        r.text for r in results if r.status_code not in (201, 409)
    ]
    assert {r.json()["code"] for r in results if r.status_code == 409} == {
        "coupon_already_redeemed"
    }
    assert await count(sessionmaker, Redemption) == 1
    assert await count(sessionmaker, JournalEntry) == 1
    assert await total_postings(sessionmaker) == 0


async def test_fifty_concurrent_retries_of_one_key_make_one_redemption(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world)
    [(_, till)] = await add_terminals(session, world.cafe)
    code = await claim(client, settings, session, campaign)
    results = await asyncio.gather(
        *(redeem(client, till, code, key="storm-key-77") for _ in range(50))
    )
    assert {r.status_code for r in results} == {201}, [r.text for r in results]
    assert len({json.dumps(r.json(), sort_keys=True) for r in results}) == 1
    assert sum(1 for r in results if "idempotent-replayed" not in r.headers) == 1
    assert await count(sessionmaker, Redemption) == 1
    assert await count(sessionmaker, JournalEntry) == 1


async def test_revoked_terminal_is_refused_and_other_merchants_see_nothing(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world)
    [(_, till)] = await add_terminals(session, world.cafe)
    [(_, bank_till)] = await add_terminals(session, world.bank)
    [(revoked, revoked_till)] = await add_terminals(session, world.cafe)
    code = await claim(client, settings, session, campaign)
    body = (await redeem(client, till, code)).json()

    other = await client.get(f"/api/v1/pos/redemptions/{body['id']}", headers=bank_till)
    assert other.status_code == 404
    assert (await client.get("/api/v1/pos/redemptions", headers=bank_till)).json()["total"] == 0
    refused = await reverse(client, bank_till, body["id"])
    assert refused.status_code == 404

    locked = await session.get_one(Terminal, revoked.id, with_for_update=True)
    await terminals.revoke_terminal(session, None, locked)
    await session.commit()
    assert (await quote(client, revoked_till, code)).status_code == 401
    assert (await redeem(client, revoked_till, code)).status_code == 401

    user = await client.post(
        "/api/v1/pos/quotes",
        json={"code": code, "basket_amount": BASKET, "currency": "CNY"},
        headers=await customer_headers(settings, await new_customer(session)),
    )
    assert user.status_code == 403


# --- reversals --------------------------------------------------------------------------------


async def test_full_reversal_gives_the_coupon_back_to_redeem_again(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world, fee_bp=100)
    [(_, till)] = await add_terminals(session, world.cafe)
    code = await claim(client, settings, session, campaign)
    first = (await redeem(client, till, code, key="redeem-key-first")).json()

    response = await reverse(client, till, first["id"], key="reverse-key-01")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["full"] and body["discount_reversed"] == 500 and body["coupon_status"] == "claimed"
    assert body["redemption"]["status"] == "reversed"
    assert body["redemption"]["refunded_amount"] == BASKET
    replay = await reverse(client, till, first["id"], key="reverse-key-01")
    assert replay.json() == body and replay.headers["idempotent-replayed"] == "true"
    again = await reverse(client, till, first["id"])
    assert again.status_code == 409 and again.json()["code"] == "redemption_already_reversed"
    assert all(v == 0 for v in (await balances(sessionmaker)).values())

    # The coupon is redeemable again, yet a retry of the first request's key is answered from
    # the key (its record meets the key's) and redeems nothing; another request is refused.
    retry = await redeem(client, till, code, key="redeem-key-first")
    assert retry.status_code == 201 and retry.json() == first
    assert retry.headers["idempotent-replayed"] == "true"
    reused = await redeem(client, till, code, key="redeem-key-first", order_ref="ORDER-2")
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    assert await count(sessionmaker, Redemption) == 1

    second = await redeem(client, till, code)
    assert second.status_code == 201, second.text
    assert second.json()["id"] != first["id"]
    assert await count(sessionmaker, Redemption) == 2
    assert await total_postings(sessionmaker) == 0


async def test_full_reversal_of_an_expired_coupon_releases_its_reservation(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world)
    [(_, till)] = await add_terminals(session, world.cafe)
    code = await claim(client, settings, session, campaign)
    redeemed = (await redeem(client, till, code)).json()
    coupon = (await session.execute(select(Coupon).where(col(Coupon.code) == code))).scalar_one()
    coupon.valid_from = utcnow() - timedelta(days=2)
    coupon.valid_until = utcnow() - timedelta(seconds=1)
    await session.commit()

    async def budget_left() -> int:
        async with sessionmaker() as fresh:
            left = (
                await fresh.execute(select(func.sum(col(ClaimSlot.remaining_budget))))
            ).scalar_one()
        return int(left)

    before = await budget_left()
    response = await reverse(client, till, redeemed["id"])
    assert response.status_code == 201, response.text
    assert response.json()["coupon_status"] == "expired"
    assert await budget_left() == before + 500


async def test_partial_reversals_stay_within_the_basket_and_the_ledger_balances(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world, fee_bp=100)
    [(_, till)] = await add_terminals(session, world.cafe)
    code = await claim(client, settings, session, campaign)
    redeemed = (await redeem(client, till, code, basket_amount=9_999)).json()

    first = await reverse(client, till, redeemed["id"], refund_amount=3_333)
    assert first.status_code == 201, first.text
    assert first.json()["redemption"]["status"] == "partially_reversed"
    assert first.json()["discount_reversed"] == 167  # round(500 * 3333 / 9999)
    too_much = await reverse(client, till, redeemed["id"], refund_amount=9_999)
    assert too_much.status_code == 422 and too_much.json()["code"] == "refund_exceeds_basket"
    assert too_much.json()["field"] == "refund_amount"
    for refund in (1, 3_332):
        step = await reverse(client, till, redeemed["id"], refund_amount=refund)
        assert step.status_code == 201, step.text
        assert await total_postings(sessionmaker) == 0
    rest = await reverse(client, till, redeemed["id"])
    assert rest.status_code == 201, rest.text
    final = rest.json()["redemption"]
    assert (final["status"], final["refunded_amount"], final["discount_reversed"]) == (
        "reversed",
        9_999,
        500,
    )
    assert await count(sessionmaker, RedemptionReversal) == 4
    assert all(v == 0 for v in (await balances(sessionmaker)).values())
    over = await reverse(client, till, redeemed["id"], refund_amount=1)
    assert over.status_code == 409


async def test_the_reversal_window_closes(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world, reversal_window_days=1)
    [(_, till)] = await add_terminals(session, world.cafe)
    code = await claim(client, settings, session, campaign)
    redeemed = (await redeem(client, till, code)).json()
    row = await session.get_one(Redemption, uuid.UUID(redeemed["id"]))
    row.redeemed_at = utcnow() - timedelta(days=2)
    await session.commit()
    response = await reverse(client, till, redeemed["id"])
    assert response.status_code == 409 and response.json()["code"] == "reversal_window_closed"


# --- the per-terminal rate limit ----------------------------------------------------------------


async def test_a_terminal_past_its_rate_limit_gets_429_others_do_not(
    world: World, session: AsyncSession, settings: Settings, sessionmaker: SessionMaker
) -> None:
    from litestar.testing import AsyncTestClient

    from coalition.platform.app import create_app

    limited = settings.model_copy(
        update={"pos_rate_limit_per_minute": 6, "pos_rate_limit_burst": 3}
    )
    async with AsyncTestClient(app=create_app(limited), base_url="http://t.local") as client:
        campaign = await running_campaign(session, world)
        [(_, till), (_, other_till)] = await add_terminals(session, world.cafe, 2)
        code = await claim(client, settings, session, campaign)
        for _ in range(3):
            assert (await quote(client, till, code)).status_code == 200
        refused = await redeem(client, till, code)
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 10
        assert await count(sessionmaker, Redemption) == 0
        assert (await redeem(client, other_till, code)).status_code == 201


# --- refusals write nothing ---------------------------------------------------------------------


WRITTEN = (Redemption, JournalEntry, LedgerPosting, IdempotencyRecord, CampaignDailyStat)


@pytest.mark.parametrize(
    ("case", "status", "problem"),
    [
        ("wrong_store", 409, "not_redeemable_here"),
        ("archived_store", 403, "organization_inactive"),
        ("paused_campaign", 409, "campaign_not_active"),
        ("expired_coupon", 409, "coupon_expired"),
        ("wrong_currency", 409, "currency_mismatch"),
        ("malformed_code", 422, "invalid_code"),
        ("check_symbol_typo", 422, "invalid_code"),
        ("unknown_code", 404, "coupon_not_found"),
        ("qr_url_of_another_site", 422, "invalid_code"),
    ],
)
async def test_each_refused_redemption_has_its_code_and_writes_nothing(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
    case: str,
    status: int,
    problem: str,
) -> None:
    campaign = await running_campaign(session, world)
    [(terminal, till)] = await add_terminals(session, world.cafe)
    [(_, bank_till)] = await add_terminals(session, world.bank)
    code = await claim(client, settings, session, campaign)
    headers, body, sent = till, {}, code
    if case == "wrong_store":
        headers = bank_till
    elif case == "archived_store":
        store = await session.get_one(Store, terminal.store_id)
        store.status = "archived"
        await session.commit()
    elif case == "paused_campaign":
        await session.execute(
            update(Campaign).where(col(Campaign.id) == campaign.id).values(status="paused")
        )
        await session.commit()
    elif case == "expired_coupon":
        await session.execute(
            update(Coupon)
            .where(col(Coupon.code) == code)
            .values(
                valid_from=utcnow() - timedelta(days=9), valid_until=utcnow() - timedelta(days=1)
            )
        )
        await session.commit()
    elif case == "wrong_currency":
        body = {"currency": "USD"}
    elif case == "malformed_code":
        sent = "DROP TABLE coupon; --"
    elif case == "check_symbol_typo":
        sent = code[:-1] + ("0" if code[-1] != "0" else "1")
    elif case == "unknown_code":
        sent = codes.new_code()
    elif case == "qr_url_of_another_site":
        sent = f"https://evil.example/c/{code[:-1]}"  # one symbol short: never a valid code
    before = [await count(sessionmaker, model) for model in WRITTEN]
    response = await redeem(client, headers, sent, **body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == problem, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [await count(sessionmaker, model) for model in WRITTEN] == before
    async with sessionmaker() as fresh:
        coupon = (await fresh.execute(select(Coupon).where(col(Coupon.code) == code))).scalar_one()
    assert coupon.status == "claimed" and coupon.redeemed_at is None


async def test_stats_show_each_funders_spending_as_the_ledger_does(
    client: Client,
    world: World,
    session: AsyncSession,
    settings: Settings,
    sessionmaker: SessionMaker,
) -> None:
    campaign = await running_campaign(session, world)
    owner = await auth_headers(client, "marketing@carrier.test")
    [(_, till)] = await add_terminals(session, world.cafe)
    kept = (await redeem(client, till, await claim(client, settings, session, campaign))).json()
    refunded = (
        await redeem(
            client, till, await claim(client, settings, session, campaign), basket_amount=9_999
        )
    ).json()
    assert kept["discount"] == refunded["discount"] == 500

    async def spending() -> tuple[int, list[int]]:
        stats = (await client.get(f"/api/v1/campaigns/{campaign.id}/stats", headers=owner)).json()
        assert [f["org_id"] for f in stats["funders"]] == [
            str(world.carrier.id),
            str(world.cafe.id),
        ]
        return stats["budget_spent"], [f["spent"] for f in stats["funders"]]

    assert await spending() == (1_000, [600, 400])
    # A third of the second basket comes back: 167 of its discount, split as the ledger splits it.
    assert (await reverse(client, till, refunded["id"], refund_amount=3_333)).status_code == 201
    total, (carrier, cafe) = await spending()
    owed_by_carrier = -(await balances(sessionmaker))[(world.carrier.id, "partner_payable")]
    assert total == 1_000 - 167 and carrier + cafe == total
    assert carrier == owed_by_carrier and 600 - 167 < carrier < 600
    # The rest of the basket: only the first redemption's split still stands.
    assert (await reverse(client, till, refunded["id"])).status_code == 201
    assert await spending() == (500, [300, 200])
