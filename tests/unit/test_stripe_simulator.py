"""The simulator's pure parts: Stripe's form decoding, cursor pagination, metadata rules,
signatures and deterministic ids (no server, no network)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st
from stripe._encode import _api_encode

from coalition.settlement.simulator import StripeSimulator, signature_header
from coalition.settlement.simulator.app import SimulatorConfig
from coalition.settlement.simulator.calls import Call
from coalition.settlement.simulator.connect import create_account, create_transfer
from coalition.settlement.simulator.forms import StripeError, decode_params
from coalition.settlement.simulator.store import Clock, IdFactory, Store, metadata, paginate


def sdk_encoded(params: dict[str, object]) -> str:
    """What the SDK puts on the wire for `params` (its own encoder)."""
    return urlencode(list(_api_encode(params)))


def test_decodes_what_the_sdk_encodes() -> None:
    params = {
        "amount": 1250,
        "metadata": {"statement_id": "st-1", "1": "digit key stays a key"},
        "expand": ["balance_transaction", "destination"],
        "created": {"gte": 1_700_000_000, "lt": 1_700_086_400},
        "capabilities": {"transfers": {"requested": True}},
        "types": ["transfer.created", "transfer.reversed"],
    }
    assert decode_params(sdk_encoded(params)) == {
        "amount": "1250",
        "metadata": {"statement_id": "st-1", "1": "digit key stays a key"},
        "expand": ["balance_transaction", "destination"],
        "created": {"gte": "1700000000", "lt": "1700086400"},
        "capabilities": {"transfers": {"requested": "true"}},
        "types": ["transfer.created", "transfer.reversed"],
    }
    assert decode_params("expand[]=a&expand[]=b") == {"expand": ["a", "b"]}
    assert decode_params("metadata=") == {"metadata": ""}


def test_metadata_rules() -> None:
    existing = {"a": "1", "b": "2"}
    assert metadata({"metadata": {"b": "", "c": "3"}}, existing) == {"a": "1", "c": "3"}
    assert metadata({"metadata": ""}, existing) == {}
    assert metadata({}, existing) == existing
    with pytest.raises(StripeError) as too_long:
        metadata({"metadata": {"k" * 41: "v"}})
    assert too_long.value.param == f"metadata[{'k' * 41}]"


def _store_with(count: int) -> tuple[Store, list[dict[str, object]]]:
    store = Store(ids=IdFactory(7), clock=Clock(frozen=1_000), platform_id="acct_platform")
    for index in range(count):
        # Several objects share a second: the creation order breaks the tie, as on Stripe.
        store.add({"id": f"obj_{index:03d}", "object": "thing", "created": 1_000 + index // 3}, "p")
    return store, list(store.of_kind("thing", "p"))


@given(count=st.integers(min_value=0, max_value=40), limit=st.integers(min_value=1, max_value=7))
def test_cursor_pages_cover_every_object_once_in_both_directions(count: int, limit: int) -> None:
    store, items = _store_with(count)
    forward: list[object] = []
    params: dict[str, object] = {"limit": str(limit)}
    while True:
        page = paginate(store, items, params, "/v1/things")
        forward.extend(obj["id"] for obj in page["data"])
        assert len(page["data"]) <= limit
        if not page["has_more"]:
            break
        params = {"limit": str(limit), "starting_after": page["data"][-1]["id"]}
    assert forward == [obj["id"] for obj in items]  # newest first, none twice, none missing

    if not items:
        return
    backward: list[object] = []
    params = {"limit": str(limit), "ending_before": items[-1]["id"]}
    while True:
        page = paginate(store, items, params, "/v1/things")
        backward = [obj["id"] for obj in page["data"]] + backward
        if not page["has_more"]:
            break
        params = {"limit": str(limit), "ending_before": page["data"][0]["id"]}
    assert backward == [obj["id"] for obj in items[:-1]]


def test_limit_bounds_and_exclusive_cursors() -> None:
    store, items = _store_with(3)
    for bad in ("0", "101", "x"):
        with pytest.raises(StripeError) as refused:
            paginate(store, items, {"limit": bad}, "/v1/things")
        assert refused.value.param == "limit" and not refused.value.stored
    with pytest.raises(StripeError):
        paginate(store, items, {"starting_after": "a", "ending_before": "b"}, "/v1/things")
    with pytest.raises(StripeError) as missing:
        paginate(store, items, {"starting_after": "obj_999"}, "/v1/things")
    assert missing.value.status == 404


def test_signature_header_is_what_the_sdk_verifies() -> None:
    payload = '{"id": "evt_1", "object": "event"}'
    header = signature_header(payload, "whsec_test")
    assert stripe.WebhookSignature.verify_header(payload, header, "whsec_test", tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(payload + " ", header, "whsec_test", tolerance=300)
    expected = stripe.WebhookSignature.generate_signature_header(
        payload, "whsec_test", 1_700_000_000
    )
    assert signature_header(payload, "whsec_test", 1_700_000_000) == expected


def _platform_call(simulator: StripeSimulator, params: dict[str, object]) -> Call:
    store = simulator.store
    return Call(store, store.platform_id, params, "req_1", None, "http://sim.test")


def test_seeded_simulators_make_the_same_ids() -> None:
    def run() -> list[str]:
        simulator = StripeSimulator(SimulatorConfig(seed=42))
        account = create_account(
            _platform_call(
                simulator,
                {"type": "express", "capabilities": {"transfers": {"requested": "true"}}},
            )
        )
        return [simulator.store.platform_id, account["id"]]

    first, second = run(), run()
    assert first == second
    assert StripeSimulator(SimulatorConfig(seed=43)).store.platform_id != first[0]


def test_transfer_needs_amount_and_refuses_unknown_parameters() -> None:
    simulator = StripeSimulator(SimulatorConfig(seed=1))
    with pytest.raises(StripeError) as missing:
        create_transfer(_platform_call(simulator, {"currency": "cny", "destination": "acct_x"}))
    assert (missing.value.code, missing.value.param) == ("parameter_missing", "amount")
    assert not missing.value.stored
    with pytest.raises(StripeError) as unknown:
        create_transfer(_platform_call(simulator, {"amount": "1", "colour": "red"}))
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "colour")
