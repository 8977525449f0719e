"""A targeted campaign's customer list through the HTTP API: CSV and JSON loads with their
per-row reports, replace and add, reading (customer data for the carrier only), removing,
the audience and status rules, tenancy, and claims that follow the list."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import Campaign, CampaignTarget, Customer
from coalition.campaigns.services import issuance
from coalition.platform.audit import AuditEntry
from coalition.platform.settings import Settings
from tests.integration.campaign_helpers import running_campaign
from tests.integration.conftest import World, auth_headers
from tests.integration.customer_helpers import customer_headers, new_customer

Client = AsyncTestClient[Litestar]
OWNER = "marketing@carrier.test"


def csv_of(*lines: str, header: str = "customer_id") -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode()


def url(campaign: Campaign | uuid.UUID) -> str:
    campaign_id = campaign.id if isinstance(campaign, Campaign) else campaign
    return f"/api/v1/campaigns/{campaign_id}/targets"


async def send_csv(
    client: Client, method: str, headers: dict[str, str], campaign: Campaign, body: bytes
) -> Any:
    return await client.request(
        method, url(campaign), content=body, headers={**headers, "content-type": "text/csv"}
    )


async def listed(session: AsyncSession, campaign: Campaign) -> set[uuid.UUID]:
    rows = await session.execute(
        select(CampaignTarget.customer_id).where(col(CampaignTarget.campaign_id) == campaign.id)
    )
    return set(rows.scalars().all())


async def customers(session: AsyncSession, count: int) -> list[Customer]:
    rows = [
        Customer(external_id_hash=secrets.token_hex(32), phone_hint="*******0000")
        for _ in range(count)
    ]
    session.add_all(rows)
    await session.commit()
    return rows


async def targeted_campaign(session: AsyncSession, world: World, status: str) -> Campaign:
    campaign = await running_campaign(session, world, audience="targeted")
    campaign.status = status
    await session.commit()
    return campaign


def counts(result: dict[str, Any]) -> tuple[int, ...]:
    keys = ("rows", "added", "kept", "removed", "duplicates", "rejected", "total")
    return tuple(result[k] for k in keys)


async def test_csv_replace_reports_bad_lines_and_keeps_the_good_ones(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world, audience="targeted")
    a, b, c = await customers(session, 3)
    stranger = uuid.uuid4()
    body = csv_of(
        str(a.id),
        "not-an-id",
        "",  # a blank line is not a row
        str(b.id).upper(),  # any spelling of a UUID is the same customer
        str(stranger),
        str(a.id),
        str(c.id),
        " ,x",  # no value in the column
    )
    headers = await auth_headers(client, OWNER)
    response = await send_csv(client, "PUT", headers, campaign, body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["mode"] == "replace"
    # rows, added, kept, removed, duplicates, rejected, total
    assert counts(result) == (7, 3, 0, 0, 1, 3, 3)
    assert [(e["line"], e["reason"]) for e in result["errors"]] == [
        (3, "malformed_customer_id"),
        (6, "unknown_customer"),
        (7, "duplicate"),
        (9, "missing_value"),
    ]
    assert result["errors"][1]["value"] == str(stranger)
    assert result["errors_truncated"] is False
    assert await listed(session, campaign) == {a.id, b.id, c.id}

    audit = (
        await session.execute(
            select(AuditEntry).where(col(AuditEntry.action) == "campaign.targets_replaced")
        )
    ).scalar_one()
    assert audit.subject_id == campaign.id and audit.after is not None
    assert audit.after["added"] == 3 and audit.after["total"] == 3


async def test_replace_makes_the_list_exactly_the_upload_and_add_extends_it(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world, audience="targeted")
    a, b, c, d = await customers(session, 4)
    headers = await auth_headers(client, OWNER)
    first = await send_csv(client, "PUT", headers, campaign, csv_of(str(a.id), str(b.id)))
    assert counts(first.json()) == (2, 2, 0, 0, 0, 0, 2)

    second = await send_csv(client, "PUT", headers, campaign, csv_of(str(b.id), str(c.id)))
    assert counts(second.json()) == (2, 1, 1, 1, 0, 0, 2)
    assert await listed(session, campaign) == {b.id, c.id}

    added = await send_csv(client, "POST", headers, campaign, csv_of(str(c.id), str(d.id)))
    result = added.json()
    assert result["mode"] == "add"
    assert counts(result) == (2, 1, 0, 0, 1, 0, 3)
    assert [(e["line"], e["reason"], e["value"]) for e in result["errors"]] == [
        (2, "duplicate", str(c.id))
    ]
    assert await listed(session, campaign) == {b.id, c.id, d.id}

    same = await send_csv(client, "PUT", headers, campaign, csv_of(str(d.id), str(c.id)))
    assert counts(same.json()) == (2, 0, 2, 1, 0, 0, 2)  # b is dropped, nothing is added


async def test_json_lists_of_ids_and_of_phones(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world, audience="targeted")
    a, b = await customers(session, 2)
    hasher = issuance.phone_hasher(settings)
    person = Customer(external_id_hash=hasher("+8613800000001"), phone_hint="*******0001")
    session.add(person)
    await session.commit()
    headers = await auth_headers(client, OWNER)

    ids = await client.put(
        url(campaign),
        json={"customer_ids": [str(a.id), "nope", str(a.id), str(b.id)]},
        headers=headers,
    )
    assert ids.status_code == 200, ids.text
    result = ids.json()
    assert counts(result) == (4, 2, 0, 0, 1, 1, 2)
    # JSON entries are reported by their position in the list, from 1
    assert [(e["line"], e["reason"]) for e in result["errors"]] == [
        (2, "malformed_customer_id"),
        (3, "duplicate"),
    ]

    phones = await client.post(
        url(campaign),
        json={"phones": ["138 0000 0001", "13900000009", "hello"]},
        headers=headers,
    )
    assert phones.status_code == 200, phones.text
    result = phones.json()
    assert counts(result) == (3, 1, 0, 0, 0, 2, 3)
    assert [(e["line"], e["reason"], e["value"]) for e in result["errors"]] == [
        (2, "unknown_customer", "*******0009"),
        (3, "malformed_phone", "*******"),  # whatever was sent is masked
    ]
    assert "13900000009" not in phones.text  # numbers are masked in the report
    assert await listed(session, campaign) == {a.id, b.id, person.id}

    both = await client.put(
        url(campaign),
        json={"customer_ids": [str(a.id)], "phones": ["13800000001"]},
        headers=headers,
    )
    assert both.status_code == 422 and both.json()["field"] == "customer_ids"
    empty = await client.put(url(campaign), json={"customer_ids": []}, headers=headers)
    assert empty.status_code == 422 and empty.json()["field"] == "customer_ids"
    broken = await client.put(
        url(campaign), json={"customer_ids": [str(a.id), "two\nlines"]}, headers=headers
    )
    assert broken.status_code == 422 and broken.json()["field"] == "customer_ids[1]"
    unknown_field = await client.put(url(campaign), json={"ids": [str(a.id)]}, headers=headers)
    assert unknown_field.status_code == 422
    assert await listed(session, campaign) == {a.id, b.id, person.id}  # refusals wrote nothing


async def test_an_unusable_file_or_body_changes_nothing(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world, audience="targeted")
    (a,) = await customers(session, 1)
    session.add(CampaignTarget(campaign_id=campaign.id, customer_id=a.id))
    await session.commit()
    headers = await auth_headers(client, OWNER)
    for body, code in (
        (b"name\nsomebody\n", "issuance_file_invalid"),
        (b"customer_id\n", "issuance_file_invalid"),
        (b"\xff\xfe", "issuance_file_invalid"),
    ):
        response = await send_csv(client, "PUT", headers, campaign, body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == code and response.json()["field"] == "file"
    wrong_type = await client.put(
        url(campaign), content=b"<x/>", headers={**headers, "content-type": "application/xml"}
    )
    assert wrong_type.status_code == 415
    bad_json = await client.put(
        url(campaign), content=b"{", headers={**headers, "content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert await listed(session, campaign) == {a.id}


async def test_only_a_targeted_campaign_that_is_not_over_takes_a_list(
    client: Client, world: World, session: AsyncSession
) -> None:
    (a,) = await customers(session, 1)
    headers = await auth_headers(client, OWNER)
    body = csv_of(str(a.id))
    for audience in ("open", "segment"):
        campaign = await running_campaign(session, world, audience=audience)
        refused = await send_csv(client, "PUT", headers, campaign, body)
        assert refused.status_code == 422
        assert refused.json()["code"] == "campaign_not_targeted"
        assert refused.json()["field"] == "audience"

    for status in ("draft", "proposed", "approved", "paused"):
        open_list = await targeted_campaign(session, world, status)
        assert (await send_csv(client, "POST", headers, open_list, body)).status_code == 200
    for status in ("ended", "cancelled"):
        closed = await targeted_campaign(session, world, status)
        refused = await send_csv(client, "PUT", headers, closed, body)
        assert refused.status_code == 409 and refused.json()["code"] == "target_list_closed"
        gone = await client.delete(f"{url(closed)}/{a.id}", headers=headers)
        assert gone.status_code == 409 and gone.json()["code"] == "target_list_closed"
        assert await listed(session, closed) == set()


async def test_reading_and_removing(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world, audience="targeted")
    people = await customers(session, 5)
    for person in people:
        person.tier, person.tags = 4, ["coffee"]
    await session.commit()
    headers = await auth_headers(client, OWNER)
    await send_csv(client, "PUT", headers, campaign, csv_of(*(str(p.id) for p in people)))

    page = await client.get(url(campaign), params={"limit": 2, "offset": 1}, headers=headers)
    assert page.status_code == 200, page.text
    body = page.json()
    ordered = sorted(p.id for p in people)
    assert body["total"] == 5 and (body["limit"], body["offset"]) == (2, 1)
    assert [i["customer_id"] for i in body["items"]] == [str(x) for x in ordered[1:3]]
    assert body["items"][0]["tier"] == 4 and body["items"][0]["phone_hint"] == "*******0000"

    removed = await client.delete(f"{url(campaign)}/{ordered[0]}", headers=headers)
    assert removed.status_code == 204, removed.text
    again = await client.delete(f"{url(campaign)}/{ordered[0]}", headers=headers)
    assert again.status_code == 404 and again.json()["code"] == "target_not_found"
    assert (await client.get(url(campaign), headers=headers)).json()["total"] == 4
    actions = (
        await session.execute(
            select(AuditEntry.action).where(col(AuditEntry.subject_id) == campaign.id)
        )
    ).scalars()
    assert "campaign.target_removed" in set(actions)

    # A merchant's own targeted campaign: its staff see who is listed by id only.
    mine = await running_campaign(session, world, audience="targeted")
    mine.owner_org_id = world.cafe.id
    session.add(CampaignTarget(campaign_id=mine.id, customer_id=people[0].id))
    await session.commit()
    cafe = await auth_headers(client, "marketing@cafe.test")
    items = (await client.get(url(mine), headers=cafe)).json()["items"]
    assert items == [
        {
            "customer_id": str(people[0].id),
            "phone_hint": None,
            "tier": None,
            "tags": None,
            "on_network": None,
        }
    ]
    carrier_view = (await client.get(url(mine), headers=headers)).json()["items"]
    assert carrier_view[0]["tier"] == 4  # the carrier sees its subscribers on any list


async def test_other_tenants_get_404_and_participants_cannot_change_the_list(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world, audience="targeted")
    (a,) = await customers(session, 1)
    body = csv_of(str(a.id))
    bank = await auth_headers(client, "marketing@bank.test")  # not in the campaign
    cafe = await auth_headers(client, "marketing@cafe.test")  # a participant, not the owner
    for headers in (bank, cafe):
        assert (await client.get(url(campaign), headers=headers)).status_code == 404
        refused = await send_csv(client, "PUT", headers, campaign, body)
        assert refused.status_code == 404, refused.text
        gone = await client.delete(f"{url(campaign)}/{a.id}", headers=headers)
        assert gone.status_code == 404
    missing = await send_csv(client, "PUT", bank, campaign, body)
    assert missing.json()["code"] == "not_found"
    finance = await auth_headers(client, "finance@carrier.test")
    assert (await send_csv(client, "PUT", finance, campaign, body)).status_code == 403
    assert (await client.get(url(campaign), headers=finance)).status_code == 200
    assert (await client.get(url(uuid.uuid4()), headers=finance)).status_code == 404
    assert await listed(session, campaign) == set()


async def test_customers_on_the_list_claim_and_others_are_refused(
    client: Client, world: World, session: AsyncSession, settings: Settings
) -> None:
    campaign = await running_campaign(session, world, audience="targeted")
    on_list = await new_customer(session)
    off_list = await new_customer(session)
    headers = await auth_headers(client, OWNER)

    async def claim(customer: Customer) -> Any:
        return await client.post(
            f"/api/v1/campaigns/{campaign.id}/claims",
            headers={
                **await customer_headers(settings, customer),
                "Idempotency-Key": uuid.uuid4().hex,
            },
        )

    before = await claim(on_list)
    assert before.status_code == 403 and before.json()["code"] == "not_eligible"
    loaded = await client.put(
        url(campaign), json={"customer_ids": [str(on_list.id)]}, headers=headers
    )
    assert loaded.status_code == 200, loaded.text
    won = await claim(on_list)
    assert won.status_code == 201, won.text
    refused = await claim(off_list)
    assert refused.status_code == 403 and refused.json()["code"] == "not_eligible"

    # Replacing the list takes the customer off it: no further claim, the coupon stays.
    await client.put(url(campaign), json={"customer_ids": [str(off_list.id)]}, headers=headers)
    assert (await claim(off_list)).status_code == 201
    later = await claim(on_list)
    assert later.status_code == 403 and later.json()["code"] == "not_eligible"
    held = await session.execute(
        text("SELECT count(*) FROM coupon WHERE customer_id = :c"), {"c": on_list.id}
    )
    assert held.scalar_one() == 1


async def test_a_large_list_is_loaded_in_one_go(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world, audience="targeted")
    await session.execute(
        text(
            "INSERT INTO customer (id, external_id_hash, tier, tags, on_network, created_at, "
            "updated_at) SELECT gen_random_uuid(), md5(g::text || 'targets'), 1, '{}', true, "
            "now(), now() FROM generate_series(1, 20000) g"
        )
    )
    await session.commit()
    ids = (await session.execute(text("SELECT id::text FROM customer"))).scalars().all()
    body = csv_of(*ids, *ids[:5], "bad")
    headers = await auth_headers(client, OWNER)
    response = await send_csv(client, "PUT", headers, campaign, body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert counts(result) == (len(ids) + 6, len(ids), 0, 0, 5, 1, len(ids))
    assert len(await listed(session, campaign)) == len(ids)


async def test_concurrent_replacements_never_mix_two_lists(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world, audience="targeted")
    people = await customers(session, 400)
    first, second = people[:200], people[200:]
    headers = await auth_headers(client, OWNER)
    bodies = [csv_of(*(str(p.id) for p in group)) for group in (first, second)] * 3
    answers = await asyncio.gather(
        *(send_csv(client, "PUT", headers, campaign, body) for body in bodies)
    )
    assert [a.status_code for a in answers] == [200] * len(bodies)
    final = await listed(session, campaign)
    assert final in ({p.id for p in first}, {p.id for p in second})
    # each replacement saw the list the previous one left: what it added and removed add up
    assert sum(a.json()["added"] - a.json()["removed"] for a in answers) == len(final)


async def test_a_failure_before_the_commit_leaves_the_list_as_it_was(
    world: World, session: AsyncSession, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coalition.campaigns.services import targets
    from coalition.platform.auth import Principal

    campaign = await running_campaign(session, world, audience="targeted")
    a, b, c = await customers(session, 3)
    session.add(CampaignTarget(campaign_id=campaign.id, customer_id=a.id))
    await session.commit()
    campaign_id, a_id = campaign.id, a.id  # (the rollback below expires the loaded rows)
    owner = Principal(kind="user", org_id=world.carrier.id, org_kind="carrier", role="marketing")

    async def fail(_: AsyncSession) -> None:
        raise RuntimeError("the connection was lost")

    monkeypatch.setattr(targets, "commit", fail)
    with pytest.raises(RuntimeError):
        await targets.load_csv(
            session, settings, owner, campaign_id, csv_of(str(b.id), str(c.id)), mode="replace"
        )
    await session.rollback()
    rows = await session.execute(
        text("SELECT customer_id FROM campaign_target WHERE campaign_id = :c"), {"c": campaign_id}
    )
    assert set(rows.scalars().all()) == {a_id}


async def test_bulk_issuance_to_the_audience_issues_to_the_loaded_list(
    client: Client, world: World, session: AsyncSession
) -> None:
    campaign = await running_campaign(session, world, audience="targeted")
    people = await customers(session, 4)
    headers = await auth_headers(client, OWNER)
    chosen = [str(p.id) for p in people[:3]]
    loaded = await client.put(url(campaign), json={"customer_ids": chosen}, headers=headers)
    assert loaded.status_code == 200 and loaded.json()["total"] == 3
    created = await client.post(
        f"/api/v1/campaigns/{campaign.id}/issuances", json={"audience": True}, headers=headers
    )
    assert created.status_code == 202, created.text
    batch = created.json()
    assert (batch["source"], batch["total"]) == ("audience", 3)
    await issuance.issue_batch(session, uuid.UUID(batch["id"]))  # what the worker's job does
    holders = await session.execute(
        text("SELECT customer_id::text FROM coupon WHERE campaign_id = :c"), {"c": campaign.id}
    )
    assert sorted(holders.scalars().all()) == sorted(chosen)
