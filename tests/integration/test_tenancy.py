"""Tenant isolation (404 for other organizations' rows) and role guards (403)."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.integration.conftest import World, auth_headers

Client = AsyncTestClient[Litestar]


async def test_merchant_sees_only_its_own_organization(client: Client, world: World) -> None:
    headers = await auth_headers(client, "admin@cafe.test")
    listed = await client.get("/api/v1/organizations", headers=headers)
    assert listed.status_code == 200
    assert [o["id"] for o in listed.json()["items"]] == [str(world.cafe.id)]
    assert listed.json()["total"] == 1

    own = await client.get(f"/api/v1/organizations/{world.cafe.id}", headers=headers)
    assert own.status_code == 200


async def test_other_tenants_rows_answer_404_everywhere(client: Client, world: World) -> None:
    bank_user = world.users["bank_admin"]
    for email in (
        "admin@cafe.test",
        "marketing@cafe.test",
        "finance@cafe.test",
        "cashier@cafe.test",
    ):
        headers = await auth_headers(client, email)
        for path in (
            f"/api/v1/organizations/{world.bank.id}",
            f"/api/v1/organizations/{world.carrier.id}",
        ):
            response = await client.get(path, headers=headers)
            assert response.status_code == 404, (email, path, response.text)
            assert response.json()["code"] == "not_found"
    admin = await auth_headers(client, "admin@cafe.test")
    for path in (f"/api/v1/organizations/{world.bank.id}/users", f"/api/v1/users/{bank_user.id}"):
        response = await client.get(path, headers=admin)
        assert response.status_code == 404, path


async def test_404_for_other_tenant_looks_like_404_for_nothing(
    client: Client, world: World
) -> None:
    headers = await auth_headers(client, "admin@cafe.test")
    other = await client.get(f"/api/v1/users/{world.users['bank_admin'].id}", headers=headers)
    missing = await client.get(
        "/api/v1/users/00000000-0000-0000-0000-000000000000", headers=headers
    )
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"] == missing.json()["detail"]


async def test_role_guard_is_403(client: Client, world: World) -> None:
    for email in ("cashier@cafe.test", "finance@cafe.test", "marketing@cafe.test"):
        headers = await auth_headers(client, email)
        response = await client.get(f"/api/v1/organizations/{world.cafe.id}/users", headers=headers)
        assert response.status_code == 403, email
        assert response.json()["code"] == "forbidden"


async def test_admin_lists_own_staff(client: Client, world: World) -> None:
    headers = await auth_headers(client, "admin@cafe.test")
    response = await client.get(f"/api/v1/organizations/{world.cafe.id}/users", headers=headers)
    assert response.status_code == 200
    emails = sorted(u["email"] for u in response.json()["items"])
    assert emails == sorted(f"{r}@cafe.test" for r in ("admin", "marketing", "finance", "cashier"))


async def test_carrier_staff_see_every_tenant(client: Client, world: World) -> None:
    headers = await auth_headers(client, "admin@carrier.test")
    listed = await client.get("/api/v1/organizations", headers=headers)
    assert {o["id"] for o in listed.json()["items"]} == {
        str(world.carrier.id),
        str(world.cafe.id),
        str(world.bank.id),
    }
    bank_staff = await client.get(f"/api/v1/organizations/{world.bank.id}/users", headers=headers)
    assert bank_staff.status_code == 200
    # a carrier cashier is scoped to the carrier like any merchant user
    cashier = await auth_headers(client, "cashier@carrier.test")
    response = await client.get(f"/api/v1/organizations/{world.bank.id}", headers=cashier)
    assert response.status_code == 404


async def test_pagination_is_capped(client: Client, world: World) -> None:
    headers = await auth_headers(client, "admin@carrier.test")
    page = await client.get("/api/v1/organizations?limit=2&offset=1", headers=headers)
    assert page.status_code == 200
    assert page.json()["limit"] == 2 and page.json()["total"] == 3
    assert len(page.json()["items"]) == 2
    too_big = await client.get("/api/v1/organizations?limit=5000", headers=headers)
    assert too_big.status_code in (400, 422)
    assert too_big.json()["code"] == "validation_error"
    assert too_big.json()["field"] == "limit"
