"""The `/v1` resources: Connect accounts and links, transfers and reversals, balance, balance
transactions and payouts, customers, payment methods, PaymentIntents and charges, events and
webhook endpoints. Each handler takes a `Call` and answers a Stripe JSON object or raises a
`StripeError`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from coalition.settlement.simulator.forms import Params, StripeError, parameter_error
from coalition.settlement.simulator.store import (
    Store,
    StripeObject,
    boolean,
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

# Test payment methods: the shortcuts Stripe's test mode accepts, and test card numbers / IBANs.
TEST_PAYMENT_METHODS = {
    "pm_card_visa": ("card", "4242", "visa", "succeed"),
    "pm_card_mastercard": ("card", "4444", "mastercard", "succeed"),
    "pm_card_chargeDeclined": ("card", "0002", "visa", "generic_decline"),
    "pm_card_chargeDeclinedInsufficientFunds": ("card", "9995", "visa", "insufficient_funds"),
    "pm_card_authenticationRequired": ("card", "3155", "visa", "authentication_required"),
}
TEST_CARD_NUMBERS = {
    "4242424242424242": ("visa", "succeed"),
    "5555555555554444": ("mastercard", "succeed"),
    "4000000000000002": ("visa", "generic_decline"),
    "4000000000009995": ("visa", "insufficient_funds"),
    "4000002500003155": ("visa", "authentication_required"),
}
TEST_IBANS = {
    "DE89370400440532013000": "debit_succeed",
    "DE62370400440532013001": "debit_fail",
    "AT611904300234573201": "debit_succeed",
    "AT861904300235473202": "debit_fail",
}
DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "authentication_required": (
        "Your card was declined. This transaction requires authentication."
    ),
}


@dataclass
class Call:
    """One API request as a handler sees it."""

    store: Store
    account: str  # the acting account: the platform, or the Stripe-Account header
    params: Params
    request_id: str
    idempotency_key: str | None
    base_url: str
    fee_bp: int = 0
    fee_fixed: int = 0

    @property
    def on_platform(self) -> bool:
        return self.account == self.store.platform_id

    def emit(
        self, event_type: str, obj: StripeObject, account: str | None = None, **kwargs: Any
    ) -> None:
        self.store.emit(
            event_type,
            obj,
            account or self.account,
            request=(self.request_id, self.idempotency_key),
            **kwargs,
        )


Handler = Callable[..., StripeObject]


def _platform_only(call: Call, what: str) -> None:
    if not call.on_platform:
        raise StripeError(
            400, f"{what} can only be made by the platform, not on behalf of a connected account."
        )


# ---------------------------------------------------------------------- balance transactions


def add_balance_transaction(
    call: Call,
    account: str,
    *,
    amount: int,
    currency_code: str,
    kind: str,
    source: str,
    category: str,
    description: str | None = None,
    fee: int = 0,
) -> StripeObject:
    store = call.store
    now = store.now()
    transaction: StripeObject = {
        "id": store.new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": now,
        "balance_type": "payments",
        "created": now,
        "currency": currency_code,
        "description": description,
        "exchange_rate": None,
        "fee": fee,
        "fee_details": (
            [
                {
                    "amount": fee,
                    "application": None,
                    "currency": currency_code,
                    "description": "Stripe processing fees",
                    "type": "stripe_fee",
                }
            ]
            if fee
            else []
        ),
        "net": amount - fee,
        "reporting_category": category,
        "source": source,
        "status": "available",
        "type": kind,
    }
    return store.add(transaction, account)


def available(store: Store, account: str, currency_code: str) -> int:
    return sum(
        txn["net"]
        for txn in store.of_kind("balance_transaction", account)
        if txn["currency"] == currency_code and txn["status"] == "available"
    )


def _insufficient_funds(message: str) -> StripeError:
    return StripeError(400, message, code="balance_insufficient")


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
    _platform_only(call, "Connected accounts")
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
    _platform_only(call, "Retrieving other accounts")
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
    _platform_only(call, "Account updates")
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
    _platform_only(call, "Listing accounts")
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
    _platform_only(call, "Account links")
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
    _platform_only(call, "Transfers")
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
        raise _insufficient_funds(
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
        raise _insufficient_funds(
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
        raise _insufficient_funds(
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


# ---------------------------------------------------------------------- customers


def create_customer(call: Call) -> StripeObject:
    params = call.params
    only(
        params,
        ("email", "name", "description", "metadata", "payment_method", "invoice_settings", "phone"),
    )
    store = call.store
    customer: StripeObject = {
        "id": store.new_id("cus")[:18],
        "object": "customer",
        "created": store.now(),
        "description": params.get("description"),
        "email": params.get("email"),
        "invoice_settings": {"default_payment_method": None},
        "livemode": False,
        "metadata": metadata(params),
        "name": params.get("name"),
        "phone": params.get("phone"),
    }
    store.add(customer, call.account)
    if params.get("payment_method"):
        _attach(call, str(params["payment_method"]), customer["id"])
    _set_invoice_settings(call, customer)
    call.emit("customer.created", customer)
    return customer


def _set_invoice_settings(call: Call, customer: StripeObject) -> None:
    settings = call.params.get("invoice_settings")
    if not isinstance(settings, dict) or "default_payment_method" not in settings:
        return
    method_id = str(settings["default_payment_method"])
    method = call.store.get(method_id, call.account, "payment_method", "PaymentMethod")
    if method["customer"] != customer["id"]:
        raise StripeError(
            400,
            f"The customer does not have a payment method with the ID {method_id}. The payment "
            "method must be attached to the customer.",
            code="resource_missing",
            param="invoice_settings[default_payment_method]",
        )
    customer["invoice_settings"]["default_payment_method"] = method_id


def retrieve_customer(call: Call, customer_id: str) -> StripeObject:
    only(call.params, ())
    return call.store.get(customer_id, call.account, "customer")


def update_customer(call: Call, customer_id: str) -> StripeObject:
    only(call.params, ("email", "name", "description", "metadata", "invoice_settings", "phone"))
    customer = call.store.get(customer_id, call.account, "customer")
    previous = copy.deepcopy(customer)
    customer["metadata"] = metadata(call.params, customer["metadata"])
    for name in ("email", "name", "description", "phone"):
        if name in call.params:
            customer[name] = call.params[name] or None
    _set_invoice_settings(call, customer)
    changed = {key: previous[key] for key in customer if previous.get(key) != customer[key]}
    if changed:
        call.emit("customer.updated", customer, previous=changed)
    return customer


def list_customer_payment_methods(call: Call, customer_id: str) -> StripeObject:
    only(call.params, ("type", "limit", "starting_after", "ending_before"))
    call.store.get(customer_id, call.account, "customer")
    items = [
        method
        for method in call.store.of_kind("payment_method", call.account)
        if method["customer"] == customer_id
        and (not call.params.get("type") or method["type"] == call.params["type"])
    ]
    return paginate(call.store, items, call.params, f"/v1/customers/{customer_id}/payment_methods")


# ---------------------------------------------------------------------- payment methods


def _new_payment_method(
    call: Call, method_type: str, details: dict[str, Any], behaviour: str, billing: Any
) -> StripeObject:
    store = call.store
    method: StripeObject = {
        "id": store.new_id("pm"),
        "object": "payment_method",
        "billing_details": {
            "address": None,
            "email": billing.get("email") if isinstance(billing, dict) else None,
            "name": billing.get("name") if isinstance(billing, dict) else None,
            "phone": None,
        },
        "created": store.now(),
        "customer": None,
        "livemode": False,
        "metadata": metadata(call.params),
        "type": method_type,
        method_type: details,
    }
    return store.add(method, call.account, behaviour=behaviour)


def create_payment_method(call: Call) -> StripeObject:
    params = call.params
    only(params, ("type", "card", "sepa_debit", "billing_details", "metadata"))
    method_type = str(require(params, "type"))
    billing = params.get("billing_details") or {}
    if method_type == "card":
        card = params.get("card") or {}
        if not isinstance(card, dict):
            raise parameter_error("Invalid object", "card")
        token = card.get("token")
        if token:
            shortcut = TEST_PAYMENT_METHODS.get("pm_card_" + str(token).removeprefix("tok_"))
            if shortcut is None:
                raise StripeError(
                    400, f"No such token: '{token}'", code="resource_missing", param="card[token]"
                )
            _, last4, brand, behaviour = shortcut
        else:
            number = str(card.get("number") or "").replace(" ", "")
            if number not in TEST_CARD_NUMBERS:
                raise StripeError(
                    402,
                    "Your card number is incorrect.",
                    type="card_error",
                    code="incorrect_number",
                    param="card[number]",
                    stored=False,
                )
            brand, behaviour = TEST_CARD_NUMBERS[number]
            last4 = number[-4:]
        details = {
            "brand": brand,
            "country": "US",
            "exp_month": int(card.get("exp_month") or 12),
            "exp_year": int(card.get("exp_year") or 2034),
            "funding": "credit",
            "last4": last4,
        }
        return _new_payment_method(call, "card", details, behaviour, billing)
    if method_type == "sepa_debit":
        debit = params.get("sepa_debit") or {}
        iban = str(debit.get("iban") if isinstance(debit, dict) else "").replace(" ", "").upper()
        if iban not in TEST_IBANS:
            raise parameter_error(
                "The IBAN you entered is invalid.", "sepa_debit[iban]", "invalid_bank_account_iban"
            )
        details = {"bank_code": iban[4:12], "country": iban[:2], "last4": iban[-4:]}
        return _new_payment_method(call, "sepa_debit", details, TEST_IBANS[iban], billing)
    raise parameter_error(f"Invalid type: {method_type}", "type")


def _resolve_payment_method(call: Call, method_id: str, param: str) -> StripeObject:
    shortcut = TEST_PAYMENT_METHODS.get(method_id)
    if shortcut is not None:
        method_type, last4, brand, behaviour = shortcut
        details = {
            "brand": brand,
            "country": "US",
            "exp_month": 12,
            "exp_year": 2034,
            "funding": "credit",
            "last4": last4,
        }
        return _new_payment_method(call, method_type, details, behaviour, {})
    method = call.store.find(method_id, call.account)
    if method is None or method.get("object") != "payment_method":
        raise StripeError(
            404, f"No such PaymentMethod: '{method_id}'", code="resource_missing", param=param
        )
    return method


def _attach(call: Call, method_id: str, customer_id: str) -> StripeObject:
    method = _resolve_payment_method(call, method_id, "payment_method")
    if method["customer"] not in (None, customer_id):
        raise StripeError(
            400,
            "The payment method you provided has already been attached to a customer.",
            code="payment_method_unexpected_state",
        )
    method["customer"] = customer_id
    call.emit("payment_method.attached", method)
    return method


def attach_payment_method(call: Call, method_id: str) -> StripeObject:
    only(call.params, ("customer",))
    customer_id = str(require(call.params, "customer"))
    call.store.get(customer_id, call.account, "customer")
    return _attach(call, method_id, customer_id)


def detach_payment_method(call: Call, method_id: str) -> StripeObject:
    only(call.params, ())
    method = call.store.get(method_id, call.account, "payment_method", "PaymentMethod")
    if method["customer"] is None:
        raise StripeError(
            400,
            "The payment method you provided is not attached to a customer so detachment is "
            "impossible.",
            code="payment_method_unexpected_state",
        )
    method["customer"] = None
    call.emit("payment_method.detached", method)
    return method


def retrieve_payment_method(call: Call, method_id: str) -> StripeObject:
    only(call.params, ())
    return call.store.get(method_id, call.account, "payment_method", "PaymentMethod")


def list_payment_methods(call: Call) -> StripeObject:
    only(call.params, ("customer", "type", "limit", "starting_after", "ending_before"))
    items = [
        method
        for method in call.store.of_kind("payment_method", call.account)
        if (not call.params.get("customer") or method["customer"] == call.params["customer"])
        and (not call.params.get("type") or method["type"] == call.params["type"])
    ]
    return paginate(call.store, items, call.params, "/v1/payment_methods")


# ---------------------------------------------------------------------- payment intents


PAYMENT_INTENT_PARAMS = (
    "amount",
    "currency",
    "customer",
    "payment_method",
    "payment_method_types",
    "confirm",
    "off_session",
    "metadata",
    "description",
    "transfer_group",
    "statement_descriptor",
    "receipt_email",
    "setup_future_usage",
    "error_on_requires_action",
    "mandate_data",
    "capture_method",
)


def create_payment_intent(call: Call) -> StripeObject:
    params = call.params
    only(params, PAYMENT_INTENT_PARAMS)
    amount = integer(params, "amount", minimum=1)
    if amount is None:
        require(params, "amount")
    assert amount is not None
    currency_code = currency(params)
    store = call.store
    customer_id = params.get("customer")
    if customer_id:
        store.get(str(customer_id), call.account, "customer")
    method_id: str | None = None
    if params.get("payment_method"):
        method = _resolve_payment_method(call, str(params["payment_method"]), "payment_method")
        if method["customer"] not in (None, customer_id):
            raise StripeError(
                400,
                "The provided PaymentMethod belongs to another customer.",
                param="payment_method",
            )
        method_id = method["id"]
    intent_id = store.new_id("pi")
    intent: StripeObject = {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": 0,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic",
        "client_secret": f"{intent_id}_secret_{store.ids.new('s', 24)[2:]}",
        "confirmation_method": "automatic",
        "created": store.now(),
        "currency": currency_code,
        "customer": customer_id,
        "description": params.get("description"),
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": metadata(params),
        "payment_method": method_id,
        "payment_method_types": params.get("payment_method_types") or ["card"],
        "setup_future_usage": params.get("setup_future_usage"),
        "status": "requires_confirmation" if method_id else "requires_payment_method",
        "transfer_group": params.get("transfer_group"),
    }
    store.add(intent, call.account)
    call.emit("payment_intent.created", intent)
    if boolean(params, "confirm"):
        return _confirm(call, intent, off_session=boolean(params, "off_session"))
    return intent


def confirm_payment_intent(call: Call, intent_id: str) -> StripeObject:
    only(call.params, ("payment_method", "off_session", "mandate_data", "error_on_requires_action"))
    intent = call.store.get(intent_id, call.account, "payment_intent", "payment_intent")
    if call.params.get("payment_method"):
        method = _resolve_payment_method(call, str(call.params["payment_method"]), "payment_method")
        intent["payment_method"] = method["id"]
    return _confirm(call, intent, off_session=boolean(call.params, "off_session"))


def _confirm(call: Call, intent: StripeObject, *, off_session: bool) -> StripeObject:
    if intent["status"] not in ("requires_confirmation", "requires_payment_method"):
        raise StripeError(
            400,
            f"This PaymentIntent's status is {intent['status']}, and cannot be confirmed.",
            code="payment_intent_unexpected_state",
            extra={"payment_intent": copy.deepcopy(intent)},
        )
    if intent["payment_method"] is None:
        raise StripeError(
            400,
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            code="payment_intent_unexpected_state",
            param="payment_method",
            extra={"payment_intent": copy.deepcopy(intent)},
        )
    store = call.store
    method = store.get(intent["payment_method"], call.account, "payment_method", "PaymentMethod")
    behaviour = store.hidden.get(method["id"], {}).get("behaviour", "succeed")
    if method["type"] != "card":
        intent["payment_method_types"] = [method["type"]]
    charge = _new_charge(call, intent, method)
    if behaviour in ("succeed", "debit_succeed", "debit_fail"):
        if method["type"] == "sepa_debit":
            # Bank debits settle later: `processing` now, the outcome when the debit clears.
            intent["status"] = "processing"
            charge["status"] = "pending"
            store.hidden.setdefault(intent["id"], {})["debit_outcome"] = behaviour
            call.emit("charge.pending", charge)
            call.emit("payment_intent.processing", intent)
            return intent
        _succeed(call, intent, charge)
        return intent
    if behaviour == "authentication_required" and not off_session:
        intent["status"] = "requires_action"
        intent["next_action"] = {"type": "use_stripe_sdk"}
        store.remove(charge["id"])
        intent["latest_charge"] = None
        call.emit("payment_intent.requires_action", intent)
        return intent
    error = _fail(call, intent, charge, behaviour)
    raise error


def _new_charge(call: Call, intent: StripeObject, method: StripeObject) -> StripeObject:
    store = call.store
    charge: StripeObject = {
        "id": store.new_id("ch" if method["type"] == "card" else "py"),
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": 0,
        "amount_refunded": 0,
        "balance_transaction": None,
        "captured": False,
        "created": store.now(),
        "currency": intent["currency"],
        "customer": intent["customer"],
        "description": intent["description"],
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": dict(intent["metadata"]),
        "outcome": None,
        "paid": False,
        "payment_intent": intent["id"],
        "payment_method": method["id"],
        "payment_method_details": {"type": method["type"], method["type"]: method[method["type"]]},
        "refunded": False,
        "status": "pending",
        "transfer_group": intent["transfer_group"],
    }
    store.add(charge, call.account)
    intent["latest_charge"] = charge["id"]
    return charge


def _succeed(call: Call, intent: StripeObject, charge: StripeObject) -> None:
    fee = (
        (intent["amount"] * call.fee_bp + 5000) // 10000 + call.fee_fixed
        if call.fee_bp or call.fee_fixed
        else 0
    )
    txn = add_balance_transaction(
        call,
        call.account,
        amount=intent["amount"],
        currency_code=intent["currency"],
        kind="charge" if charge["id"].startswith("ch_") else "payment",
        source=charge["id"],
        category="charge",
        description=intent["description"],
        fee=min(fee, intent["amount"]),
    )
    charge.update(
        amount_captured=intent["amount"],
        balance_transaction=txn["id"],
        captured=True,
        paid=True,
        status="succeeded",
        outcome={
            "network_status": "approved_by_network",
            "type": "authorized",
            "seller_message": "Payment complete.",
        },
    )
    intent.update(status="succeeded", amount_received=intent["amount"], last_payment_error=None)
    call.emit("charge.succeeded", charge)
    call.emit("payment_intent.succeeded", intent)


def _fail(call: Call, intent: StripeObject, charge: StripeObject, behaviour: str) -> StripeError:
    method = call.store.objects[intent["payment_method"]]
    if behaviour == "debit_fail":
        code, decline_code, message = (
            "insufficient_funds",
            None,
            "The account has insufficient funds.",
        )
        error_type = "invalid_request_error"
    else:
        code = (
            "authentication_required" if behaviour == "authentication_required" else "card_declined"
        )
        decline_code = behaviour
        message = DECLINE_MESSAGES.get(behaviour, "Your card was declined.")
        error_type = "card_error"
    charge.update(
        status="failed",
        failure_code=code,
        failure_message=message,
        outcome={
            "network_status": "declined_by_network",
            "type": "issuer_declined",
            "reason": decline_code,
        },
    )
    last_error: dict[str, Any] = {
        "type": error_type,
        "code": code,
        "decline_code": decline_code,
        "message": message,
        "charge": charge["id"],
        "payment_method": copy.deepcopy(method),
    }
    intent.update(status="requires_payment_method", last_payment_error=last_error)
    call.emit("charge.failed", charge)
    call.emit("payment_intent.payment_failed", intent)
    return StripeError(
        402,
        message,
        type=error_type,
        code=code,
        extra={
            "decline_code": decline_code,
            "charge": charge["id"],
            "payment_intent": copy.deepcopy(intent),
            "payment_method": copy.deepcopy(method),
        },
    )


def settle_debit(call: Call, intent_id: str, outcome: str | None = None) -> StripeObject:
    """Clear a `processing` bank debit: `succeeded` or `failed` (by default the IBAN's outcome)."""
    store = call.store
    intent = store.get(intent_id, call.account, "payment_intent", "payment_intent")
    if intent["status"] != "processing":
        raise StripeError(400, f"PaymentIntent {intent_id} is {intent['status']}, not processing.")
    planned = store.hidden.get(intent_id, {}).get("debit_outcome", "debit_succeed")
    chosen = outcome or ("succeeded" if planned == "debit_succeed" else "failed")
    charge = store.objects[intent["latest_charge"]]
    if chosen == "succeeded":
        _succeed(call, intent, charge)
    else:
        _fail(call, intent, charge, "debit_fail")
    return intent


def retrieve_payment_intent(call: Call, intent_id: str) -> StripeObject:
    only(call.params, ("client_secret",))
    return call.store.get(intent_id, call.account, "payment_intent", "payment_intent")


def update_payment_intent(call: Call, intent_id: str) -> StripeObject:
    only(call.params, ("metadata", "description", "payment_method"))
    intent = call.store.get(intent_id, call.account, "payment_intent", "payment_intent")
    intent["metadata"] = metadata(call.params, intent["metadata"])
    if "description" in call.params:
        intent["description"] = call.params["description"] or None
    if call.params.get("payment_method"):
        method = _resolve_payment_method(call, str(call.params["payment_method"]), "payment_method")
        intent["payment_method"] = method["id"]
        if intent["status"] == "requires_payment_method":
            intent["status"] = "requires_confirmation"
    return intent


def cancel_payment_intent(call: Call, intent_id: str) -> StripeObject:
    only(call.params, ("cancellation_reason",))
    intent = call.store.get(intent_id, call.account, "payment_intent", "payment_intent")
    if intent["status"] in ("succeeded", "canceled", "processing"):
        raise StripeError(
            400,
            f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}.",
            code="payment_intent_unexpected_state",
        )
    intent.update(
        status="canceled",
        canceled_at=call.store.now(),
        cancellation_reason=call.params.get("cancellation_reason") or "requested_by_customer",
    )
    call.emit("payment_intent.canceled", intent)
    return intent


def list_payment_intents(call: Call) -> StripeObject:
    only(call.params, ("customer", "created", "limit", "starting_after", "ending_before"))
    within = created_filter(call.params)
    items = [
        intent
        for intent in call.store.of_kind("payment_intent", call.account)
        if within(intent["created"])
        and (not call.params.get("customer") or intent["customer"] == call.params["customer"])
    ]
    return paginate(call.store, items, call.params, "/v1/payment_intents")


def retrieve_charge(call: Call, charge_id: str) -> StripeObject:
    only(call.params, ())
    return call.store.get(charge_id, call.account, "charge")


def list_charges(call: Call) -> StripeObject:
    only(
        call.params,
        (
            "customer",
            "payment_intent",
            "transfer_group",
            "created",
            "limit",
            "starting_after",
            "ending_before",
        ),
    )
    within = created_filter(call.params)
    items = [
        charge
        for charge in call.store.of_kind("charge", call.account)
        if within(charge["created"])
        and all(
            not call.params.get(name) or charge.get(name) == call.params[name]
            for name in ("customer", "payment_intent", "transfer_group")
        )
    ]
    return paginate(call.store, items, call.params, "/v1/charges")


# ---------------------------------------------------------------------- events


def list_events(call: Call) -> StripeObject:
    params = call.params
    only(
        params,
        (
            "type",
            "types",
            "created",
            "delivery_success",
            "limit",
            "starting_after",
            "ending_before",
        ),
    )
    within = created_filter(params)
    patterns: list[str] = []
    if params.get("type"):
        patterns.append(str(params["type"]))
    if params.get("types"):
        if not isinstance(params["types"], list):
            raise parameter_error("Invalid array", "types")
        if params.get("type"):
            raise parameter_error(
                "You may only specify one of these parameters: type, types.", "types"
            )
        patterns.extend(str(item) for item in params["types"])
    items = [
        event
        for event in call.store.of_kind("event", call.account)
        if within(event["created"])
        and (not patterns or any(event_matches(p, event["type"]) for p in patterns))
    ]
    return paginate(call.store, items, params, "/v1/events")


def event_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def retrieve_event(call: Call, event_id: str) -> StripeObject:
    only(call.params, ())
    return call.store.get(event_id, call.account, "event")


# ---------------------------------------------------------------------- webhook endpoints


def create_webhook_endpoint(call: Call) -> StripeObject:
    params = call.params
    only(params, ("url", "enabled_events", "connect", "description", "metadata", "api_version"))
    _platform_only(call, "Webhook endpoints")
    url = str(require(params, "url"))
    if not re.match(r"^https?://", url):
        raise parameter_error("Invalid URL: must be an http or https URL.", "url", "url_invalid")
    events = require(params, "enabled_events")
    if not isinstance(events, list) or not events:
        raise parameter_error("Invalid array", "enabled_events")
    store = call.store
    endpoint: StripeObject = {
        "id": store.new_id("we"),
        "object": "webhook_endpoint",
        "api_version": params.get("api_version"),
        "application": None,
        "created": store.now(),
        "description": params.get("description"),
        "enabled_events": [str(item) for item in events],
        "livemode": False,
        "metadata": metadata(params),
        "secret": store.ids.new("whsec", 32),
        "status": "enabled",
        "url": url,
    }
    store.add(endpoint, store.platform_id, connect=boolean(params, "connect"))
    return endpoint


def _public_endpoint(endpoint: StripeObject) -> StripeObject:
    # The secret is shown only when the endpoint is created.
    return {key: value for key, value in endpoint.items() if key != "secret"}


def retrieve_webhook_endpoint(call: Call, endpoint_id: str) -> StripeObject:
    only(call.params, ())
    _platform_only(call, "Webhook endpoints")
    return _public_endpoint(call.store.get(endpoint_id, call.account, "webhook_endpoint"))


def update_webhook_endpoint(call: Call, endpoint_id: str) -> StripeObject:
    only(call.params, ("url", "enabled_events", "disabled", "description", "metadata"))
    _platform_only(call, "Webhook endpoints")
    endpoint = call.store.get(endpoint_id, call.account, "webhook_endpoint")
    if call.params.get("url"):
        endpoint["url"] = str(call.params["url"])
    if isinstance(call.params.get("enabled_events"), list):
        endpoint["enabled_events"] = [str(item) for item in call.params["enabled_events"]]
    if "disabled" in call.params:
        endpoint["status"] = "disabled" if boolean(call.params, "disabled") else "enabled"
    endpoint["metadata"] = metadata(call.params, endpoint["metadata"])
    return _public_endpoint(endpoint)


def delete_webhook_endpoint(call: Call, endpoint_id: str) -> StripeObject:
    only(call.params, ())
    _platform_only(call, "Webhook endpoints")
    call.store.get(endpoint_id, call.account, "webhook_endpoint")
    call.store.remove(endpoint_id)
    return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}


def list_webhook_endpoints(call: Call) -> StripeObject:
    only(call.params, ("limit", "starting_after", "ending_before"))
    _platform_only(call, "Webhook endpoints")
    items = [_public_endpoint(e) for e in call.store.of_kind("webhook_endpoint", call.account)]
    return paginate(call.store, items, call.params, "/v1/webhook_endpoints")


# ---------------------------------------------------------------------- routing

_ID = r"([A-Za-z0-9_]+)"

ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    (method, re.compile(f"^{pattern}$"), cast(Handler, handler))
    for method, pattern, handler in [
        ("GET", "/v1/account", retrieve_account),
        ("POST", "/v1/accounts", create_account),
        ("GET", "/v1/accounts", list_accounts),
        ("GET", f"/v1/accounts/{_ID}", retrieve_account),
        ("POST", f"/v1/accounts/{_ID}", update_account),
        ("POST", "/v1/account_links", create_account_link),
        ("POST", "/v1/transfers", create_transfer),
        ("GET", "/v1/transfers", list_transfers),
        ("GET", f"/v1/transfers/{_ID}", retrieve_transfer),
        ("POST", f"/v1/transfers/{_ID}", update_transfer),
        ("POST", f"/v1/transfers/{_ID}/reversals", create_reversal),
        ("GET", f"/v1/transfers/{_ID}/reversals", list_reversals),
        ("GET", f"/v1/transfers/{_ID}/reversals/{_ID}", retrieve_reversal),
        ("GET", "/v1/balance", retrieve_balance),
        ("GET", "/v1/balance_transactions", list_balance_transactions),
        ("GET", f"/v1/balance_transactions/{_ID}", retrieve_balance_transaction),
        ("POST", "/v1/payouts", create_payout),
        ("GET", "/v1/payouts", list_payouts),
        ("GET", f"/v1/payouts/{_ID}", retrieve_payout),
        ("POST", "/v1/customers", create_customer),
        ("GET", f"/v1/customers/{_ID}", retrieve_customer),
        ("POST", f"/v1/customers/{_ID}", update_customer),
        ("GET", f"/v1/customers/{_ID}/payment_methods", list_customer_payment_methods),
        ("POST", "/v1/payment_methods", create_payment_method),
        ("GET", "/v1/payment_methods", list_payment_methods),
        ("GET", f"/v1/payment_methods/{_ID}", retrieve_payment_method),
        ("POST", f"/v1/payment_methods/{_ID}/attach", attach_payment_method),
        ("POST", f"/v1/payment_methods/{_ID}/detach", detach_payment_method),
        ("POST", "/v1/payment_intents", create_payment_intent),
        ("GET", "/v1/payment_intents", list_payment_intents),
        ("GET", f"/v1/payment_intents/{_ID}", retrieve_payment_intent),
        ("POST", f"/v1/payment_intents/{_ID}", update_payment_intent),
        ("POST", f"/v1/payment_intents/{_ID}/confirm", confirm_payment_intent),
        ("POST", f"/v1/payment_intents/{_ID}/cancel", cancel_payment_intent),
        ("GET", "/v1/charges", list_charges),
        ("GET", f"/v1/charges/{_ID}", retrieve_charge),
        ("GET", "/v1/events", list_events),
        ("GET", f"/v1/events/{_ID}", retrieve_event),
        ("POST", "/v1/webhook_endpoints", create_webhook_endpoint),
        ("GET", "/v1/webhook_endpoints", list_webhook_endpoints),
        ("GET", f"/v1/webhook_endpoints/{_ID}", retrieve_webhook_endpoint),
        ("POST", f"/v1/webhook_endpoints/{_ID}", update_webhook_endpoint),
        ("DELETE", f"/v1/webhook_endpoints/{_ID}", delete_webhook_endpoint),
    ]
]


def route(method: str, path: str) -> tuple[Handler, tuple[str, ...]]:
    allowed = False
    for route_method, pattern, handler in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        if route_method == method:
            return handler, match.groups()
        allowed = True
    if allowed:
        raise StripeError(405, f"Unrecognized request URL ({method}: {path}).", stored=False)
    raise StripeError(
        404,
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we "
        "can help at https://support.stripe.com/.",
        stored=False,
    )
