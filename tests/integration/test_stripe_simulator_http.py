"""The simulator's wire format seen without the SDK, its clock, and its state file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from coalition.settlement.simulator import SimulatorConfig, SimulatorServer
from coalition.settlement.simulator.control import SimulatorControl
from tests.integration.stripe_helpers import API_KEY


@pytest.fixture
async def wire(
    stripe_server: SimulatorServer, simulator: SimulatorControl
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stripe_server.url, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as client:
        yield client


async def onboarded(wire: httpx.AsyncClient, simulator: SimulatorControl) -> str:
    account = await wire.post(
        "/v1/accounts",
        data={
            "type": "custom",
            "country": "DE",
            "capabilities[transfers][requested]": "true",
            "metadata[org]": "7",
        },
    )
    assert account.status_code == 200, account.text
    account_id = str(account.json()["id"])
    await simulator.complete_onboarding(account_id)
    return account_id


async def test_objects_lists_errors_and_headers_have_stripes_shape(
    wire: httpx.AsyncClient, simulator: SimulatorControl
) -> None:
    account_id = await onboarded(wire, simulator)
    await simulator.top_up(50_000, "eur")
    created = await wire.post(
        "/v1/transfers",
        data={
            "amount": "1500",
            "currency": "EUR",
            "destination": account_id,
            "transfer_group": "statement_7",
            "metadata[statement_id]": "7",
            "metadata[note]": "多伦多咖啡",
        },
    )
    assert created.status_code == 200
    assert created.headers["content-type"] == "application/json"
    assert created.headers["request-id"].startswith("req_")
    assert created.headers["stripe-version"]
    transfer = created.json()
    assert transfer["object"] == "transfer" and transfer["id"].startswith("tr_")
    assert transfer["livemode"] is False and isinstance(transfer["created"], int)
    assert transfer["currency"] == "eur"
    assert transfer["metadata"] == {"statement_id": "7", "note": "多伦多咖啡"}
    assert transfer["reversals"]["object"] == "list"

    expanded = await wire.get(
        f"/v1/transfers/{transfer['id']}",
        params=[("expand[]", "destination"), ("expand[]", "balance_transaction")],
    )
    body = expanded.json()
    assert body["destination"]["object"] == "account"
    assert body["destination"]["id"] == account_id
    assert body["balance_transaction"]["object"] == "balance_transaction"
    assert body["balance_transaction"]["amount"] == -1500

    listed = await wire.get("/v1/transfers", params={"transfer_group": "statement_8"})
    assert listed.json() == {
        "object": "list",
        "data": [],
        "has_more": False,
        "url": "/v1/transfers",
    }

    missing = await wire.post("/v1/transfers", data={"currency": "eur"})
    assert missing.status_code == 400
    assert missing.json() == {
        "error": {
            "type": "invalid_request_error",
            "code": "parameter_missing",
            "message": "Missing required param: amount.",
            "param": "amount",
        }
    }
    unknown = await wire.get("/v1/no_such_thing")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "invalid_request_error"
    not_found = await wire.get("/v1/transfers/tr_nope")
    assert not_found.status_code == 404
    assert not_found.json()["error"]["code"] == "resource_missing"


async def test_idempotency_keys_expire_after_24_hours_of_the_clock(
    wire: httpx.AsyncClient, simulator: SimulatorControl
) -> None:
    customer = {"email": "finance@cafe.test"}
    first = await wire.post("/v1/customers", data=customer, headers={"Idempotency-Key": "c-1"})
    replay = await wire.post("/v1/customers", data=customer, headers={"Idempotency-Key": "c-1"})
    assert replay.json()["id"] == first.json()["id"]
    assert replay.headers["idempotent-replayed"] == "true"
    await simulator.advance_clock(24 * 3600 + 1)
    later = await wire.post("/v1/customers", data=customer, headers={"Idempotency-Key": "c-1"})
    assert later.json()["id"] != first.json()["id"]
    assert "idempotent-replayed" not in later.headers


async def test_an_onboarding_link_expires(
    wire: httpx.AsyncClient, simulator: SimulatorControl
) -> None:
    account = await wire.post(
        "/v1/accounts", data={"type": "express", "capabilities[transfers][requested]": "true"}
    )
    link = await wire.post(
        "/v1/account_links",
        data={
            "account": account.json()["id"],
            "type": "account_onboarding",
            "refresh_url": "http://portal.test/again",
            "return_url": "http://portal.test/done",
        },
    )
    assert link.json()["object"] == "account_link"
    assert link.json()["expires_at"] - link.json()["created"] == 300
    await simulator.advance_clock(301)
    async with httpx.AsyncClient() as browser:
        visit = await browser.get(link.json()["url"])
    assert visit.headers["location"] == "http://portal.test/again"
    status = await wire.get(f"/v1/accounts/{account.json()['id']}")
    assert status.json()["details_submitted"] is False


async def test_state_survives_a_restart_with_a_state_file(tmp_path: Path) -> None:
    state = tmp_path / "stripe.json"
    with SimulatorServer(SimulatorConfig(seed=5, state_file=state)) as first:
        async with httpx.AsyncClient(base_url=first.url, auth=(API_KEY, "")) as client:
            created = await client.post("/v1/customers", data={"name": "Café 多伦多"})
    assert state.exists()
    with SimulatorServer(SimulatorConfig(state_file=state)) as second:
        async with httpx.AsyncClient(base_url=second.url, auth=(API_KEY, "")) as client:
            again = await client.get(f"/v1/customers/{created.json()['id']}")
            more = await client.post("/v1/customers", data={"name": "Bank"})
    assert again.json()["name"] == "Café 多伦多"
    assert more.json()["id"] != created.json()["id"]
