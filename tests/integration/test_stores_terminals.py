"""Stores and POS terminals through the HTTP API: CRUD and validation, keys shown once, key
rotation with a grace period, revocation (with its webhook), the POS identity endpoint, tenancy
and roles, and the audit trail."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import Terminal, TerminalKey, WebhookDelivery, WebhookEndpoint
from coalition.merchants.services import stores, terminals
from coalition.platform import jobs
from coalition.platform.audit import AuditEntry
from tests.integration.conftest import World, auth_headers

Client = AsyncTestClient[Litestar]

STORE = {
    "name": "Café Nanjing Road",
    "address": "100 Nanjing Road",
    "city": "Shanghai",
    "latitude": 31.2352,
    "longitude": 121.4758,
    "opening_hours": {
        "sun": [],
        "mon": [["13:00", "21:30"], ["08:00", "12:00"]],
        "fri": [["08:00", "24:00"]],
    },
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create_store(
    client: Client, headers: dict[str, str], org_id: uuid.UUID, **overrides: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/organizations/{org_id}/stores", json={**STORE, **overrides}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def register(
    client: Client, headers: dict[str, str], store_id: str, name: str = "Till 1"
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/stores/{store_id}/terminals", json={"name": name}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def whoami(client: Client, key: str) -> Any:
    return await client.get("/api/v1/pos/terminal", headers=bearer(key))


async def audit_actions(session: AsyncSession, subject_id: str) -> list[AuditEntry]:
    rows = await session.execute(
        select(AuditEntry)
        .where(col(AuditEntry.subject_id) == uuid.UUID(subject_id))
        .order_by(col(AuditEntry.at), col(AuditEntry.action))
        .execution_options(populate_existing=True)
    )
    return list(rows.scalars())


# --- stores ---------------------------------------------------------------------------------


async def test_store_crud_archive_keeps_it_readable(
    client: Client, world: World, session: AsyncSession
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    store = await create_store(client, admin, world.cafe.id)
    assert store["org_id"] == str(world.cafe.id)
    assert store["status"] == "active" and store["archived_at"] is None
    assert store["latitude"] == pytest.approx(31.2352)
    # weekdays in calendar order, each day's intervals sorted
    assert list(store["opening_hours"]) == ["mon", "fri", "sun"]
    assert store["opening_hours"]["mon"] == [["08:00", "12:00"], ["13:00", "21:30"]]
    other = await create_store(client, admin, world.cafe.id, name="Café Beijing", city="Beijing")

    cashier = await auth_headers(client, "cashier@cafe.test")
    got = await client.get(f"/api/v1/stores/{store['id']}", headers=cashier)
    assert got.status_code == 200 and got.json() == store

    listed = await client.get(f"/api/v1/organizations/{world.cafe.id}/stores", headers=cashier)
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()["items"]] == [store["id"], other["id"]]
    assert listed.json()["total"] == 2
    by_city = await client.get(
        f"/api/v1/organizations/{world.cafe.id}/stores?city=Beijing", headers=cashier
    )
    assert [s["id"] for s in by_city.json()["items"]] == [other["id"]]
    page = await client.get(
        f"/api/v1/organizations/{world.cafe.id}/stores?limit=1&offset=1", headers=cashier
    )
    assert [s["id"] for s in page.json()["items"]] == [other["id"]]
    assert page.json()["total"] == 2

    patched = await client.patch(
        f"/api/v1/stores/{store['id']}", json={"name": "Café People's Square"}, headers=admin
    )
    assert patched.status_code == 200, patched.text
    assert patched.json() == {**store, "name": "Café People's Square"}
    cleared = await client.patch(
        f"/api/v1/stores/{store['id']}",
        json={"latitude": None, "longitude": None, "opening_hours": {"tue": [["10:00", "18:00"]]}},
        headers=admin,
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["latitude"] is None and cleared.json()["longitude"] is None
    assert cleared.json()["opening_hours"] == {"tue": [["10:00", "18:00"]]}
    assert cleared.json()["address"] == store["address"]

    archived = await client.post(f"/api/v1/stores/{store['id']}/archive", headers=admin)
    assert archived.status_code == 200, archived.text
    assert archived.json()["status"] == "archived" and archived.json()["archived_at"]
    again = await client.post(f"/api/v1/stores/{store['id']}/archive", headers=admin)
    assert again.status_code == 200
    assert again.json()["archived_at"] == archived.json()["archived_at"]

    still = await client.get(f"/api/v1/stores/{store['id']}", headers=cashier)
    assert still.status_code == 200 and still.json()["status"] == "archived"
    only_archived = await client.get(
        f"/api/v1/organizations/{world.cafe.id}/stores?status=archived", headers=cashier
    )
    assert [s["id"] for s in only_archived.json()["items"]] == [store["id"]]
    active = await client.get(
        f"/api/v1/organizations/{world.cafe.id}/stores?status=active", headers=cashier
    )
    assert [s["id"] for s in active.json()["items"]] == [other["id"]]

    frozen = await client.patch(
        f"/api/v1/stores/{store['id']}", json={"name": "Too late"}, headers=admin
    )
    assert frozen.status_code == 409
    assert frozen.json()["code"] == "store_archived"

    entries = await audit_actions(session, store["id"])
    assert [e.action for e in entries] == [
        "store.created",
        "store.updated",
        "store.updated",
        "store.archived",
    ]
    created, renamed, cleared_entry, archived_entry = entries
    assert created.actor_id == world.users["cafe_admin"].id
    assert created.after is not None and created.after["city"] == "Shanghai"
    assert renamed.before == {"name": STORE["name"]}
    assert renamed.after == {"name": "Café People's Square"}
    assert cleared_entry.before is not None and set(cleared_entry.before) == {
        "latitude",
        "longitude",
        "opening_hours",
    }
    assert archived_entry.after is not None and archived_entry.after["status"] == "archived"


async def test_patch_without_changes_is_not_audited(
    client: Client, world: World, session: AsyncSession
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    store = await create_store(client, admin, world.cafe.id)
    same = await client.patch(
        f"/api/v1/stores/{store['id']}", json={"city": STORE["city"]}, headers=admin
    )
    assert same.status_code == 200 and same.json() == store
    assert [e.action for e in await audit_actions(session, store["id"])] == ["store.created"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"latitude": 90.5}, "latitude"),
        ({"longitude": -180.1}, "longitude"),
        ({"latitude": "north"}, "latitude"),
        ({"latitude": 31.2, "longitude": None}, "longitude"),
        ({"latitude": None, "longitude": 121.4}, "latitude"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"city": "x" * 101}, "city"),
        ({"colour": "blue"}, "colour"),
        ({"opening_hours": {"someday": []}}, "opening_hours"),
        ({"opening_hours": {"mon": [["9:00", "18:00"]]}}, "opening_hours.mon[0]"),
        ({"opening_hours": {"mon": [["25:00", "26:00"]]}}, "opening_hours.mon[0]"),
        ({"opening_hours": {"mon": [["08:00", "12:00"], ["09:00"]]}}, "opening_hours.mon[1]"),
        ({"opening_hours": {"sat": [["09:00", "12:00", "18:00"]]}}, "opening_hours.sat[0]"),
        ({"opening_hours": {"mon": [["18:00", "09:00"]]}}, "opening_hours.mon[0]"),
        ({"opening_hours": {"mon": [["09:00", "09:00"]]}}, "opening_hours.mon[0]"),
        ({"opening_hours": {"mon": [["24:00", "24:00"]]}}, "opening_hours.mon[0]"),
        (
            {"opening_hours": {"tue": [["12:00", "18:00"], ["09:00", "13:00"]]}},
            "opening_hours.tue[0]",
        ),
        (
            {"opening_hours": {"tue": [["09:00", "13:00"], ["12:00", "18:00"]]}},
            "opening_hours.tue[1]",
        ),
        ({"opening_hours": ["mon"]}, "opening_hours"),
    ],
)
async def test_store_validation_errors_name_the_field(
    client: Client, world: World, overrides: dict[str, Any], field: str
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    response = await client.post(
        f"/api/v1/organizations/{world.cafe.id}/stores",
        json={**STORE, **overrides},
        headers=admin,
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["field"] == field, body


async def test_missing_required_field_and_patch_validation(client: Client, world: World) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    body = {k: v for k, v in STORE.items() if k != "address"}
    missing = await client.post(
        f"/api/v1/organizations/{world.cafe.id}/stores", json=body, headers=admin
    )
    assert missing.status_code == 422 and missing.json()["field"] == "address"

    store = await create_store(client, admin, world.cafe.id)
    for patch_body, field in (
        ({"latitude": None}, "latitude"),
        ({"longitude": 181}, "longitude"),
        ({"name": None}, "name"),
        ({"status": "archived"}, "status"),
        ({"opening_hours": {"wed": [["10:00", "09:00"]]}}, "opening_hours.wed[0]"),
    ):
        response = await client.patch(
            f"/api/v1/stores/{store['id']}", json=patch_body, headers=admin
        )
        assert response.status_code == 422, (patch_body, response.text)
        assert response.json()["field"] == field, (patch_body, response.json())
    unchanged = await client.get(f"/api/v1/stores/{store['id']}", headers=admin)
    assert unchanged.json() == store
    for path in (
        f"/api/v1/organizations/{world.cafe.id}/stores?status=closed",
        f"/api/v1/stores/{store['id']}/terminals?status=lost",
        f"/api/v1/organizations/{world.cafe.id}/terminals?status=lost",
    ):
        bad_filter = await client.get(path, headers=admin)
        assert bad_filter.status_code in (400, 422), path
        assert bad_filter.json()["field"] == "status", path


async def test_only_the_orgs_admins_manage_stores(client: Client, world: World) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    store = await create_store(client, admin, world.cafe.id)
    for email in ("cashier@cafe.test", "marketing@cafe.test", "finance@cafe.test"):
        headers = await auth_headers(client, email)
        for method, path, body in (
            ("POST", f"/api/v1/organizations/{world.cafe.id}/stores", STORE),
            ("PATCH", f"/api/v1/stores/{store['id']}", {"name": "x"}),
            ("POST", f"/api/v1/stores/{store['id']}/archive", None),
            ("POST", f"/api/v1/stores/{store['id']}/terminals", {"name": "x"}),
        ):
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 403, (email, method, path, response.text)
            assert response.json()["code"] == "forbidden"
        # ...but every role of the organization reads them
        assert (await client.get(f"/api/v1/stores/{store['id']}", headers=headers)).is_success

    # carrier staff read every tenant's stores and terminals, and change none of them
    carrier = await auth_headers(client, "admin@carrier.test")
    assert (await client.get(f"/api/v1/stores/{store['id']}", headers=carrier)).status_code == 200
    listed = await client.get(f"/api/v1/organizations/{world.cafe.id}/stores", headers=carrier)
    assert listed.json()["total"] == 1
    terminal = (await register(client, admin, store["id"]))["terminal"]
    carrier_terminals = await client.get(
        f"/api/v1/organizations/{world.cafe.id}/terminals", headers=carrier
    )
    assert [t["id"] for t in carrier_terminals.json()["items"]] == [terminal["id"]]
    for method, path, body in (
        ("POST", f"/api/v1/organizations/{world.cafe.id}/stores", STORE),
        ("PATCH", f"/api/v1/stores/{store['id']}", {"name": "x"}),
        ("POST", f"/api/v1/stores/{store['id']}/archive", None),
        ("POST", f"/api/v1/stores/{store['id']}/terminals", {"name": "x"}),
        ("POST", f"/api/v1/terminals/{terminal['id']}/rotate", {}),
        ("POST", f"/api/v1/terminals/{terminal['id']}/revoke", None),
    ):
        response = await client.request(method, path, json=body, headers=carrier)
        assert response.status_code == 403, (method, path, response.text)
    # the carrier manages its own stores
    await create_store(client, carrier, world.carrier.id, name="Carrier flagship store")


async def test_other_tenants_stores_and_terminals_answer_404_everywhere(
    client: Client, world: World
) -> None:
    cafe = await auth_headers(client, "admin@cafe.test")
    store = await create_store(client, cafe, world.cafe.id)
    terminal = (await register(client, cafe, store["id"]))["terminal"]
    bank = await auth_headers(client, "admin@bank.test")
    bank_cashier = await auth_headers(client, "cashier@bank.test")
    routes = (
        ("GET", "/api/v1/organizations/{org}/stores", None),
        ("POST", "/api/v1/organizations/{org}/stores", STORE),
        ("GET", "/api/v1/stores/{store}", None),
        ("PATCH", "/api/v1/stores/{store}", {"name": "Mine now"}),
        ("POST", "/api/v1/stores/{store}/archive", None),
        ("GET", "/api/v1/stores/{store}/terminals", None),
        ("POST", "/api/v1/stores/{store}/terminals", {"name": "Rogue till"}),
        ("GET", "/api/v1/organizations/{org}/terminals", None),
        ("GET", "/api/v1/terminals/{terminal}", None),
        ("POST", "/api/v1/terminals/{terminal}/rotate", {"grace_seconds": 0}),
        ("POST", "/api/v1/terminals/{terminal}/revoke", None),
    )
    missing = str(uuid.uuid4())
    for method, template, body in routes:
        path = template.format(org=world.cafe.id, store=store["id"], terminal=terminal["id"])
        response = await client.request(method, path, json=body, headers=bank)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "not_found"
        if method == "GET":
            as_cashier = await client.request(method, path, headers=bank_cashier)
            assert as_cashier.status_code == 404, (method, path, as_cashier.text)
        # exactly like a row that does not exist
        nowhere = template.format(org=missing, store=missing, terminal=missing)
        nothing = await client.request(method, nowhere, json=body, headers=bank)
        assert nothing.status_code == 404, (method, nowhere, nothing.text)
        assert nothing.json()["detail"] == response.json()["detail"]

    # nothing changed
    unchanged = await client.get(f"/api/v1/terminals/{terminal['id']}", headers=cafe)
    assert unchanged.json()["status"] == "active" and unchanged.json()["active_keys"] == 1
    assert (await client.get(f"/api/v1/stores/{store['id']}", headers=cafe)).json() == store
    own = await client.get(f"/api/v1/organizations/{world.bank.id}/terminals", headers=bank)
    assert own.status_code == 200 and own.json()["total"] == 0


# --- terminals ------------------------------------------------------------------------------


async def test_register_shows_the_key_once_and_it_authenticates(
    client: Client, world: World, session: AsyncSession
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    store = await create_store(client, admin, world.cafe.id)
    issued = await register(client, admin, store["id"], name="  Front till  ")
    key = issued["key"]
    assert key.startswith("ctk_")
    assert issued["previous_keys_expire_at"] is None
    terminal = issued["terminal"]
    assert terminal["name"] == "Front till"
    assert terminal["store_id"] == store["id"] and terminal["org_id"] == str(world.cafe.id)
    assert terminal["status"] == "active" and terminal["last_seen_at"] is None
    assert terminal["active_keys"] == 1 and terminal["key_created_at"]

    # only the digest is stored
    stored = (
        (
            await session.execute(
                select(TerminalKey).where(col(TerminalKey.terminal_id) == uuid.UUID(terminal["id"]))
            )
        )
        .scalars()
        .all()
    )
    assert len(stored) == 1
    assert stored[0].key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key.split("_")[2] not in stored[0].key_hash

    # the key is never shown again
    secret = key.split("_", 2)[2]
    for path in (
        f"/api/v1/terminals/{terminal['id']}",
        f"/api/v1/stores/{store['id']}/terminals",
        f"/api/v1/organizations/{world.cafe.id}/terminals",
    ):
        response = await client.get(path, headers=admin)
        assert response.status_code == 200, path
        assert secret not in response.text and "key" not in response.json(), path
    listed = await client.get(f"/api/v1/stores/{store['id']}/terminals", headers=admin)
    assert [t["id"] for t in listed.json()["items"]] == [terminal["id"]]

    me = await whoami(client, key)
    assert me.status_code == 200, me.text
    assert me.json() == {
        "terminal": {"id": terminal["id"], "name": "Front till", "status": "active"},
        "store": {
            "id": store["id"],
            "name": store["name"],
            "address": store["address"],
            "city": store["city"],
        },
        "organization": {"id": str(world.cafe.id), "name": world.cafe.name},
    }

    # a terminal key is for the POS API only, a user token is not for the POS API
    assert (await client.get(f"/api/v1/stores/{store['id']}", headers=bearer(key))).status_code == (
        403
    )
    user_on_pos = await client.get("/api/v1/pos/terminal", headers=admin)
    assert user_on_pos.status_code == 403
    assert (await client.get("/api/v1/pos/terminal")).status_code == 401
    for bad in (
        key[:-2] + ("AA" if not key.endswith("AA") else "BB"),
        "ctk_0123456789abcdef_" + "x" * 43,
        "ctk_garbage",
    ):
        response = await whoami(client, bad)
        assert response.status_code == 401, bad
        assert response.json()["code"] == "invalid_token"


async def test_last_seen_at_is_set_once_a_minute(
    client: Client, world: World, session: AsyncSession
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    store = await create_store(client, admin, world.cafe.id)
    issued = await register(client, admin, store["id"])
    terminal_id = uuid.UUID(issued["terminal"]["id"])

    async def last_seen() -> Any:
        return (
            await session.execute(
                select(col(Terminal.last_seen_at)).where(col(Terminal.id) == terminal_id)
            )
        ).scalar_one()

    assert await last_seen() is None
    assert (await whoami(client, issued["key"])).status_code == 200
    first = await last_seen()
    assert first is not None
    assert (await whoami(client, issued["key"])).status_code == 200
    assert await last_seen() == first
    shown = await client.get(f"/api/v1/terminals/{terminal_id}", headers=admin)
    assert shown.json()["last_seen_at"] is not None


async def test_rotate_without_grace_stops_the_old_key_at_once(
    client: Client, world: World, session: AsyncSession
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    store = await create_store(client, admin, world.cafe.id)
    issued = await register(client, admin, store["id"])
    old_key, terminal_id = issued["key"], issued["terminal"]["id"]
    assert (await whoami(client, old_key)).status_code == 200

    rotated = await client.post(
        f"/api/v1/terminals/{terminal_id}/rotate", json={"grace_seconds": 0}, headers=admin
    )
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["key"]
    assert new_key.startswith("ctk_") and new_key != old_key
    assert rotated.json()["terminal"]["active_keys"] == 1
    assert rotated.json()["terminal"]["grace_until"] is None

    refused = await whoami(client, old_key)
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_token"
    assert (await whoami(client, new_key)).status_code == 200

    # the default grace is 0 as well, and the body is optional
    again = await client.post(f"/api/v1/terminals/{terminal_id}/rotate", headers=admin)
    assert again.status_code == 200
    assert (await whoami(client, new_key)).status_code == 401
    assert (await whoami(client, again.json()["key"])).status_code == 200

    entries = await audit_actions(session, terminal_id)
    assert [e.action for e in entries] == [
        "terminal.registered",
        "terminal.key_rotated",
        "terminal.key_rotated",
    ]
    assert entries[1].after is not None and entries[1].after["grace_seconds"] == 0


async def test_rotate_with_grace_keeps_both_keys_working(
    client: Client, world: World, session: AsyncSession
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    store = await create_store(client, admin, world.cafe.id)
    issued = await register(client, admin, store["id"])
    old_key, terminal_id = issued["key"], issued["terminal"]["id"]

    rotated = await client.post(
        f"/api/v1/terminals/{terminal_id}/rotate", json={"grace_seconds": 60}, headers=admin
    )
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["previous_keys_expire_at"] is not None
    assert body["terminal"]["active_keys"] == 2
    assert body["terminal"]["grace_until"] == body["previous_keys_expire_at"]
    assert (await whoami(client, old_key)).status_code == 200
    assert (await whoami(client, body["key"])).status_code == 200

    shown = await client.get(f"/api/v1/terminals/{terminal_id}", headers=admin)
    assert shown.json()["active_keys"] == 2

    for grace in (-1, 7 * 24 * 3600 + 1, "soon"):
        response = await client.post(
            f"/api/v1/terminals/{terminal_id}/rotate", json={"grace_seconds": grace}, headers=admin
        )
        assert response.status_code == 422, grace
        assert response.json()["field"] == "grace_seconds"
    longest = await client.post(
        f"/api/v1/terminals/{terminal_id}/rotate",
        json={"grace_seconds": 7 * 24 * 3600},
        headers=admin,
    )
    assert longest.status_code == 200
    assert longest.json()["terminal"]["active_keys"] == 3
    assert longest.json()["terminal"]["grace_until"] == longest.json()["previous_keys_expire_at"]
    # an old key never gets a longer life than it already had
    expiries = dict(
        (
            await session.execute(
                select(col(TerminalKey.key_id), col(TerminalKey.expires_at)).where(
                    col(TerminalKey.terminal_id) == uuid.UUID(terminal_id)
                )
            )
        )
        .tuples()
        .all()
    )
    assert expiries[old_key.split("_")[1]] == datetime.fromisoformat(
        body["previous_keys_expire_at"]
    )
    assert expiries[body["key"].split("_")[1]] == datetime.fromisoformat(
        longest.json()["previous_keys_expire_at"]
    )
    assert expiries[longest.json()["key"].split("_")[1]] is None
    assert (await whoami(client, old_key)).status_code == 200
    assert (await whoami(client, body["key"])).status_code == 200
    assert (await whoami(client, longest.json()["key"])).status_code == 200


async def test_revoke_stops_the_terminal_and_emits_the_webhook(
    client: Client, world: World, session: AsyncSession
) -> None:
    for org in (world.cafe, world.carrier, world.bank):
        session.add(
            WebhookEndpoint(
                org_id=org.id,
                url=f"https://hooks.example.com/{org.id}",
                event_types=["terminal.revoked"],
                secret="whsec_test",
            )
        )
    session.add(  # subscribed to something else: gets nothing
        WebhookEndpoint(
            org_id=world.cafe.id,
            url="https://hooks.example.com/other",
            event_types=["campaign.ended"],
            secret="whsec_test",
        )
    )
    await session.commit()

    admin = await auth_headers(client, "admin@cafe.test")
    store = await create_store(client, admin, world.cafe.id)
    issued = await register(client, admin, store["id"])
    key, terminal_id = issued["key"], issued["terminal"]["id"]
    rotated = await client.post(
        f"/api/v1/terminals/{terminal_id}/rotate", json={"grace_seconds": 3600}, headers=admin
    )
    new_key = rotated.json()["key"]
    assert (await whoami(client, key)).status_code == 200

    revoked = await client.post(f"/api/v1/terminals/{terminal_id}/revoke", headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked" and revoked.json()["revoked_at"]
    assert revoked.json()["active_keys"] == 0
    for each in (key, new_key):
        response = await whoami(client, each)
        assert response.status_code == 401 and response.json()["code"] == "invalid_token"

    keys = (
        (
            await session.execute(
                select(TerminalKey).where(col(TerminalKey.terminal_id) == uuid.UUID(terminal_id))
            )
        )
        .scalars()
        .all()
    )
    assert len(keys) == 2 and all(k.revoked_at is not None for k in keys)

    deliveries = (
        (
            await session.execute(
                select(WebhookDelivery).where(col(WebhookDelivery.event_type) == "terminal.revoked")
            )
        )
        .scalars()
        .all()
    )
    assert {d.org_id for d in deliveries} == {world.cafe.id, world.carrier.id}
    assert len({d.event_id for d in deliveries}) == 1
    payload = deliveries[0].payload
    assert payload["type"] == "terminal.revoked"
    assert payload["data"]["terminal"]["id"] == terminal_id
    assert payload["data"]["store"]["id"] == store["id"]
    assert key not in str(payload) and new_key not in str(payload)

    # revoking again changes nothing and emits nothing; a revoked terminal gets no key
    again = await client.post(f"/api/v1/terminals/{terminal_id}/revoke", headers=admin)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    rotate = await client.post(
        f"/api/v1/terminals/{terminal_id}/rotate", json={"grace_seconds": 0}, headers=admin
    )
    assert rotate.status_code == 409 and rotate.json()["code"] == "terminal_revoked"
    count = (
        await session.execute(
            select(WebhookDelivery).where(col(WebhookDelivery.event_type) == "terminal.revoked")
        )
    ).all()
    assert len(count) == 2
    # still readable, and listed by status
    revoked_list = await client.get(
        f"/api/v1/stores/{store['id']}/terminals?status=revoked", headers=admin
    )
    assert [t["id"] for t in revoked_list.json()["items"]] == [terminal_id]
    active_list = await client.get(
        f"/api/v1/organizations/{world.cafe.id}/terminals?status=active", headers=admin
    )
    assert active_list.json()["total"] == 0

    entries = await audit_actions(session, terminal_id)
    assert [e.action for e in entries] == [
        "terminal.registered",
        "terminal.key_rotated",
        "terminal.revoked",
    ]
    assert entries[2].after is not None and entries[2].after["keys_revoked"] == 2
    # no key or digest ever reaches the audit log
    for entry in entries:
        text = f"{entry.before} {entry.after}"
        for k in keys:
            assert k.key_hash not in text and k.key_id not in text
        assert key not in text and new_key not in text
    await jobs.drain_dispatches()


async def test_suspended_organizations_terminal_is_refused_at_once(
    client: Client, world: World
) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    store = await create_store(client, admin, world.cafe.id)
    key = (await register(client, admin, store["id"]))["key"]
    assert (await whoami(client, key)).status_code == 200

    carrier = await auth_headers(client, "admin@carrier.test")
    suspended = await client.post(
        f"/api/v1/organizations/{world.cafe.id}/suspend",
        json={"reason": "unpaid statements"},
        headers=carrier,
    )
    assert suspended.status_code == 200, suspended.text
    refused = await whoami(client, key)
    assert refused.status_code in (401, 403), refused.text
    assert refused.json()["code"] in ("organization_inactive", "invalid_token")

    reinstated = await client.post(
        f"/api/v1/organizations/{world.cafe.id}/reinstate", headers=carrier
    )
    assert reinstated.status_code == 200
    assert (await whoami(client, key)).status_code == 200
    await jobs.drain_dispatches()


async def test_archived_stores_terminals_are_refused(client: Client, world: World) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    store = await create_store(client, admin, world.cafe.id)
    issued = await register(client, admin, store["id"])
    assert (await whoami(client, issued["key"])).status_code == 200

    assert (
        await client.post(f"/api/v1/stores/{store['id']}/archive", headers=admin)
    ).status_code == 200
    refused = await whoami(client, issued["key"])
    assert refused.status_code in (401, 403), refused.text

    blocked = await client.post(
        f"/api/v1/stores/{store['id']}/terminals", json={"name": "Late till"}, headers=admin
    )
    assert blocked.status_code == 409
    assert blocked.json()["code"] == "store_archived"
    rotate = await client.post(
        f"/api/v1/terminals/{issued['terminal']['id']}/rotate", json={}, headers=admin
    )
    assert rotate.status_code == 409 and rotate.json()["code"] == "store_archived"
    # history stays readable, and the terminal can still be revoked for good
    listed = await client.get(f"/api/v1/stores/{store['id']}/terminals", headers=admin)
    assert listed.json()["total"] == 1
    revoked = await client.post(
        f"/api/v1/terminals/{issued['terminal']['id']}/revoke", headers=admin
    )
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    await jobs.drain_dispatches()


async def test_register_validation(client: Client, world: World) -> None:
    admin = await auth_headers(client, "admin@cafe.test")
    store = await create_store(client, admin, world.cafe.id)
    for body, field in (
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 121}, "name"),
        ({"name": "Till", "key": "ctk_mine"}, "key"),
    ):
        response = await client.post(
            f"/api/v1/stores/{store['id']}/terminals", json=body, headers=admin
        )
        assert response.status_code == 422, body
        assert response.json()["field"] == field, (body, response.json())
    missing = await client.post(
        f"/api/v1/stores/{uuid.uuid4()}/terminals", json={"name": "Till"}, headers=admin
    )
    assert missing.status_code == 404


async def test_services_work_without_a_request(
    client: Client, world: World, session: AsyncSession
) -> None:
    """What the demo seed uses: system actions (no principal), committed by the caller."""
    store = await stores.create_store(
        session,
        None,
        world.bank,
        name="Bank branch",
        address="1 Lujiazui Ring Road",
        city="Shanghai",
        opening_hours={"mon": [("09:00", "17:00")]},
    )
    terminal, issued = await terminals.register_terminal(session, None, store, name="Teller 1")
    await session.commit()
    assert issued.full.startswith(f"ctk_{issued.key_id}_")

    me = await whoami(client, issued.full)
    assert me.status_code == 200, me.text
    assert me.json()["terminal"]["id"] == str(terminal.id)
    assert me.json()["organization"]["id"] == str(world.bank.id)

    new_key, _ = await terminals.rotate_key(session, None, terminal, grace_seconds=0)
    await session.commit()
    assert (await whoami(client, issued.full)).status_code == 401
    assert (await whoami(client, new_key.full)).status_code == 200
    assert await terminals.revoke_terminal(session, None, terminal) is True
    await session.commit()
    assert (await whoami(client, new_key.full)).status_code == 401

    entries = await audit_actions(session, str(terminal.id))
    assert [e.action for e in entries] == [
        "terminal.registered",
        "terminal.key_rotated",
        "terminal.revoked",
    ]
    assert {e.actor_kind for e in entries} == {"system"}
    store_entries = await audit_actions(session, str(store.id))
    assert [e.action for e in store_entries] == ["store.created"]
