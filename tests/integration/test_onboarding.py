"""Partner onboarding: invitation links, applications, approval, suspension, profile, audit."""

from __future__ import annotations

from datetime import timedelta

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import Invitation, Organization, WebhookDelivery, WebhookEndpoint
from coalition.platform.audit import AuditEntry
from coalition.platform.db import utcnow
from tests.integration.conftest import World, auth_headers, login

Client = AsyncTestClient[Litestar]
NEW_PASSWORD = "a long new password 42"

INVITE = {
    "name": "Sunrise Books 日出书店",
    "industry": "retail",
    "cities": ["Shanghai", "Hangzhou"],
    "contact_name": "Wang Fang",
    "contact_email": "Owner@Sunrise.test",
}


async def _invite(client: Client, body: dict[str, object] | None = None) -> dict[str, object]:
    carrier = await auth_headers(client, "admin@carrier.test")
    response = await client.post(
        "/api/v1/organizations/invitations", json=body or INVITE, headers=carrier
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_invitation_creates_an_invited_org_and_activates_on_accept(
    client: Client, world: World, session: AsyncSession
) -> None:
    session.add(
        WebhookEndpoint(
            org_id=world.carrier.id,
            url="http://127.0.0.1:9/hook",
            event_types=["organization.activated"],
            secret="whsec_test",
        )
    )
    await session.commit()
    invited = await _invite(client)
    org = invited["organization"]
    assert org["status"] == "invited" and org["cities"] == ["Shanghai", "Hangzhou"]
    assert invited["invite_url"].endswith(invited["invite_token"])

    # nobody can sign in before the invitation is accepted
    early = await client.post(
        "/api/v1/auth/login", json={"email": "owner@sunrise.test", "password": NEW_PASSWORD}
    )
    assert early.status_code == 401

    accepted = await client.post(
        "/api/v1/invitations/accept",
        json={"token": invited["invite_token"], "password": NEW_PASSWORD},
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["organization"]["status"] == "active"
    assert accepted.json()["user"]["role"] == "admin"

    tokens = await login(client, "owner@sunrise.test", NEW_PASSWORD)
    me = await client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["organization"]["name"] == INVITE["name"]

    deliveries = (await session.execute(select(WebhookDelivery))).scalars().all()
    assert [d.event_type for d in deliveries] == ["organization.activated"]
    assert deliveries[0].payload["data"]["organization"]["id"] == org["id"]
    actions = (
        (
            await session.execute(
                select(AuditEntry.action).where(col(AuditEntry.org_id) == org["id"])
            )
        )
        .scalars()
        .all()
    )
    assert {"organization.invited", "user.activated", "organization.activated"} <= set(actions)


async def test_invitation_links_are_one_time(client: Client, world: World) -> None:
    invited = await _invite(client)
    body = {"token": invited["invite_token"], "password": NEW_PASSWORD}
    assert (await client.post("/api/v1/invitations/accept", json=body)).status_code == 200
    reuse = await client.post(
        "/api/v1/invitations/accept", json={**body, "password": "another password 1"}
    )
    assert reuse.status_code == 404
    assert reuse.json()["code"] == "invitation_invalid"
    # the second attempt changed nothing: the first password still works
    await login(client, "owner@sunrise.test", NEW_PASSWORD)


async def test_invitation_links_expire(client: Client, world: World, session: AsyncSession) -> None:
    invited = await _invite(client)
    await session.execute(update(Invitation).values(expires_at=utcnow() - timedelta(seconds=1)))
    await session.commit()
    response = await client.post(
        "/api/v1/invitations/accept",
        json={"token": invited["invite_token"], "password": NEW_PASSWORD},
    )
    assert response.status_code == 410
    assert response.json()["code"] == "invitation_expired"
    org = await session.get_one(Organization, invited["organization"]["id"])  # type: ignore[arg-type]
    await session.refresh(org)
    assert org.status == "invited"


async def test_only_carrier_marketing_or_admin_invites(client: Client, world: World) -> None:
    for email in ("admin@cafe.test", "finance@carrier.test", "cashier@carrier.test"):
        headers = await auth_headers(client, email)
        response = await client.post(
            "/api/v1/organizations/invitations", json=INVITE, headers=headers
        )
        assert response.status_code == 403, email
    marketing = await auth_headers(client, "marketing@carrier.test")
    ok = await client.post("/api/v1/organizations/invitations", json=INVITE, headers=marketing)
    assert ok.status_code == 201


async def test_invite_validation_names_the_field(client: Client, world: World) -> None:
    carrier = await auth_headers(client, "admin@carrier.test")
    for body, field in (
        ({**INVITE, "industry": "casino"}, "industry"),
        ({**INVITE, "contact_email": "nope"}, "contact_email"),
        ({**INVITE, "cities": "Shanghai"}, "cities"),
        ({**INVITE, "status": "active"}, "status"),
    ):
        response = await client.post(
            "/api/v1/organizations/invitations", json=body, headers=carrier
        )
        assert response.status_code == 422, body
        assert response.json()["field"] == field
    taken = await client.post(
        "/api/v1/organizations/invitations",
        json={**INVITE, "contact_email": "admin@cafe.test"},
        headers=carrier,
    )
    assert taken.status_code == 409 and taken.json()["field"] == "email"


APPLICATION = {
    "name": "Lotus Travel 莲花旅行",
    "industry": "travel",
    "cities": ["Guangzhou"],
    "contact_name": "Li Na",
    "contact_email": "li@lotus.test",
    "password": "lotus password 2026",
}


async def test_application_is_approved_by_a_carrier_admin(
    client: Client, world: World, session: AsyncSession
) -> None:
    applied = await client.post("/api/v1/organizations/applications", json=APPLICATION)
    assert applied.status_code == 201, applied.text
    org_id = applied.json()["id"]
    assert applied.json()["status"] == "pending"

    pending = await client.post(
        "/api/v1/auth/login", json={"email": "li@lotus.test", "password": APPLICATION["password"]}
    )
    assert pending.status_code == 403 and pending.json()["code"] == "organization_inactive"

    marketing = await auth_headers(client, "marketing@carrier.test")
    assert (
        await client.post(f"/api/v1/organizations/{org_id}/approve", headers=marketing)
    ).status_code == 403

    admin = await auth_headers(client, "admin@carrier.test")
    approved = await client.post(f"/api/v1/organizations/{org_id}/approve", headers=admin)
    assert approved.status_code == 200 and approved.json()["status"] == "active"
    await login(client, "li@lotus.test", str(APPLICATION["password"]))

    again = await client.post(f"/api/v1/organizations/{org_id}/approve", headers=admin)
    assert again.status_code == 409 and again.json()["code"] == "invalid_status_transition"


async def test_application_can_be_rejected_with_a_reason(client: Client, world: World) -> None:
    applied = await client.post("/api/v1/organizations/applications", json=APPLICATION)
    org_id = applied.json()["id"]
    admin = await auth_headers(client, "admin@carrier.test")
    no_reason = await client.post(f"/api/v1/organizations/{org_id}/reject", json={}, headers=admin)
    assert no_reason.status_code == 422 and no_reason.json()["field"] == "reason"
    rejected = await client.post(
        f"/api/v1/organizations/{org_id}/reject",
        json={"reason": "duplicate of an existing partner"},
        headers=admin,
    )
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["status_reason"] == "duplicate of an existing partner"


async def test_suspension_stops_users_at_once_and_keeps_the_data(
    client: Client, world: World
) -> None:
    cafe_admin = await auth_headers(client, "admin@cafe.test")
    assert (await client.get("/api/v1/me", headers=cafe_admin)).status_code == 200
    refresh = (await login(client, "finance@cafe.test"))["refresh_token"]

    admin = await auth_headers(client, "admin@carrier.test")
    suspended = await client.post(
        f"/api/v1/organizations/{world.cafe.id}/suspend",
        json={"reason": "unpaid fees"},
        headers=admin,
    )
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"

    blocked = await client.get("/api/v1/me", headers=cafe_admin)
    assert blocked.status_code == 403 and blocked.json()["code"] == "organization_inactive"
    assert (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
    ).status_code == 401
    login_now = await client.post(
        "/api/v1/auth/login",
        json={"email": "cashier@cafe.test", "password": "correct horse battery staple"},
    )
    assert login_now.status_code == 403

    # the data is still there for the carrier, and reinstating brings the users back
    seen = await client.get(f"/api/v1/organizations/{world.cafe.id}/users", headers=admin)
    assert seen.status_code == 200 and seen.json()["total"] == 4
    back = await client.post(f"/api/v1/organizations/{world.cafe.id}/reinstate", headers=admin)
    assert back.status_code == 200 and back.json()["status"] == "active"
    assert (
        await client.get("/api/v1/me", headers=await auth_headers(client, "admin@cafe.test"))
    ).status_code == 200


async def test_the_carrier_cannot_be_suspended(client: Client, world: World) -> None:
    admin = await auth_headers(client, "admin@carrier.test")
    response = await client.post(
        f"/api/v1/organizations/{world.carrier.id}/suspend", json={"reason": "x"}, headers=admin
    )
    assert response.status_code == 403


async def test_profile_update_is_audited_and_scoped(
    client: Client, world: World, session: AsyncSession
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    patch = {
        "legal_name": "Bean There Coffee Co., Ltd.",
        "cities": ["Beijing"],
        "logo_url": "https://cdn.example/bean.png",
        "settlement_currency": "CNY",
        "payout_details": {"bank": "ICBC", "account_last4": "4321"},
        "timezone": "Asia/Shanghai",
    }
    response = await client.patch(
        f"/api/v1/organizations/{world.cafe.id}", json=patch, headers=admin
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["legal_name"] == patch["legal_name"] and body["cities"] == ["Beijing"]
    assert body["payout_details"] == patch["payout_details"]
    assert body["stripe_onboarding_status"] == "not_started"

    entry = (
        (
            await session.execute(
                select(AuditEntry).where(col(AuditEntry.action) == "organization.profile_updated")
            )
        )
        .scalars()
        .one()
    )
    assert entry.before == {
        "legal_name": None,
        "cities": [],
        "logo_url": None,
        "settlement_currency": "CNY",
        "payout_details": {},
        "timezone": "Asia/Shanghai",
    }
    assert entry.after is not None and entry.after["cities"] == ["Beijing"]
    assert entry.request_id == response.headers["x-request-id"]

    # merchants cannot set the Stripe fields, nor touch another org, nor use a bad time zone
    stripe = await client.patch(
        f"/api/v1/organizations/{world.cafe.id}",
        json={"stripe_account_id": "acct_123456789"},
        headers=admin,
    )
    assert stripe.status_code == 403
    other = await client.patch(
        f"/api/v1/organizations/{world.bank.id}", json={"cities": ["X"]}, headers=admin
    )
    assert other.status_code == 404
    bad_zone = await client.patch(
        f"/api/v1/organizations/{world.cafe.id}", json={"timezone": "Mars/Olympus"}, headers=admin
    )
    assert bad_zone.status_code == 422 and bad_zone.json()["field"] == "timezone"
    carrier = await auth_headers(client, "admin@carrier.test")
    set_stripe = await client.patch(
        f"/api/v1/organizations/{world.cafe.id}",
        json={"stripe_account_id": "acct_1AbCdEfGh", "stripe_onboarding_status": "pending"},
        headers=carrier,
    )
    assert (
        set_stripe.status_code == 200 and set_stripe.json()["stripe_account_id"] == "acct_1AbCdEfGh"
    )
