"""Staff management: invite with a role, change roles, deactivate; the last admin stays."""

from __future__ import annotations

import asyncio

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import User
from coalition.platform.audit import AuditEntry
from tests.integration.conftest import World, auth_headers, login

Client = AsyncTestClient[Litestar]


async def test_admin_invites_staff_who_accept_and_sign_in(client: Client, world: World) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    invited = await client.post(
        f"/api/v1/organizations/{world.cafe.id}/users",
        json={"email": "barista@cafe.test", "display_name": "Barista Xu", "role": "cashier"},
        headers=admin,
    )
    assert invited.status_code == 201, invited.text
    assert invited.json()["user"]["status"] == "invited"
    accepted = await client.post(
        "/api/v1/invitations/accept",
        json={"token": invited.json()["invite_token"], "password": "barista password 1"},
    )
    assert accepted.status_code == 200
    assert accepted.json()["user"]["status"] == "active"
    await login(client, "barista@cafe.test", "barista password 1")


async def test_non_admins_cannot_manage_staff(client: Client, world: World) -> None:
    for email in ("marketing@cafe.test", "finance@cafe.test", "cashier@cafe.test"):
        headers = await auth_headers(client, email)
        response = await client.post(
            f"/api/v1/organizations/{world.cafe.id}/users",
            json={"email": "x@cafe.test", "display_name": "X", "role": "admin"},
            headers=headers,
        )
        assert response.status_code == 403, email


async def test_staff_of_other_orgs_is_404(client: Client, world: World) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    bank_cashier = world.users["bank_cashier"].id
    for method, path, body in (
        ("get", f"/api/v1/organizations/{world.bank.id}/users", None),
        (
            "post",
            f"/api/v1/organizations/{world.bank.id}/users",
            {"email": "y@bank.test", "display_name": "Y", "role": "cashier"},
        ),
        ("get", f"/api/v1/users/{bank_cashier}", None),
        ("post", f"/api/v1/users/{bank_cashier}/role", {"role": "finance"}),
        ("post", f"/api/v1/users/{bank_cashier}/deactivate", None),
    ):
        response = await getattr(client, method)(
            path, headers=admin, **({"json": body} if body else {})
        )
        assert response.status_code == 404, (method, path, response.text)


async def test_role_change_is_audited(client: Client, world: World, session: AsyncSession) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    cashier = world.users["cafe_cashier"]
    response = await client.post(
        f"/api/v1/users/{cashier.id}/role", json={"role": "finance"}, headers=admin
    )
    assert response.status_code == 200 and response.json()["role"] == "finance"
    entry = (
        (await session.execute(select(AuditEntry).where(col(AuditEntry.subject_id) == cashier.id)))
        .scalars()
        .one()
    )
    assert (entry.action, entry.before, entry.after) == (
        "user.role_changed",
        {"role": "cashier"},
        {"role": "finance"},
    )
    assert entry.actor_id == world.users["cafe_admin"].id
    bad = await client.post(
        f"/api/v1/users/{cashier.id}/role", json={"role": "owner"}, headers=admin
    )
    assert bad.status_code == 422 and bad.json()["field"] == "role"


async def test_nobody_raises_their_own_role(
    client: Client, world: World, session: AsyncSession
) -> None:
    cashier = world.users["cafe_cashier"]
    own = await auth_headers(client, "cashier@cafe.test")
    climb = await client.post(
        f"/api/v1/users/{cashier.id}/role", json={"role": "admin"}, headers=own
    )
    assert climb.status_code == 403

    # an admin who steps down (another admin exists) cannot climb back with the same token:
    # roles are read on every request, not trusted from the token
    admin = await auth_headers(client, "admin@cafe.test")
    me = world.users["cafe_admin"]
    promote = await client.post(
        f"/api/v1/users/{world.users['cafe_marketing'].id}/role",
        json={"role": "admin"},
        headers=admin,
    )
    assert promote.status_code == 200
    down = await client.post(f"/api/v1/users/{me.id}/role", json={"role": "finance"}, headers=admin)
    assert down.status_code == 200
    back = await client.post(f"/api/v1/users/{me.id}/role", json={"role": "admin"}, headers=admin)
    assert back.status_code == 403
    user = await session.get_one(User, me.id)
    await session.refresh(user)
    assert user.role == "finance"


async def test_the_last_admin_stays(client: Client, world: World) -> None:
    admin = await auth_headers(client, "admin@bank.test")
    me = world.users["bank_admin"].id
    demote = await client.post(f"/api/v1/users/{me}/role", json={"role": "finance"}, headers=admin)
    assert demote.status_code == 409 and demote.json()["code"] == "last_admin"
    deactivate = await client.post(f"/api/v1/users/{me}/deactivate", headers=admin)
    assert deactivate.status_code == 409 and deactivate.json()["code"] == "last_admin"
    assert (await client.get("/api/v1/me", headers=admin)).status_code == 200


async def test_two_admins_demoting_each_other_at_once_leave_one(
    client: Client, world: World, session: AsyncSession
) -> None:
    admin = await auth_headers(client, "admin@bank.test")
    second = world.users["bank_finance"].id
    assert (
        await client.post(f"/api/v1/users/{second}/role", json={"role": "admin"}, headers=admin)
    ).status_code == 200
    other = await auth_headers(client, "finance@bank.test")
    first = world.users["bank_admin"].id
    results = await asyncio.gather(
        client.post(f"/api/v1/users/{second}/deactivate", headers=admin),
        client.post(f"/api/v1/users/{first}/deactivate", headers=other),
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses in ([200, 403], [200, 409], [200, 401]), [r.text for r in results]
    admins = (
        (
            await session.execute(
                select(User).where(
                    col(User.org_id) == world.bank.id,
                    col(User.role) == "admin",
                    col(User.status) == "active",
                )
            )
        )
        .scalars()
        .all()
    )
    assert len(admins) == 1


async def test_deactivated_user_is_out_at_once(client: Client, world: World) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    cashier_tokens = await login(client, "cashier@cafe.test")
    headers = {"Authorization": f"Bearer {cashier_tokens['access_token']}"}
    response = await client.post(
        f"/api/v1/users/{world.users['cafe_cashier'].id}/deactivate", headers=admin
    )
    assert response.status_code == 200 and response.json()["status"] == "deactivated"
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 401
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": cashier_tokens["refresh_token"]}
    )
    assert refresh.status_code == 401
