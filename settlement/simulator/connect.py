"""Connect: accounts, account links and onboarding, transfers and reversals, balance,
balance transactions and payouts."""

from __future__ import annotations

import copy
from typing import Any

from coalition.settlement.simulator.calls import (
    Call,
    add_balance_transaction,
    available,
    insufficient_funds,
    platform_only,
)
from coalition.settlement.simulator.forms import StripeError, parameter_error
from coalition.settlement.simulator.store import (
    Store,
    StripeObject,
    created_filter,
    currency,
    integer,
    metadata,
    only,
    paginate,
    require,
)

ACCOUNT_TYPES = ("express", "custom", "standard")
COUNTRY_CURRENCY = {"CN": "cny", "HK": "hkd", "US": "usd", "GB": "gbp", "SG": "sgd", "JP": "jpy"}
EURO_COUNTRIES = {"DE", "FR", "NL", "IE", "ES", "IT", "BE", "AT", "FI", "PT", "LU"}
ONBOARDING_REQUIREMENTS = [
    "business_profile.url",
    "external_account",
    "representative.first_name",
    "tos_acceptance.date",
    "tos_acceptance.ip",
]
ACCOUNT_LINK_TTL_SECONDS = 300


# ---------------------------------------------------------------------- accounts


def _default_currency(country: str) -> str:
    if country in EURO_COUNTRIES:
        return "eur"
    return COUNTRY_CURRENCY.get(country, "usd")


def create_account(call: Call) -> StripeObject:
    params = call.params
    only(
        params,
        (
            "type",
            "country",
            "email",
            "business_type",
            "capabilities",
            "metadata",
            "default_currency",
            "business_profile",
        ),
    )
    platform_only(call, "Connected accounts")
    account_type = str(require(params, "type"))
    if account_type not in ACCOUNT_TYPES:
        raise parameter_error(
            f"Invalid type: must be one of {', '.join(ACCOUNT_TYPES)}", "type", "parameter_invalid"
        )
    country = str(params.get("country") or "US").upper()
    requested = params.get("capabilities") or {}
    if not isinstance(requested, dict):
        raise parameter_error("Invalid object", "capabilities")
    capabilities = {
        name: "inactive"
        for name, wanted in requested.items()
        if isinstance(wanted, dict) and wanted.get("requested") == "true"
    }
    if account_type == "standard":
        capabilities = {"card_payments": "inactive", "transfers": "inactive"}
    elif not capabilities:
        raise parameter_error(
            "You must request at least one capability for an Express or Custom account.",
            "capabilities",
            "parameter_missing",
        )
    store = call.store
    now = store.now()
    business_profile = params.get("business_profile") or {}
    account: StripeObject = {
        "id": store.new_id("acct").replace("acct_", "acct_1", 1)[:21],
        "object": "account",
        "business_profile": {
            "name": business_profile.get("name") if isinstance(business_profile, dict) else None,
            "url": business_profile.get("url") if isinstance(business_profile, dict) else None,
        },
        "business_type": params.get("business_type"),
        "capabilities": capabilities,
        "charges_enabled": False,
        "country": country,
        "created": now,
        "default_currency": str(params.get("default_currency") or _default_currency(country)),
        "details_submitted": False,
        "email": params.get("email"),
        "livemode": False,
        "metadata": metadata(params),
        "payouts_enabled": False,
        "requirements": {
            "current_deadline": None,
            "currently_due": list(ONBOARDING_REQUIREMENTS),
            "disabled_reason": "requirements.past_due",
            "errors": [],
            "eventually_due": list(ONBOARDING_REQUIREMENTS),
            "past_due": list(ONBOARDING_REQUIREMENTS),
            "pending_verification": [],
        },
        "type": account_type,
    }
    # A connected account is an object of the platform and also its own scope.
    return store.add(account, store.platform_id)


def connected_account(call: Call, account_id: str, param: str = "account") -> StripeObject:
    account = call.store.find(account_id, call.store.platform_id)
    if account is None or account.get("object") != "account":
        raise StripeError(
            404 if param == "id" else 400,
            f"No such {'account' if param == 'id' else param}: '{account_id}'",
            code="resource_missing",
            param=param,
        )
    return account


def retrieve_account(call: Call, account_id: str | None = None) -> StripeObject:
    only(call.params, ())
    if account_id is None or account_id == call.account:
        if call.on_platform:
            return platform_account(call.store)
        return connected_account(call, call.account, "id")
    platform_only(call, "Retrieving other accounts")
    return connected_account(call, account_id, "id")


def platform_account(store: Store) -> StripeObject:
    return {
        "id": store.platform_id,
        "object": "account",
        "business_profile": {"name": "Coalition platform (simulated)", "url": None},
        "capabilities": {"card_payments": "active", "transfers": "active"},
        "charges_enabled": True,
        "country": "US",
        "default_currency": "usd",
        "details_submitted": True,
        "email": None,
        "livemode": False,
        "metadata": {},
        "payouts_enabled": True,
        "type": "standard",
    }


def update_account(call: Call, account_id: str) -> StripeObject:
    only(call.params, ("metadata", "email", "business_profile"))
    platform_only(call, "Account updates")
    account = connected_account(call, account_id, "id")
    previous: dict[str, Any] = {}
    new_metadata = metadata(call.params, account["metadata"])
    if new_metadata != account["metadata"]:
        previous["metadata"] = account["metadata"]
        account["metadata"] = new_metadata
    if "email" in call.params and call.params["email"] != account["email"]:
        previous["email"] = account["email"]
        account["email"] = call.params["email"]
    if previous:
        call.emit("account.updated", account, account["id"], previous=previous)
    return account


def list_accounts(call: Call) -> StripeObject:
    only(call.params, ("created", "limit", "starting_after", "ending_before"))
    platform_only(call, "Listing accounts")
    within = created_filter(call.params)
    items = [
        a for a in call.store.of_kind("account", call.store.platform_id) if within(a["created"])
    ]
    return paginate(call.store, items, call.params, "/v1/accounts")


def complete_onboarding(store: Store, account_id: str, **flags: Any) -> StripeObject:
    """What finishing Stripe's hosted onboarding does; `account.updated` if anything changed."""
    account = store.find(account_id, store.platform_id)
    if account is None or account.get("object") != "account":
        raise StripeError(404, f"No such account: '{account_id}'", code="resource_missing")
    complete = flags.pop("complete", True)
    before = copy.deepcopy(account)
    if complete:
        account["details_submitted"] = True
        account["charges_enabled"] = True
        account["payouts_enabled"] = True
        account["capabilities"] = {name: "active" for name in account["capabilities"]}
        account["requirements"] = {
            **account["requirements"],
            "currently_due": [],
            "eventually_due": [],
            "past_due": [],
            "disabled_reason": None,
        }
    for name in ("charges_enabled", "payouts_enabled", "details_submitted"):
        if name in flags:
            account[name] = bool(flags[name])
    if "disabled_reason" in flags:
        account["requirements"]["disabled_reason"] = flags["disabled_reason"]
    if "transfers" in flags:
        account["capabilities"]["transfers"] = "active" if flags["transfers"] else "inactive"
    previous = {key: before[key] for key in account if before.get(key) != account[key]}
    if previous:
        store.emit("account.updated", account, account_id, previous=previous)
    return account


def create_account_link(call: Call) -> StripeObject:
    params = call.params
    only(params, ("account", "type", "refresh_url", "return_url", "collect", "collection_options"))
    platform_only(call, "Account links")
    account = connected_account(call, str(require(params, "account")))
    link_type = str(require(params, "type"))
    if link_type not in ("account_onboarding", "account_update"):
        raise parameter_error("Invalid type", "type")
    if link_type == "account_update" and account["type"] not in ("custom",):
        raise StripeError(
            400, "You cannot create `account_update` links for this account type.", param="type"
        )
    store = call.store
    now = store.now()
    token = store.ids.new("link", 32)
    store.add(
        {
            "id": token,
            "object": "simulator.onboarding_link",
            "created": now,
        },
        store.platform_id,
        account=account["id"],
        refresh_url=params.get("refresh_url"),
        return_url=params.get("return_url"),
        expires_at=now + ACCOUNT_LINK_TTL_SECONDS,
    )
    return {
        "object": "account_link",
        "created": now,
        "expires_at": now + ACCOUNT_LINK_TTL_SECONDS,
        "url": f"{call.base_url}/_simulator/onboarding/{token}",
    }


# ---------------------------------------------------------------------- transfers


def create_transfer(call: Call) -> StripeObject:
    params = call.params
    only(
        params,
        (
            "amount",
            "currency",
            "destination",
            "transfer_group",
            "metadata",
            "description",
            "source_transaction",
            "source_type",
        ),
    )
    amount = integer(params, "amount", minimum=1)
    if amount is None:
        require(params, "amount")
    assert amount is not None
    currency_code = currency(params)
    destination_id = str(require(params, "destination"))
    meta = metadata(params)
    platform_only(call, "Transfers")
    store = call.store
    destination = connected_account(call, destination_id, "destination")
    if destination["capabilities"].get("transfers") != "active":
        raise StripeError(
            400,
            "Your destination account needs to have at least one of the following capabilities "
            "enabled: transfers, crypto_transfers, legacy_payments",
            code="insufficient_capabilities_for_transfer",
            param="destination",
        )
    if available(store, store.platform_id, currency_code) < amount:
        raise insufficient_funds(
            "You have insufficient available funds in your Stripe account. Try adding funds "
            "directly to your available balance by creating Charges using the "
            "4000000000000077 test card."
        )
    now = store.now()
    transfer_id = store.new_id("tr")
    payment_id = store.new_id("py")
    platform_txn = add_balance_transaction(
        call,
        store.platform_id,
        amount=-amount,
        currency_code=currency_code,
        kind="transfer",
        source=transfer_id,
        category="transfer",
        description=params.get("description"),
    )
    destination_txn = add_balance_transaction(
        call,
        destination_id,
        amount=amount,
        currency_code=currency_code,
        kind="payment",
        source=payment_id,
        category="charge",
    )
    store.add(
        {
            "id": payment_id,
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": 0,
            "balance_transaction": destination_txn["id"],
            "captured": True,
            "created": now,
            "currency": currency_code,
            "livemode": False,
            "metadata": {},
            "paid": True,
            "refunded": False,
            "source_transfer": transfer_id,
            "status": "succeeded",
        },
        destination_id,
    )
    transfer: StripeObject = {
        "id": transfer_id,
        "object": "transfer",
        "amount": amount,
        "amount_reversed": 0,
        "balance_transaction": platform_txn["id"],
        "created": now,
        "currency": currency_code,
        "description": params.get("description"),
        "destination": destination_id,
        "destination_payment": payment_id,
        "livemode": False,
        "metadata": meta,
        "reversals": {
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/transfers/{transfer_id}/reversals",
        },
        "reversed": False,
        "source_transaction": params.get("source_transaction"),
        "source_type": str(params.get("source_type") or "card"),
        "transfer_group": params.get("transfer_group"),
    }
    store.add(transfer, store.platform_id)
    call.emit("transfer.created", transfer)
    return transfer


def retrieve_transfer(call: Call, transfer_id: str) -> StripeObject:
    only(call.params, ())
    return call.store.get(transfer_id, call.account, "transfer")


def update_transfer(call: Call, transfer_id: str) -> StripeObject:
    only(call.params, ("metadata", "description"))
    transfer = call.store.get(transfer_id, call.account, "transfer")
    previous: dict[str, Any] = {}
    new_metadata = metadata(call.params, transfer["metadata"])
    if new_metadata != transfer["metadata"]:
        previous["metadata"] = transfer["metadata"]
        transfer["metadata"] = new_metadata
    if "description" in call.params and call.params["description"] != transfer["description"]:
        previous["description"] = transfer["description"]
        transfer["description"] = call.params["description"] or None
    if previous:
        call.emit("transfer.updated", transfer, previous=previous)
    return transfer


def list_transfers(call: Call) -> StripeObject:
    params = call.params
    only(
        params,
        ("created", "destination", "transfer_group", "limit", "starting_after", "ending_before"),
    )
    within = created_filter(params)
    items = [
        transfer
        for transfer in call.store.of_kind("transfer", call.account)
        if within(transfer["created"])
        and (not params.get("destination") or transfer["destination"] == params["destination"])
        and (
            not params.get("transfer_group")
            or transfer["transfer_group"] == params["transfer_group"]
        )
    ]
    return paginate(call.store, items, params, "/v1/transfers")


def create_reversal(call: Call, transfer_id: str) -> StripeObject:
    params = call.params
    only(params, ("amount", "metadata", "description", "refund_application_fee"))
    amount = integer(params, "amount", minimum=1)
    meta = metadata(params)
    store = call.store
    transfer = store.get(transfer_id, call.account, "transfer")
    remaining = transfer["amount"] - transfer["amount_reversed"]
    if remaining <= 0:
        raise StripeError(
            400, f"Transfer {transfer_id} has already been fully reversed.", param="amount"
        )
    if amount is None:
        amount = remaining
    if amount > remaining:
        raise StripeError(
            400,
            f"Transfer {transfer_id} has a remaining amount of {remaining}, but you requested a "
            f"reversal of {amount}.",
            param="amount",
        )
    destination_id = transfer["destination"]
    if available(store, destination_id, transfer["currency"]) < amount:
        raise insufficient_funds(
            "The destination account has insufficient funds to cover this transfer reversal."
        )
    reversal_id = store.new_id("trr")
    refund_id = store.new_id("pyr")
    platform_txn = add_balance_transaction(
        call,
        store.platform_id,
        amount=amount,
        currency_code=transfer["currency"],
        kind="transfer_refund",
        source=reversal_id,
        category="transfer_reversal",
    )
    add_balance_transaction(
        call,
        destination_id,
        amount=-amount,
        currency_code=transfer["currency"],
        kind="payment_refund",
        source=refund_id,
        category="refund",
    )
    reversal: StripeObject = {
        "id": reversal_id,
        "object": "transfer_reversal",
        "amount": amount,
        "balance_transaction": platform_txn["id"],
        "created": store.now(),
        "currency": transfer["currency"],
        "destination_payment_refund": refund_id,
        "metadata": meta,
        "source_refund": None,
        "transfer": transfer_id,
    }
    store.add(reversal, store.platform_id)
    previous = {"amount_reversed": transfer["amount_reversed"], "reversed": transfer["reversed"]}
    transfer["amount_reversed"] += amount
    transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
    reversals = transfer["reversals"]
    reversals["data"] = [reversal, *reversals["data"]]
    reversals["total_count"] += 1
    call.emit("transfer.reversed", transfer, previous=previous)
    return reversal


def list_reversals(call: Call, transfer_id: str) -> StripeObject:
    only(call.params, ("limit", "starting_after", "ending_before"))
    call.store.get(transfer_id, call.account, "transfer")
    items = [
        reversal
        for reversal in call.store.of_kind("transfer_reversal", call.account)
        if reversal["transfer"] == transfer_id
    ]
    return paginate(call.store, items, call.params, f"/v1/transfers/{transfer_id}/reversals")


def retrieve_reversal(call: Call, transfer_id: str, reversal_id: str) -> StripeObject:
    only(call.params, ())
    reversal = call.store.get(reversal_id, call.account, "transfer_reversal")
    if reversal["transfer"] != transfer_id:
        raise StripeError(
            404, f"No such transfer reversal: '{reversal_id}'", code="resource_missing"
        )
    return reversal


# ---------------------------------------------------------------------- payouts


def create_payout(call: Call) -> StripeObject:
    params = call.params
    only(
        params, ("amount", "currency", "metadata", "description", "method", "statement_descriptor")
    )
    amount = integer(params, "amount", minimum=1)
    if amount is None:
        require(params, "amount")
    assert amount is not None
    currency_code = currency(params)
    if available(call.store, call.account, currency_code) < amount:
        raise insufficient_funds(
            "You have insufficient funds in your Stripe account for this transfer."
        )
    return make_payout(call, amount, currency_code, automatic=False, meta=metadata(params))


def make_payout(
    call: Call, amount: int, currency_code: str, *, automatic: bool, meta: dict[str, str]
) -> StripeObject:
    store = call.store
    payout_id = store.new_id("po")
    txn = add_balance_transaction(
        call,
        call.account,
        amount=-amount,
        currency_code=currency_code,
        kind="payout",
        source=payout_id,
        category="payout",
    )
    now = store.now()
    payout: StripeObject = {
        "id": payout_id,
        "object": "payout",
        "amount": amount,
        "arrival_date": now,
        "automatic": automatic,
        "balance_transaction": txn["id"],
        "created": now,
        "currency": currency_code,
        "description": "STRIPE PAYOUT" if automatic else None,
        "destination": None,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": meta,
        "method": "standard",
        "source_type": "card",
        "statement_descriptor": None,
        "status": "paid",
        "type": "bank_account",
    }
    store.add(payout, call.account)
    store.hidden.setdefault(txn["id"], {})["payout"] = payout_id
    call.emit("payout.created", payout)
    call.emit("payout.paid", payout)
    return payout


def automatic_payout(call: Call, currency_code: str) -> StripeObject:
    """Sweep the account's available balance in one currency into an automatic payout."""
    store = call.store
    swept = [
        txn
        for txn in store.of_kind("balance_transaction", call.account)
        if txn["currency"] == currency_code
        and txn["status"] == "available"
        and "payout" not in store.hidden.get(txn["id"], {})
    ]
    amount = sum(txn["net"] for txn in swept)
    if amount <= 0:
        raise StripeError(400, "There is no available balance to pay out.", param="currency")
    payout = make_payout(call, amount, currency_code, automatic=True, meta={})
    for txn in swept:
        store.hidden.setdefault(txn["id"], {})["payout"] = payout["id"]
    return payout


def retrieve_payout(call: Call, payout_id: str) -> StripeObject:
    only(call.params, ())
    return call.store.get(payout_id, call.account, "payout")


def list_payouts(call: Call) -> StripeObject:
    only(call.params, ("created", "status", "limit", "starting_after", "ending_before"))
    within = created_filter(call.params)
    items = [
        payout
        for payout in call.store.of_kind("payout", call.account)
        if within(payout["created"])
        and (not call.params.get("status") or payout["status"] == call.params["status"])
    ]
    return paginate(call.store, items, call.params, "/v1/payouts")


# ---------------------------------------------------------------------- balance


def retrieve_balance(call: Call) -> StripeObject:
    only(call.params, ())
    totals: dict[str, int] = {}
    for txn in call.store.of_kind("balance_transaction", call.account):
        totals.setdefault(txn["currency"], 0)
        if txn["status"] == "available":
            totals[txn["currency"]] += txn["net"]
    return {
        "object": "balance",
        "available": [
            {"amount": amount, "currency": code, "source_types": {"card": amount}}
            for code, amount in sorted(totals.items())
        ],
        "pending": [
            {"amount": 0, "currency": code, "source_types": {"card": 0}} for code in sorted(totals)
        ],
        "livemode": False,
    }


def list_balance_transactions(call: Call) -> StripeObject:
    params = call.params
    only(
        params,
        (
            "created",
            "currency",
            "payout",
            "source",
            "type",
            "limit",
            "starting_after",
            "ending_before",
        ),
    )
    within = created_filter(params)
    items = call.store.of_kind("balance_transaction", call.account)
    if params.get("payout"):
        payout_id = str(params["payout"])
        call.store.get(payout_id, call.account, "payout")
        items = [
            txn for txn in items if call.store.hidden.get(txn["id"], {}).get("payout") == payout_id
        ]
    items = [
        txn
        for txn in items
        if within(txn["created"])
        and (not params.get("type") or txn["type"] == params["type"])
        and (not params.get("currency") or txn["currency"] == str(params["currency"]).lower())
        and (not params.get("source") or txn["source"] == params["source"])
    ]
    return paginate(call.store, items, params, "/v1/balance_transactions")


def retrieve_balance_transaction(call: Call, txn_id: str) -> StripeObject:
    only(call.params, ())
    return call.store.get(txn_id, call.account, "balance_transaction")
