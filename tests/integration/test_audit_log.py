"""The audit log: readable by an org's admins for their org, and all of it by carrier admins."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.integration.conftest import World, auth_headers

Client = AsyncTestClient[Litestar]


async def test_admins_read_their_own_org_and_carrier_admins_read_all(
    client: Client, world: World
) -> None:
    cafe_admin = await auth_headers(client, "admin@cafe.test")
    bank_admin = await auth_headers(client, "admin@bank.test")
    await client.post(
        f"/api/v1/users/{world.users['cafe_cashier'].id}/role",
        json={"role": "finance"},
        headers=cafe_admin,
    )
    await client.post(
        f"/api/v1/users/{world.users['bank_cashier'].id}/deactivate", headers=bank_admin
    )

    cafe_log = (await client.get("/api/v1/audit-log", headers=cafe_admin)).json()
    assert [e["action"] for e in cafe_log["items"]] == ["user.role_changed"]
    assert cafe_log["items"][0]["subject_id"] == str(world.users["cafe_cashier"].id)
    # asking for another org's entries yields nothing, never its rows
    peek = (
        await client.get(f"/api/v1/audit-log?org_id={world.bank.id}", headers=cafe_admin)
    ).json()
    assert peek["items"] == [] and peek["total"] == 0

    carrier = await auth_headers(client, "admin@carrier.test")
    everything = (await client.get("/api/v1/audit-log", headers=carrier)).json()
    assert {e["action"] for e in everything["items"]} == {"user.role_changed", "user.deactivated"}
    filtered = (
        await client.get("/api/v1/audit-log?action=user.deactivated", headers=carrier)
    ).json()
    assert [e["org_id"] for e in filtered["items"]] == [str(world.bank.id)]
    assert filtered["items"][0]["before"] == {"status": "active"}


async def test_only_admins_read_the_audit_log(client: Client, world: World) -> None:
    for email in ("marketing@cafe.test", "finance@carrier.test", "cashier@bank.test"):
        response = await client.get("/api/v1/audit-log", headers=await auth_headers(client, email))
        assert response.status_code == 403, email
