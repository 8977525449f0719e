"""API keys: issued once to an organization's admins, authenticate server-to-server calls, are
limited by scopes, revoked at once, audited, and invisible to other organizations."""

from __future__ import annotations

import hashlib
import json

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import ApiKey
from coalition.merchants.services.api_keys import API_KEY_SCOPES, scope_guard
from coalition.platform.audit import AuditEntry
from tests.integration.conftest import World, auth_headers

Client = AsyncTestClient[Litestar]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def issue(
    client: Client, headers: dict[str, str], org_id: object, scopes: list[str], name: str = "k"
) -> dict[str, object]:
    response = await client.post(
        f"/api/v1/organizations/{org_id}/api-keys",
        json={"name": name, "scopes": scopes},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def audit_entries(session: AsyncSession, action: str) -> list[AuditEntry]:
    rows = await session.execute(
        select(AuditEntry).where(col(AuditEntry.action) == action).order_by(col(AuditEntry.at))
    )
    return list(rows.scalars())


async def test_issued_key_is_shown_once_and_authenticates(
    client: Client, world: World, session: AsyncSession
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    issued = await issue(
        client,
        admin,
        world.cafe.id,
        ["redemptions:write", "campaigns:read", "redemptions:write"],
        name="POS bridge",
    )
    key = str(issued["key"])
    api_key = issued["api_key"]
    assert isinstance(api_key, dict)
    assert key.startswith("cak_")
    assert api_key["scopes"] == ["campaigns:read", "redemptions:write"]
    assert api_key["org_id"] == str(world.cafe.id)
    assert api_key["created_by"] == str(world.users["cafe_admin"].id)
    assert api_key["revoked_at"] is None and api_key["last_used_at"] is None
    assert str(api_key["key_hint"]).endswith("_...")
    assert key.startswith(str(api_key["key_hint"])[:-3])

    current = await client.get("/api/v1/api-keys/current", headers=bearer(key))
    assert current.status_code == 200, current.text
    assert current.json() == {
        "id": api_key["id"],
        "name": "POS bridge",
        "key_hint": api_key["key_hint"],
        "scopes": ["campaigns:read", "redemptions:write"],
        "org_id": str(world.cafe.id),
        "org_name": world.cafe.name,
        "org_kind": "merchant",
    }

    # Never shown again: not in the list, not in the single read, not in the database.
    listed = await client.get(f"/api/v1/organizations/{world.cafe.id}/api-keys", headers=admin)
    assert listed.status_code == 200
    assert listed.json()["total"] == 1
    item = listed.json()["items"][0]
    assert "key" not in item and key not in listed.text
    assert item["last_used_at"] is not None  # the call above was recorded
    single = await client.get(f"/api/v1/api-keys/{api_key['id']}", headers=admin)
    assert single.status_code == 200 and key not in single.text
    row = (await session.execute(select(ApiKey))).scalars().one()
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in json.dumps(row.model_dump(mode="json"))

    # A user's token is not an API key.
    assert (await client.get("/api/v1/api-keys/current", headers=admin)).status_code == 403

    (entry,) = await audit_entries(session, "api_key.issued")
    assert entry.org_id == world.cafe.id and entry.actor_id == world.users["cafe_admin"].id
    assert entry.after is not None and entry.after["scopes"] == api_key["scopes"]
    assert key not in json.dumps(entry.after)


async def test_revoked_key_stops_working_at_once(
    client: Client, world: World, session: AsyncSession
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    issued = await issue(client, admin, world.cafe.id, ["campaigns:read"])
    key, key_id = str(issued["key"]), issued["api_key"]["id"]  # type: ignore[index]
    assert (await client.get("/api/v1/api-keys/current", headers=bearer(key))).status_code == 200

    revoked = await client.post(f"/api/v1/api-keys/{key_id}/revoke", headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None

    refused = await client.get("/api/v1/api-keys/current", headers=bearer(key))
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_token"

    again = await client.post(f"/api/v1/api-keys/{key_id}/revoke", headers=admin)
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    (entry,) = await audit_entries(session, "api_key.revoked")
    assert str(entry.subject_id) == key_id
    assert key not in json.dumps([entry.before, entry.after])


async def test_unknown_scope_is_a_422_naming_the_field(client: Client, world: World) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    path = f"/api/v1/organizations/{world.cafe.id}/api-keys"

    unknown = await client.post(
        path, json={"name": "k", "scopes": ["campaigns:read", "coupons:delete"]}, headers=admin
    )
    assert unknown.status_code == 422
    body = unknown.json()
    assert body["code"] == "validation_error" and body["field"] == "scopes"
    assert body["errors"][0]["field"] == "scopes[1]"
    assert "coupons:delete" in body["detail"]

    for payload, field in (
        ({"name": "k", "scopes": []}, "scopes"),
        ({"scopes": ["campaigns:read"]}, "name"),
        ({"name": "k", "scopes": ["campaigns:read"], "owner": "me"}, "owner"),
    ):
        response = await client.post(path, json=payload, headers=admin)
        assert response.status_code == 422, payload
        assert response.json()["field"] == field, response.json()


async def test_scope_guard_refuses_a_key_without_the_scope(
    client: Client, world: World, session: AsyncSession
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    reader = str((await issue(client, admin, world.cafe.id, ["campaigns:read"]))["key"])
    manager = str((await issue(client, admin, world.cafe.id, ["webhooks:manage"]))["key"])
    path = f"/api/v1/organizations/{world.cafe.id}/webhooks"

    refused = await client.get(path, headers=bearer(reader))
    assert refused.status_code == 403
    assert refused.json()["code"] == "insufficient_scope"
    assert refused.json()["missing_scopes"] == ["webhooks:manage"]

    assert (await client.get(path, headers=bearer(manager))).status_code == 200
    created = await client.post(
        path,
        json={"url": "https://hooks.cafe.example/in", "event_types": ["coupon.redeemed"]},
        headers=bearer(manager),
    )
    assert created.status_code == 201, created.text
    (entry,) = await audit_entries(session, "webhook.created")
    assert entry.actor_kind == "api_key"

    # A key acts for its own organization only, and never manages keys.
    other = await client.get(
        f"/api/v1/organizations/{world.bank.id}/webhooks", headers=bearer(manager)
    )
    assert other.status_code == 404
    keys = await client.post(
        f"/api/v1/organizations/{world.cafe.id}/api-keys",
        json={"name": "escalate", "scopes": list(API_KEY_SCOPES)},
        headers=bearer(manager),
    )
    assert keys.status_code == 403

    # Users are not bound by scopes; the guard's roles apply to them instead.
    assert (await client.get(path, headers=admin)).status_code == 200
    marketing = await auth_headers(client, "marketing@cafe.test")
    assert (await client.get(path, headers=marketing)).status_code == 403

    with pytest.raises(ValueError, match="unknown API key scopes"):
        scope_guard("coupons:delete")


async def test_only_admins_manage_keys(client: Client, world: World) -> None:
    path = f"/api/v1/organizations/{world.cafe.id}/api-keys"
    body = {"name": "k", "scopes": ["campaigns:read"]}
    for email in (
        "marketing@cafe.test",
        "finance@cafe.test",
        "cashier@cafe.test",
        "marketing@carrier.test",
    ):
        headers = await auth_headers(client, email)
        assert (await client.post(path, json=body, headers=headers)).status_code == 403, email
        assert (await client.get(path, headers=headers)).status_code == 403, email

    carrier_admin = await auth_headers(client, "admin@carrier.test")
    issued = await issue(client, carrier_admin, world.cafe.id, ["campaigns:read"])
    cafe_admin = await auth_headers(client, "admin@cafe.test")
    listed = await client.get(path, headers=cafe_admin)
    assert [k["id"] for k in listed.json()["items"]] == [issued["api_key"]["id"]]  # type: ignore[index]
    revoked = await client.post(
        f"/api/v1/api-keys/{issued['api_key']['id']}/revoke",  # type: ignore[index]
        headers=carrier_admin,
    )
    assert revoked.status_code == 200


async def test_other_organizations_keys_answer_404(client: Client, world: World) -> None:
    cafe_admin = await auth_headers(client, "admin@cafe.test")
    issued = await issue(client, cafe_admin, world.cafe.id, ["campaigns:read"])
    key, key_id = str(issued["key"]), issued["api_key"]["id"]  # type: ignore[index]

    bank_admin = await auth_headers(client, "admin@bank.test")
    for method, path in (
        ("GET", f"/api/v1/organizations/{world.cafe.id}/api-keys"),
        ("POST", f"/api/v1/organizations/{world.cafe.id}/api-keys"),
        ("GET", f"/api/v1/api-keys/{key_id}"),
        ("POST", f"/api/v1/api-keys/{key_id}/revoke"),
    ):
        response = await client.request(
            method,
            path,
            headers=bank_admin,
            json={"name": "k", "scopes": ["campaigns:read"]} if method == "POST" else None,
        )
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "not_found"
    missing = await client.get(
        "/api/v1/api-keys/00000000-0000-0000-0000-000000000000", headers=bank_admin
    )
    other = await client.get(f"/api/v1/api-keys/{key_id}", headers=bank_admin)
    assert missing.json()["detail"] == other.json()["detail"]
    # The bank's attempt to revoke changed nothing.
    assert (await client.get("/api/v1/api-keys/current", headers=bearer(key))).status_code == 200


async def test_keys_of_a_suspended_organization_are_refused(client: Client, world: World) -> None:
    cafe_admin = await auth_headers(client, "admin@cafe.test")
    key = str((await issue(client, cafe_admin, world.cafe.id, ["campaigns:read"]))["key"])
    carrier_admin = await auth_headers(client, "admin@carrier.test")
    suspended = await client.post(
        f"/api/v1/organizations/{world.cafe.id}/suspend",
        json={"reason": "unpaid fees"},
        headers=carrier_admin,
    )
    assert suspended.status_code == 200, suspended.text
    refused = await client.get("/api/v1/api-keys/current", headers=bearer(key))
    assert refused.status_code == 403
    assert refused.json()["code"] == "organization_inactive"
