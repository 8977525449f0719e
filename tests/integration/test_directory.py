"""The partner directory: search active partners by industry, city and name."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.merchants.models import Organization, Store
from tests.integration.campaign_helpers import running_campaign
from tests.integration.conftest import World, auth_headers

Client = AsyncTestClient[Litestar]


async def _populate(session: AsyncSession, world: World) -> None:
    cafe = await session.get_one(Organization, world.cafe.id)
    bank = await session.get_one(Organization, world.bank.id)
    cafe.cities, cafe.description = ["Shanghai", "Beijing"], "Coffee on every corner"
    bank.cities = ["Shenzhen"]
    session.add_all(
        [
            Store(org_id=cafe.id, name="People's Square", address="1 Nanjing Rd", city="Shanghai"),
            Store(org_id=cafe.id, name="Sanlitun", address="2 Gongti Rd", city="Beijing"),
            Store(org_id=cafe.id, name="Old shop", address="3", city="Shanghai", status="archived"),
            Store(org_id=bank.id, name="Futian branch", address="9 Shennan Rd", city="Shenzhen"),
        ]
    )
    session.add(
        Organization(
            kind="merchant",
            name="Quiet Café 静咖啡",
            industry="cafe",
            status="pending",
            cities=["Shanghai"],
        )
    )
    await session.commit()


async def test_merchants_find_active_partners(
    client: Client, world: World, session: AsyncSession
) -> None:
    await _populate(session, world)
    headers = await auth_headers(client, "marketing@bank.test")
    everyone = (await client.get("/api/v1/partners", headers=headers)).json()
    names = [p["name"] for p in everyone["items"]]
    assert names == ["Bank Org", "Cafe Org"]  # active merchants only; no carrier, no pending café
    cafe = next(p for p in everyone["items"] if p["name"] == "Cafe Org")
    assert cafe["store_count"] == 2  # archived stores do not count
    assert cafe["cities"] == ["Shanghai", "Beijing"]
    assert "payout_details" not in cafe and "stripe_account_id" not in cafe

    by_city = (await client.get("/api/v1/partners?city=Shanghai", headers=headers)).json()
    assert [p["name"] for p in by_city["items"]] == ["Cafe Org"]
    by_industry = (await client.get("/api/v1/partners?industry=bank", headers=headers)).json()
    assert [p["name"] for p in by_industry["items"]] == ["Bank Org"]
    by_name = (await client.get("/api/v1/partners?q=caf", headers=headers)).json()
    assert [p["name"] for p in by_name["items"]] == ["Cafe Org"]
    wildcard = (await client.get("/api/v1/partners?q=%25", headers=headers)).json()
    assert wildcard["total"] == 0  # `%` is searched for literally
    # merchants cannot widen the search to other statuses
    pending = (await client.get("/api/v1/partners?status=pending", headers=headers)).json()
    assert [p["name"] for p in pending["items"]] == ["Bank Org", "Cafe Org"]


async def test_partners_show_the_joint_campaigns_they_run(
    client: Client, world: World, session: AsyncSession
) -> None:
    await _populate(session, world)
    campaign = await running_campaign(session, world)  # carrier + café, active
    ended = await running_campaign(session, world)
    ended.status = "ended"
    await session.commit()
    headers = await auth_headers(client, "marketing@bank.test")
    partners = {
        p["name"]: p
        for p in (await client.get("/api/v1/partners", headers=headers)).json()["items"]
    }
    assert [c["id"] for c in partners["Cafe Org"]["running_campaigns"]] == [str(campaign.id)]
    assert partners["Bank Org"]["running_campaigns"] == []


async def test_carrier_sees_every_status(
    client: Client, world: World, session: AsyncSession
) -> None:
    await _populate(session, world)
    headers = await auth_headers(client, "marketing@carrier.test")
    pending = (
        await client.get("/api/v1/partners?status=pending&city=Shanghai", headers=headers)
    ).json()
    assert [p["name"] for p in pending["items"]] == ["Quiet Café 静咖啡"]
    bad = await client.get("/api/v1/partners?industry=casino", headers=headers)
    assert bad.status_code in (400, 422) and bad.json()["field"] == "industry"
