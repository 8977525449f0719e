"""Joint campaigns through the HTTP API: drafting and its checks, proposal of versioned terms,
acceptance (and re-acceptance after a change), decline, activation (by the owner and by the
scheduler) with its claim slots, pause and resume, the end, cancellation, webhooks, audit,
roles and tenancy."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns import jobs
from coalition.campaigns.models import CampaignStore, ClaimSlot
from coalition.campaigns.services import workflow
from coalition.merchants.models import WebhookDelivery, WebhookEndpoint
from coalition.platform.audit import AuditEntry
from coalition.platform.db import SessionMaker, utcnow
from tests.integration.campaign_helpers import (
    BANK,
    CAFE,
    OWNER,
    Client,
    Staff,
    active_campaign,
    add_merchant,
    add_store,
    approved_campaign,
    campaign_action,
    campaign_body,
    create_campaign,
)
from tests.integration.conftest import World

CAMPAIGN_EVENTS = ["campaign.proposed", "campaign.approved", "campaign.activated", "campaign.ended"]


async def _post(
    client: Client,
    headers: dict[str, str],
    campaign_id: str,
    action: str,
    body: dict[str, Any] | None = None,
) -> Any:
    return await client.post(
        f"/api/v1/campaigns/{campaign_id}/{action}", json=body, headers=headers
    )


async def _create_problem(
    client: Client, headers: dict[str, str], body: dict[str, Any], status: int = 422
) -> dict[str, Any]:
    response = await client.post("/api/v1/campaigns", json=body, headers=headers)
    assert response.status_code == status, response.text
    problem: dict[str, Any] = response.json()
    return problem


def _by_org(campaign: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["org_id"]: p for p in campaign["participants"]}


async def _actions(session: AsyncSession, campaign_id: str) -> list[str]:
    rows = await session.execute(
        select(col(AuditEntry.action))
        .where(col(AuditEntry.subject_id) == campaign_id)
        .order_by(col(AuditEntry.at), col(AuditEntry.id))
    )
    return list(rows.scalars())


# --- the happy path -------------------------------------------------------------------------


async def test_carrier_cafe_and_bank_run_a_joint_campaign(
    client: Client, world: World, session: AsyncSession
) -> None:
    for org, events in ((world.cafe, CAMPAIGN_EVENTS), (world.bank, ["*"])):
        session.add(
            WebhookEndpoint(
                org_id=org.id, url="http://127.0.0.1:9/hook", event_types=events, secret="whsec_t"
            )
        )
    await session.commit()
    staff = Staff(client)
    owner = await staff(OWNER)

    draft = await create_campaign(client, owner, campaign_body(world))
    assert draft["status"] == "draft" and draft["terms_version"] == 0
    assert draft["owner_org_id"] == str(world.carrier.id)
    assert draft["offer"]["currency"] == "CNY" and draft["offer"]["kind"] == "threshold"
    assert [(p["share_bp"], p["budget_cap"], p["position"]) for p in draft["participants"]] == [
        (5000, None, 0),
        (3000, 600_000, 1),
        (2000, 400_000, 2),
    ]
    assert {p["acceptance"] for p in draft["participants"]} == {"pending"}

    proposed = await campaign_action(client, owner, draft["id"], "propose")
    assert proposed["status"] == "proposed" and proposed["terms_version"] == 1
    acceptance = {org: p["acceptance"] for org, p in _by_org(proposed).items()}
    assert acceptance == {
        str(world.carrier.id): "accepted",  # the owner accepts its own proposal
        str(world.cafe.id): "pending",
        str(world.bank.id): "pending",
    }
    terms = await client.get(f"/api/v1/campaigns/{draft['id']}/terms/1", headers=owner)
    assert terms.status_code == 200, terms.text
    frozen = terms.json()
    assert frozen["current"] is True and frozen["version"] == 1
    assert frozen["terms"]["total_budget"] == 2_000_000
    assert frozen["terms"]["fee"] == {"bp": 100, "fixed": 0, "payer": "redeeming_merchant"}
    assert [p["share_bp"] for p in frozen["terms"]["participants"]] == [5000, 3000, 2000]
    assert frozen["terms"]["offer"]["threshold"] == 10_000

    after_cafe = await campaign_action(
        client, await staff(CAFE), draft["id"], "accept", {"terms_version": 1}
    )
    assert after_cafe["status"] == "proposed"
    approved = await campaign_action(
        client, await staff(BANK), draft["id"], "accept", {"terms_version": 1}
    )
    assert approved["status"] == "approved" and approved["approved_at"]
    assert {p["acceptance"] for p in approved["participants"]} == {"accepted"}

    active = await campaign_action(client, owner, draft["id"], "activate")
    assert active["status"] == "active" and active["activated_at"]

    slots = (
        (await session.execute(select(ClaimSlot).where(col(ClaimSlot.campaign_id) == draft["id"])))
        .scalars()
        .all()
    )
    assert len(slots) == 64
    assert sum(s.remaining_quantity for s in slots) == 1000
    assert sum(s.remaining_budget for s in slots) == 2_000_000
    assert all(s.funder_remaining[0] is None for s in slots)  # the carrier has no cap
    assert sum(s.funder_remaining[1] or 0 for s in slots) == 600_000
    assert sum(s.funder_remaining[2] or 0 for s in slots) == 400_000

    listed = await client.get("/api/v1/campaigns?status=active", headers=await staff(CAFE))
    assert [c["id"] for c in listed.json()["items"]] == [draft["id"]]

    deliveries = (await session.execute(select(WebhookDelivery))).scalars().all()
    by_org: dict[str, list[str]] = {}
    for delivery in sorted(deliveries, key=lambda d: d.created_at):
        by_org.setdefault(str(delivery.org_id), []).append(delivery.event_type)
        assert delivery.payload["data"]["campaign"]["id"] == draft["id"]
    expected = ["campaign.proposed", "campaign.approved", "campaign.activated"]
    assert by_org == {str(world.cafe.id): expected, str(world.bank.id): expected}

    assert await _actions(session, draft["id"]) == [
        "campaign.created",
        "campaign.proposed",
        "campaign.accepted",
        "campaign.accepted",
        "campaign.approved",
        "campaign.activated",
    ]
    approval = (
        await session.execute(
            select(AuditEntry).where(
                col(AuditEntry.subject_id) == draft["id"],
                col(AuditEntry.action) == "campaign.approved",
            )
        )
    ).scalar_one()
    assert approval.before == {"status": "proposed"}
    assert approval.after == {"status": "approved", "terms_version": 1}


# --- versions, answers, transitions ---------------------------------------------------------


async def test_a_changed_proposal_needs_new_acceptances(
    client: Client, world: World, session: AsyncSession
) -> None:
    staff = Staff(client)
    owner, cafe, bank = await staff(OWNER), await staff(CAFE), await staff(BANK)
    campaign = await create_campaign(client, owner, campaign_body(world))
    cid = campaign["id"]
    await campaign_action(client, owner, cid, "propose")
    await campaign_action(client, cafe, cid, "accept", {"terms_version": 1})

    # a new name is not a change of terms: the proposal and its acceptances stand
    renamed = await client.patch(f"/api/v1/campaigns/{cid}", json={"name": "New"}, headers=owner)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["status"] == "proposed"
    assert _by_org(renamed.json())[str(world.cafe.id)]["acceptance"] == "accepted"

    changed = await client.patch(
        f"/api/v1/campaigns/{cid}", json={"total_budget": 3_000_000}, headers=owner
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["status"] == "draft"
    assert {p["acceptance"] for p in changed.json()["participants"]} == {"pending"}
    too_early = await _post(client, cafe, cid, "accept", {"terms_version": 1})
    assert too_early.status_code == 409
    assert too_early.json()["code"] == "invalid_campaign_transition"

    again = await campaign_action(client, owner, cid, "propose")
    assert again["terms_version"] == 2 and again["status"] == "proposed"
    stale = await _post(client, cafe, cid, "accept", {"terms_version": 1})
    assert stale.status_code == 409
    assert stale.json()["code"] == "stale_terms_version"
    assert stale.json()["current_version"] == 2

    await campaign_action(client, cafe, cid, "accept", {"terms_version": 2})
    # accepting twice changes nothing
    await campaign_action(client, cafe, cid, "accept", {"terms_version": 2})
    approved = await campaign_action(client, bank, cid, "accept", {"terms_version": 2})
    assert approved["status"] == "approved"
    assert {p["accepted_version"] for p in approved["participants"]} == {2}

    v1 = (await client.get(f"/api/v1/campaigns/{cid}/terms/1", headers=bank)).json()
    v2 = (await client.get(f"/api/v1/campaigns/{cid}/terms/2", headers=bank)).json()
    assert (v1["current"], v2["current"]) == (False, True)
    assert (v1["terms"]["total_budget"], v2["terms"]["total_budget"]) == (2_000_000, 3_000_000)
    missing = await client.get(f"/api/v1/campaigns/{cid}/terms/3", headers=bank)
    assert missing.status_code == 404

    update = (
        await session.execute(
            select(AuditEntry).where(
                col(AuditEntry.subject_id) == cid, col(AuditEntry.action) == "campaign.updated"
            )
        )
    ).scalars()
    assert [(e.before, e.after) for e in update] == [
        ({"name": "Coffee & Data 咖啡流量节"}, {"name": "New"}),
        (
            {"total_budget": 2_000_000, "status": "proposed"},
            {"total_budget": 3_000_000, "status": "draft"},
        ),
    ]


async def test_a_participant_declines_with_a_reason(
    client: Client, world: World, session: AsyncSession
) -> None:
    staff = Staff(client)
    owner, cafe, bank = await staff(OWNER), await staff(CAFE), await staff(BANK)
    cid = (await create_campaign(client, owner, campaign_body(world)))["id"]
    await campaign_action(client, owner, cid, "propose")
    await campaign_action(client, cafe, cid, "accept", {"terms_version": 1})

    empty = await _post(client, bank, cid, "decline", {"reason": ""})
    assert empty.status_code == 422 and empty.json()["field"] == "reason"
    declined = await campaign_action(client, bank, cid, "decline", {"reason": "Cap too high"})
    assert declined["status"] == "draft" and declined["status_reason"] == "Cap too high"
    bank_row = _by_org(declined)[str(world.bank.id)]
    assert bank_row["acceptance"] == "declined" and bank_row["decline_reason"] == "Cap too high"
    assert bank_row["declined_at"]
    assert _by_org(declined)[str(world.cafe.id)]["acceptance"] == "pending"
    late = await _post(client, cafe, cid, "accept", {"terms_version": 1})
    assert late.status_code == 409

    # the owner lowers the cap and proposes again: a fresh version, the decline is history
    body = campaign_body(world)
    body["participants"][2]["budget_cap"] = 300_000
    patched = await client.patch(
        f"/api/v1/campaigns/{cid}", json={"participants": body["participants"]}, headers=owner
    )
    assert patched.status_code == 200, patched.text
    again = await campaign_action(client, owner, cid, "propose")
    assert again["terms_version"] == 2
    assert _by_org(again)[str(world.bank.id)]["acceptance"] == "pending"
    assert _by_org(again)[str(world.bank.id)]["decline_reason"] is None

    entry = (
        await session.execute(
            select(AuditEntry).where(
                col(AuditEntry.subject_id) == cid, col(AuditEntry.action) == "campaign.declined"
            )
        )
    ).scalar_one()
    assert entry.org_id == world.bank.id
    assert entry.before == {"status": "proposed"}
    assert entry.after is not None and entry.after["status"] == "draft"
    assert entry.after["reason"] == "Cap too high"


async def test_pause_resume_and_end(client: Client, world: World, session: AsyncSession) -> None:
    session.add(
        WebhookEndpoint(
            org_id=world.cafe.id,
            url="http://127.0.0.1:9/hook",
            event_types=["campaign.ended"],
            secret="whsec_t",
        )
    )
    await session.commit()
    staff = Staff(client)
    owner = await staff(OWNER)
    cid = (await active_campaign(client, staff, world))["id"]

    paused = await campaign_action(client, owner, cid, "pause", {"reason": "Till outage"})
    assert paused["status"] == "paused" and paused["status_reason"] == "Till outage"
    twice = await _post(client, owner, cid, "pause")
    assert twice.status_code == 409 and twice.json()["code"] == "invalid_campaign_transition"
    not_the_owner = await _post(client, await staff(CAFE), cid, "resume")
    assert not_the_owner.status_code == 403
    assert not_the_owner.json()["code"] == "not_campaign_owner"
    resumed = await campaign_action(client, owner, cid, "resume")
    assert resumed["status"] == "active" and resumed["status_reason"] is None
    paused_again = await campaign_action(client, owner, cid, "pause")
    assert paused_again["status"] == "paused"

    ended = await campaign_action(client, owner, cid, "end")
    assert ended["status"] == "ended" and ended["ended_at"]
    for action in ("resume", "pause", "activate", "cancel", "end"):
        response = await _post(client, owner, cid, action)
        assert response.status_code == 409, action
    edit = await client.patch(f"/api/v1/campaigns/{cid}", json={"name": "x"}, headers=owner)
    assert edit.status_code == 409 and edit.json()["code"] == "campaign_not_editable"

    events = (
        await session.execute(
            select(col(WebhookDelivery.event_type)).where(
                col(WebhookDelivery.org_id) == world.cafe.id
            )
        )
    ).scalars()
    assert list(events) == ["campaign.ended"]
    actions = await _actions(session, cid)
    assert actions[-4:] == [
        "campaign.paused",
        "campaign.resumed",
        "campaign.paused",
        "campaign.ended",
    ]


async def test_cancel_only_before_the_campaign_runs(client: Client, world: World) -> None:
    staff = Staff(client)
    owner = await staff(OWNER)
    draft = await create_campaign(client, owner, campaign_body(world))
    cancelled = await campaign_action(client, owner, draft["id"], "cancel", {"reason": "Dup"})
    assert cancelled["status"] == "cancelled" and cancelled["status_reason"] == "Dup"
    assert (await _post(client, owner, draft["id"], "propose")).status_code == 409

    approved = await approved_campaign(client, staff, world)
    assert (await campaign_action(client, owner, approved["id"], "cancel"))["status"] == (
        "cancelled"
    )

    active = await active_campaign(client, staff, world)
    refused = await _post(client, owner, active["id"], "cancel")
    assert refused.status_code == 409
    assert refused.json()["code"] == "invalid_campaign_transition"


async def test_the_owner_activates_from_the_start_time_on(client: Client, world: World) -> None:
    staff = Staff(client)
    owner = await staff(OWNER)
    starts_at = utcnow() + timedelta(days=1)
    campaign = await approved_campaign(client, staff, world, starts_at=starts_at)
    early = await _post(client, owner, campaign["id"], "activate")
    assert early.status_code == 409
    assert early.json()["code"] == "campaign_not_started"
    assert datetime.fromisoformat(early.json()["starts_at"]) == starts_at
    draft = await create_campaign(client, owner, campaign_body(world))
    not_approved = await _post(client, owner, draft["id"], "activate")
    assert not_approved.status_code == 409
    assert not_approved.json()["code"] == "invalid_campaign_transition"


# --- the scheduler --------------------------------------------------------------------------


async def test_the_scheduler_starts_and_ends_campaigns(
    client: Client, world: World, session: AsyncSession
) -> None:
    staff = Staff(client)
    owner = await staff(OWNER)
    starts_at = utcnow() + timedelta(hours=1)
    ends_at = starts_at + timedelta(hours=2)
    campaign = await approved_campaign(client, staff, world, starts_at=starts_at, ends_at=ends_at)
    cid = campaign["id"]
    # approved but never activated by the end: the scheduler calls it off
    late = await approved_campaign(
        client, staff, world, starts_at=starts_at, ends_at=starts_at + timedelta(minutes=30)
    )

    assert await workflow.activate_due(session, utcnow()) == 0
    assert await workflow.activate_due(session, starts_at + timedelta(minutes=1)) == 2
    assert await workflow.activate_due(session, starts_at + timedelta(minutes=2)) == 0
    got = (await client.get(f"/api/v1/campaigns/{cid}", headers=owner)).json()
    assert got["status"] == "active"
    slots = (
        (await session.execute(select(ClaimSlot).where(col(ClaimSlot.campaign_id) == cid)))
        .scalars()
        .all()
    )
    assert len(slots) == 64 and sum(s.remaining_quantity for s in slots) == 1000

    await campaign_action(client, owner, cid, "pause")
    assert await workflow.end_due(session, ends_at - timedelta(minutes=1)) == 1  # `late` only
    assert await workflow.end_due(session, ends_at + timedelta(minutes=1)) == 1
    assert await workflow.end_due(session, ends_at + timedelta(minutes=2)) == 0
    got = (await client.get(f"/api/v1/campaigns/{cid}", headers=owner)).json()
    assert got["status"] == "ended" and got["status_reason"] == "The end time passed"
    entries = (
        await session.execute(
            select(AuditEntry).where(
                col(AuditEntry.subject_id) == cid, col(AuditEntry.action) == "campaign.ended"
            )
        )
    ).scalars()
    assert [(e.actor_kind, e.before) for e in entries] == [("system", {"status": "paused"})]
    late_now = (await client.get(f"/api/v1/campaigns/{late['id']}", headers=owner)).json()
    assert late_now["status"] == "ended"  # activated at the start, ended at its end

    # an approved campaign whose end passes before anyone starts it is cancelled
    third = await approved_campaign(
        client, staff, world, starts_at=starts_at, ends_at=starts_at + timedelta(minutes=10)
    )
    assert await workflow.end_due(session, starts_at + timedelta(minutes=11)) == 1
    third_now = (await client.get(f"/api/v1/campaigns/{third['id']}", headers=owner)).json()
    assert third_now["status"] == "cancelled"


async def test_scheduler_runs_never_start_a_campaign_twice(
    client: Client, world: World, sessionmaker: SessionMaker
) -> None:
    staff = Staff(client)
    starts_at = utcnow() + timedelta(hours=1)
    ids = [
        (await approved_campaign(client, staff, world, starts_at=starts_at))["id"] for _ in range(3)
    ]
    async with sessionmaker() as one, sessionmaker() as two:
        counts = await asyncio.gather(
            workflow.activate_due(one, starts_at), workflow.activate_due(two, starts_at)
        )
    assert sum(counts) == 3
    async with sessionmaker() as session:
        for cid in ids:
            assert await _actions(session, cid) == [
                "campaign.created",
                "campaign.proposed",
                "campaign.accepted",
                "campaign.accepted",
                "campaign.approved",
                "campaign.activated",
            ]
            slots = await session.execute(
                select(ClaimSlot).where(col(ClaimSlot.campaign_id) == cid)
            )
            assert sum(s.remaining_quantity for s in slots.scalars()) == 1000


async def test_the_cron_job_runs_the_schedule(
    client: Client, world: World, sessionmaker: SessionMaker
) -> None:
    assert "cron:start_and_end_campaigns" in [c.name for c in jobs.registry.cron_jobs]
    staff = Staff(client)
    campaign = await approved_campaign(client, staff, world)  # started an hour ago
    ctx: dict[str, Any] = {"sessionmaker": sessionmaker, "dispatcher": None}
    assert await jobs.start_and_end_campaigns(ctx) == {"activated": 1, "ended": 0}
    assert await jobs.start_and_end_campaigns(ctx) == {"activated": 0, "ended": 0}
    got = await client.get(f"/api/v1/campaigns/{campaign['id']}", headers=await staff(OWNER))
    assert got.json()["status"] == "active"


async def test_the_last_of_two_simultaneous_acceptances_approves_once(
    client: Client, world: World, session: AsyncSession
) -> None:
    staff = Staff(client)
    owner, cafe, bank = await staff(OWNER), await staff(CAFE), await staff(BANK)
    cid = (await create_campaign(client, owner, campaign_body(world)))["id"]
    await campaign_action(client, owner, cid, "propose")
    answers = await asyncio.gather(
        _post(client, cafe, cid, "accept", {"terms_version": 1}),
        _post(client, bank, cid, "accept", {"terms_version": 1}),
    )
    assert [a.status_code for a in answers] == [200, 200]
    assert "approved" in {a.json()["status"] for a in answers}
    assert (await _actions(session, cid)).count("campaign.approved") == 1


# --- checks on the draft --------------------------------------------------------------------


async def test_funding_shares_must_sum_to_10000(client: Client, world: World) -> None:
    owner = await Staff(client)(OWNER)
    body = campaign_body(world)
    body["participants"][0]["share_bp"] = 4999
    problem = await _create_problem(client, owner, body)
    assert problem["code"] == "validation_error"
    assert problem["field"] == "participants"
    assert "10000" in problem["detail"]


async def test_unsound_offers_are_refused_with_the_offer_field(
    client: Client, world: World
) -> None:
    owner = await Staff(client)(OWNER)
    no_cap = campaign_body(world, offer={"kind": "percent_off", "percent_bp": 1500})
    problem = await _create_problem(client, owner, no_cap)
    assert problem["field"] == "offer.cap"

    starts, ends = utcnow() - timedelta(hours=1), utcnow() + timedelta(days=3)
    outside = campaign_body(
        world,
        starts_at=starts,
        ends_at=ends,
        offer={
            "kind": "amount_off",
            "value": 500,
            "valid_from": starts.isoformat(),
            "valid_until": (ends + timedelta(days=1)).isoformat(),
        },
    )
    assert (await _create_problem(client, owner, outside))["field"] == "offer.valid_until"

    both = campaign_body(
        world,
        offer={
            "kind": "amount_off",
            "value": 500,
            "valid_days_after_claim": 3,
            "valid_until": ends.isoformat(),
        },
    )
    assert (await _create_problem(client, owner, both))["field"] == "offer.validity"

    windows = campaign_body(
        world,
        offer={
            "kind": "amount_off",
            "value": 500,
            "valid_days_after_claim": 3,
            "time_windows": [{"start": "10:00", "end": "10:00"}],
        },
    )
    assert (await _create_problem(client, owner, windows))["field"] == "offer.time_windows"

    bad_day = campaign_body(
        world,
        offer={"kind": "amount_off", "value": 500, "valid_days_after_claim": 3, "weekdays": [7]},
    )
    assert (await _create_problem(client, owner, bad_day))["field"].startswith("offer.weekdays")


async def test_request_shape_is_strict(client: Client, world: World) -> None:
    owner = await Staff(client)(OWNER)
    unknown = await _create_problem(client, owner, campaign_body(world, colour="red"))
    assert unknown["code"] == "validation_error" and unknown["field"] == "colour"
    nested = campaign_body(world)
    nested["offer"]["colour"] = "red"
    problem = await _create_problem(client, owner, nested)
    assert problem["field"].startswith("offer") and "colour" in problem["detail"]
    nested_store = campaign_body(world)
    nested_store["offer"]["store_ids"] = []  # stores are named once, on the campaign
    problem = await _create_problem(client, owner, nested_store)
    assert problem["field"].startswith("offer") and "store_ids" in problem["detail"]
    naive = campaign_body(world)
    naive["starts_at"] = "2030-01-01T00:00:00"
    assert (await _create_problem(client, owner, naive))["field"] == "starts_at"
    prefix = campaign_body(world, code_prefix="c1")
    assert (await _create_problem(client, owner, prefix))["field"] == "code_prefix"
    zone = campaign_body(world, timezone="Mars/Olympus")
    assert (await _create_problem(client, owner, zone))["field"] == "timezone"
    backwards = campaign_body(
        world, starts_at=utcnow() + timedelta(days=2), ends_at=utcnow() + timedelta(days=1)
    )
    assert (await _create_problem(client, owner, backwards))["field"] == "ends_at"
    over = campaign_body(
        world, starts_at=utcnow() - timedelta(days=2), ends_at=utcnow() - timedelta(days=1)
    )
    assert (await _create_problem(client, owner, over))["field"] == "ends_at"
    audience = campaign_body(world, audience={"kind": "open", "min_tier": 3})
    assert (await _create_problem(client, owner, audience))["field"] == "audience.min_tier"
    tiers = campaign_body(world, audience={"kind": "segment", "min_tier": 5, "max_tier": 2})
    assert (await _create_problem(client, owner, tiers))["field"] == "audience.max_tier"
    limits = campaign_body(world, per_customer_limit=1, per_customer_daily_limit=2)
    assert (await _create_problem(client, owner, limits))["field"] == "per_customer_daily_limit"


async def test_budgets_caps_and_participants(
    client: Client, world: World, session: AsyncSession
) -> None:
    owner = await Staff(client)(OWNER)
    small = campaign_body(world, total_budget=1_999)  # less than one coupon's 20.00 off
    assert (await _create_problem(client, owner, small))["field"] == "total_budget"

    body = campaign_body(world)
    body["participants"][1]["budget_cap"] = 599  # the café's part of one coupon is 600
    assert (await _create_problem(client, owner, body))["field"] == "participants[1].budget_cap"

    body = campaign_body(world)
    body["participants"][1]["budget_cap"] = 0
    assert (await _create_problem(client, owner, body))["field"] == "participants[1].budget_cap"

    without_owner = campaign_body(
        world,
        participants=[
            {"org_id": str(world.cafe.id), "share_bp": 5000},
            {"org_id": str(world.bank.id), "share_bp": 5000},
        ],
    )
    assert (await _create_problem(client, owner, without_owner))["field"] == "participants"

    twice = campaign_body(
        world,
        participants=[
            {"org_id": str(world.carrier.id), "share_bp": 5000},
            {"org_id": str(world.carrier.id), "share_bp": 5000},
        ],
    )
    assert (await _create_problem(client, owner, twice))["field"] == "participants"

    suspended = await add_merchant(session, "gone", status="suspended")
    body = campaign_body(world)
    body["participants"].append({"org_id": str(suspended.id), "share_bp": 0})
    problem = await _create_problem(client, owner, body)
    assert problem["field"] == "participants[3].org_id"

    # the owner may fund nothing at all
    zero = campaign_body(
        world,
        participants=[
            {"org_id": str(world.carrier.id), "share_bp": 0},
            {"org_id": str(world.cafe.id), "share_bp": 10_000},
        ],
    )
    created = await create_campaign(client, owner, zero)
    assert [p["share_bp"] for p in created["participants"]] == [0, 10_000]


async def test_redeemable_stores_belong_to_participants(
    client: Client, world: World, session: AsyncSession
) -> None:
    owner = await Staff(client)(OWNER)
    cafe_store = await add_store(session, world.cafe.id, "Café Nanjing Road")
    closed = await add_store(session, world.cafe.id, "Old café", status="archived")
    outsider = await add_merchant(session, "edu")
    other = await add_store(session, outsider.id, "School")

    for store, index in ((other, 1), (closed, 1)):
        body = campaign_body(world, store_ids=[str(cafe_store.id), str(store.id)])
        assert (await _create_problem(client, owner, body))["field"] == f"store_ids[{index}]"

    created = await create_campaign(
        client, owner, campaign_body(world, store_ids=[str(cafe_store.id)])
    )
    assert created["store_ids"] == [str(cafe_store.id)]
    assert created["offer"]["store_ids"] == [str(cafe_store.id)]
    rows = (
        await session.execute(
            select(col(CampaignStore.store_id)).where(
                col(CampaignStore.campaign_id) == created["id"]
            )
        )
    ).scalars()
    assert list(rows) == [cafe_store.id]

    # dropping the café from the participants leaves its store unredeemable: refused
    patched = await client.patch(
        f"/api/v1/campaigns/{created['id']}",
        json={
            "participants": [
                {"org_id": str(world.carrier.id), "share_bp": 6000},
                {"org_id": str(world.bank.id), "share_bp": 4000},
            ]
        },
        headers=owner,
    )
    assert patched.status_code == 422 and patched.json()["field"] == "store_ids[0]"
    cleared = await client.patch(
        f"/api/v1/campaigns/{created['id']}", json={"store_ids": []}, headers=owner
    )
    assert cleared.status_code == 200 and cleared.json()["store_ids"] == []
    assert cleared.json()["offer"]["store_ids"] is None


# --- roles and tenancy ----------------------------------------------------------------------


async def test_only_admins_and_marketing_draft_campaigns(client: Client, world: World) -> None:
    staff = Staff(client)
    for email in ("cashier@carrier.test", "finance@carrier.test", "cashier@cafe.test"):
        response = await client.post(
            "/api/v1/campaigns", json=campaign_body(world), headers=await staff(email)
        )
        assert response.status_code == 403, email
    admin = await create_campaign(client, await staff("admin@carrier.test"), campaign_body(world))
    assert admin["status"] == "draft"


async def test_campaigns_of_other_organizations_are_not_found(
    client: Client, world: World, session: AsyncSession
) -> None:
    await add_merchant(session, "edu")
    staff = Staff(client)
    cafe, edu, carrier = await staff(CAFE), await staff("marketing@edu.test"), await staff(OWNER)
    # a campaign of the café and the bank, without the carrier
    body = campaign_body(
        world,
        participants=[
            {"org_id": str(world.cafe.id), "share_bp": 7000},
            {"org_id": str(world.bank.id), "share_bp": 3000},
        ],
    )
    campaign = await create_campaign(client, cafe, body)
    cid = campaign["id"]
    assert campaign["owner_org_id"] == str(world.cafe.id)
    proposed = await campaign_action(client, cafe, cid, "propose")
    assert proposed["terms_version"] == 1

    for path in (f"/api/v1/campaigns/{cid}", f"/api/v1/campaigns/{cid}/terms/1"):
        response = await client.get(path, headers=edu)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"
    for action, payload in (
        ("accept", {"terms_version": 1}),
        ("decline", {"reason": "no"}),
        ("propose", None),
        ("cancel", None),
    ):
        response = await _post(client, edu, cid, action, payload)
        assert response.status_code == 404, action
    edit = await client.patch(f"/api/v1/campaigns/{cid}", json={"name": "x"}, headers=edu)
    assert edit.status_code == 404
    assert (await client.get("/api/v1/campaigns", headers=edu)).json()["total"] == 0

    # carrier staff read every campaign but answer only for their own organization
    assert (await client.get(f"/api/v1/campaigns/{cid}", headers=carrier)).status_code == 200
    assert [
        c["id"] for c in (await client.get("/api/v1/campaigns", headers=carrier)).json()["items"]
    ] == [cid]
    not_theirs = await _post(client, carrier, cid, "accept", {"terms_version": 1})
    assert not_theirs.status_code == 403 and not_theirs.json()["code"] == "not_a_participant"
    not_owner = await _post(client, carrier, cid, "cancel")
    assert not_owner.status_code == 403 and not_owner.json()["code"] == "not_campaign_owner"

    # a participant reads it, answers it, but does not run it
    bank = await staff(BANK)
    assert (await client.get(f"/api/v1/campaigns/{cid}", headers=bank)).status_code == 200
    for action in ("propose", "activate", "pause", "end", "cancel"):
        response = await _post(client, bank, cid, action)
        assert response.status_code == 403, action
    patch = await client.patch(f"/api/v1/campaigns/{cid}", json={"name": "x"}, headers=bank)
    assert patch.status_code == 403
    approved = await campaign_action(client, bank, cid, "accept", {"terms_version": 1})
    assert approved["status"] == "approved"
